"""Every YAML of every config group composes, resolves and instantiates (construction only, on CPU)."""

import functools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
OPTIONS = sorted((d.name, f.stem) for d in CONF.iterdir() if d.is_dir() for f in d.glob("*.yaml"))
PRIMARIES = sorted(f.stem for f in CONF.glob("*.yaml"))  # train.yaml, decode.yaml, ...
CPU = {"accelerator": "cpu", "devices": 1, "logger": False, "callbacks": []}  # GPU trainers: construct on CPU
REQUIRED = {("data", "jsonl"): ["data.prompts.path=prompts.jsonl"]}  # mandatory values (???) of an option
# Groups whose options write at the top level (# @package _global_): experiment, debug.
GLOBAL = {d.name for d in CONF.iterdir() if d.is_dir()
          and any("@package _global_" in f.read_text() for f in d.glob("*.yaml"))}


def compose_with(primary: str, overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(primary, overrides=overrides)


@functools.cache
def primaries_using(group: str) -> list[str]:
    """Primary configs whose defaults select an option of `group` (global groups: all of them)."""
    if group in GLOBAL:
        return PRIMARIES
    return [p for p in PRIMARIES if group in compose_with(p, [])]


def build(node, path: str, built: dict) -> None:
    """Instantiate every node with a _target_ (outermost first; children are built by their parent)."""
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        obj = instantiate(node, **(CPU if path.endswith("trainer") else {}))
        if path.endswith("trainer"):
            obj = obj()  # conf/trainer is a factory (_partial_): the pipeline adds loggers and callbacks
        if path.endswith("optimizer"):
            obj = obj([torch.nn.Parameter(torch.zeros(2))])
            built["optimizer"] = obj
        built[path] = obj
        return
    for key in node:
        build(node[key], f"{path}.{key}" if path else str(key), built)


def test_every_group_has_a_tiny_cpu_option():
    groups = {g for g, _ in OPTIONS} - {"experiment"}
    missing = sorted(g for g in groups if not (CONF / g / "tiny.yaml").is_file())
    assert not missing, missing


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_config_composes_and_instantiates(group, option, tmp_path):
    primaries = primaries_using(group)
    if group in GLOBAL:  # an experiment overrides groups of one entry point; it must compose there
        primaries = [p for p in primaries if _composes(p, [f"{group}={option}", f"paths.output_dir={tmp_path}"])]
    assert primaries, f"no primary config (conf/*.yaml) uses {group}={option}"
    for primary in primaries:
        overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}", *REQUIRED.get((group, option), [])]
        cfg = compose_with(primary, overrides)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        built: dict = {}
        node = cfg if group in GLOBAL else cfg[group]
        build(node, "" if group in GLOBAL else group, built)
        if "optimizer" in built and "optim.scheduler" in built:
            scheduler = built["optim.scheduler"](built["optimizer"], num_training_steps=10)
            built["optimizer"].step()
            scheduler.step()
        assert bool(built) == ("_target_" in OmegaConf.to_yaml(node)), primary


def _composes(primary: str, overrides: list[str]) -> bool:
    from hydra.errors import ConfigCompositionException

    try:
        compose_with(primary, overrides)
    except ConfigCompositionException:
        return False
    return True


@pytest.mark.parametrize("overrides,bar,loggers,max_steps", [
    ([], "StepBoundedBar", 2, 300),  # a RichProgressBar that reads "Epoch 0 (of N steps)"
    (["progress_bar=false"], None, 2, 300),  # no bar at all, not Lightning's default one
    (["trainer=tiny"], None, 2, 8),
    (["debug=fast"], None, 0, 3),
    (["debug=tiny"], None, 0, 3),
    (["callbacks=none"], "default", 2, 300),  # Lightning's defaults only (its own bar)
])
def test_train_job_builds_its_trainer(overrides, bar, loggers, max_steps, tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from specdiff2.training.pipeline import DistillJob, build_trainer

    cfg = compose_with("train", [f"paths.output_dir={tmp_path}", *overrides])
    job = instantiate(cfg.job)
    assert isinstance(job, DistillJob)
    trainer = build_trainer(job)
    found = trainer.progress_bar_callback
    assert found is not None if bar == "default" else (type(found).__name__ if found is not None else None) == bar
    assert len(trainer.loggers) == loggers and trainer.max_steps == max_steps
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks) == (loggers > 0 and
                                                                                 "callbacks=none" not in overrides)
    checkpoint = trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint)
    if "callbacks=none" not in overrides:
        assert checkpoint.monitor == "val/expected_streak" and checkpoint.dirpath == str(tmp_path / "checkpoints")
    if overrides[:1] in (["debug=fast"], ["debug=tiny"]):
        assert trainer.val_check_interval == 1
