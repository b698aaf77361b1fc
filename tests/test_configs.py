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


def compose_with(primary: str, overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(primary, overrides=overrides)


@functools.cache
def primaries_using(group: str) -> list[str]:
    """Primary configs whose defaults select an option of `group` (experiment: all of them)."""
    if group == "experiment":
        return PRIMARIES
    return [p for p in PRIMARIES if group in compose_with(p, [])]


def build(node, path: str, built: dict) -> None:
    """Instantiate every node with a _target_ (outermost first; children are built by their parent)."""
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        obj = instantiate(node, **(CPU if path.endswith("trainer") else {}))
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
    if group == "experiment":  # an experiment overrides groups of one entry point; it must compose there
        primaries = [p for p in primaries if _composes(p, [f"{group}={option}", f"paths.output_dir={tmp_path}"])]
    assert primaries, f"no primary config (conf/*.yaml) uses {group}={option}"
    for primary in primaries:
        overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}", *REQUIRED.get((group, option), [])]
        cfg = compose_with(primary, overrides)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        built: dict = {}
        node = cfg if group == "experiment" else cfg[group]
        build(node, "" if group == "experiment" else group, built)
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
