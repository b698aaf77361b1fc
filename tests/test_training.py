"""Distillation pipeline on the micro pocket world: main path, LoRA, exact resume, trainer configs, one-line errors.

Jobs are built as train.py builds them (one instantiate of conf/train.yaml `job`) and run in-process.
"""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specdiff2.models.checkpoint import load_transformer, read_config
from specdiff2.training.pipeline import run_distillation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # trajectories generated once, reused (keyed) by every run


def micro_cfg(world, cache, out, *extra):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=micro_overrides(world, cache, out, *extra))


def micro_overrides(world, cache, out, *extra) -> list[str]:
    """train.py overrides of a short run on the micro pocket world (checkpoints given as plain paths)."""
    return [
        f"paths.output_dir={out}", f"paths.cache_dir={cache}", "verifier.pocket=false", "drafter.pocket=false",
        f"verifier.path={world.verifier}", f"drafter.path={world.drafter}", f"data.tokens_dir={world.tokens}",
        "trainer=tiny", "logger=tiny", "optim=tiny", "loss=tiny", "progress_bar=false",
        "data.generation.num_prompts=8", "data.generation.prompt_tokens=16", "data.generation.max_new_tokens=16",
        "data.generation.prompts_per_shard=4", "data.generation.samples_per_prompt=2", "data.generation.device=cpu",
        "data.generation.topk_logprobs=4", "data.windows.max_len=64", "data.windows.windows_per_batch=8",
        "data.windows.gamma=4", "data.windows.val_fraction=0.25", "data.windows.row_tokens=128", *extra]


def train(cfg, **callbacks) -> dict:
    """train.py's pipeline on a composed config, with extra callbacks (name=callback)."""
    job = instantiate(cfg.job)
    job.callbacks.update(callbacks)
    return run_distillation(job)


class Recorder(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


class Crash(L.Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def test_train_main_path_full_finetune(micro_world, cache_dir, tmp_path):
    summary = train(micro_cfg(micro_world, cache_dir, tmp_path, "loss=mix"))
    assert summary["sections"]["training"]["steps"] == 8
    before, after = summary["val_before"], summary["val_after"]
    assert before["step"] == 0 and after["step"] == 8
    assert {f"alpha_{j}" for j in range(1, 5)} <= set(after) and after["alpha_1"] >= after["alpha_4"]
    # Issue 25: the joint prefix match next to the product of marginals (equal at position 1), and the same
    # metrics on a slice of training windows (val_train/...), which never comes from a held-out prompt.
    assert after["marginal_prod_at_pos_1"] == pytest.approx(after["alpha_1"])
    assert {f"marginal_prod_at_pos_{j}" for j in range(1, 5)} <= set(after)
    assert {"val_train/expected_streak", "val_train/alpha_4", "val_train/marginal_prod_at_pos_4"} <= set(after)
    assert summary["sections"]["windows"]["val_train_windows"] > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    exported = tmp_path / "export" / "drafter"
    config = read_config(exported)
    assert config["model_type"] == "Dream" and config["mask_token_id"] == read_config(micro_world.drafter)[
        "mask_token_id"]
    new, _ = load_transformer(exported)
    old, _ = load_transformer(micro_world.drafter)
    assert not torch.equal(new.lm_head.weight, old.lm_head.weight)
    metrics = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "train/streak_loss" in metrics and "train/mdlm_loss" in metrics and "val/expected_streak" in metrics
    assert "val_train/expected_streak" in metrics and "val/marginal_prod_at_pos_4" in metrics
    from specdiff2.training.datamodule import TrajectoryDataModule

    dm = TrajectoryDataModule(summary["sections"]["trajectories"]["store"], gamma=4, mask_token_id=1, max_len=64,
                              windows_per_batch=8, val_fraction=0.25, val_train_windows=5)
    dm.setup()
    held_out = {t for t, _ in dm.val_windows}
    assert len(dm.val_train) == 5 and not held_out & {t for t, _ in dm.val_train}
    assert set(dm.val_train) <= {w for group in dm.train_groups for w in group}


def test_lora_trains_only_adapter_params(micro_world, cache_dir, tmp_path):
    recorder = Recorder()
    summary = train(micro_cfg(micro_world, cache_dir, tmp_path, "peft=tiny"), recorder=recorder)
    training = summary["sections"]["training"]
    assert training["peft"] == "lora" and 0 < training["trained params"] < training["drafter params"] / 5
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)  # the checkpoint holds the adapter only
    assert (tmp_path / "export" / "adapter" / "adapter_config.json").is_file()
    merged, _ = load_transformer(tmp_path / "export" / "drafter")
    old, _ = load_transformer(micro_world.drafter)
    assert not torch.equal(merged.model.layers[0].mlp.down_proj.weight, old.model.layers[0].mlp.down_proj.weight)
    assert torch.equal(merged.model.norm.weight, old.model.norm.weight)  # not a LoRA target: untouched
    # the merged export and base + PEFT adapter give the same logits (the check zero_distill runs on GPUs)
    from specdiff2.bench.zero_distill import merged_vs_adapter_fp32
    assert merged_vs_adapter_fp32(tmp_path / "export", micro_world.drafter) < 1e-4


def test_resume_reproduces_the_loss_curve(micro_world, cache_dir, tmp_path):
    straight = Recorder()
    train(micro_cfg(micro_world, cache_dir, tmp_path / "a", "peft=tiny"), recorder=straight)
    with pytest.raises(RuntimeError, match="simulated crash"):  # checkpoint at step 4, killed during step 7
        train(micro_cfg(micro_world, cache_dir, tmp_path / "b", "peft=tiny"), crash=Crash(6))
    resumed = Recorder()
    train(micro_cfg(micro_world, cache_dir, tmp_path / "c", "peft=tiny", f"resume={tmp_path / 'b'}"), recorder=resumed)
    assert sorted(straight.losses) == list(range(1, 9)) and sorted(resumed.losses) == [5, 6, 7, 8]
    for step in (5, 6, 7, 8):
        assert resumed.losses[step] == pytest.approx(straight.losses[step], rel=1e-6, abs=1e-7), step


@pytest.mark.parametrize("name,stage,offload", [("deepspeed_z2", 2, False), ("deepspeed_z3", 3, False),
                                                ("deepspeed_z3_offload", 3, True), ("ddp", None, False),
                                                ("gpu", None, False), ("cpu", None, False)])
def test_trainer_configs_construct_on_cpu(name, stage, offload, tmp_path):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={name}", f"paths.output_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, accelerator="cpu", devices=1, logger=False, callbacks=[])()  # a factory
    assert trainer.max_steps > 0 and trainer.gradient_clip_val == 1.0
    if stage is not None:
        from lightning.pytorch.strategies import DeepSpeedStrategy

        zero = trainer.strategy.config["zero_optimization"]
        assert isinstance(trainer.strategy, DeepSpeedStrategy) and zero["stage"] == stage
        assert ("offload_optimizer" in zero and "offload_param" in zero) == offload
        assert str(trainer.precision) == "bf16-mixed"


@pytest.mark.slow  # a train.py subprocess (~10 s); test_cli covers the one-line missing-checkpoint path in the suite
def test_missing_72b_verifier_is_one_clear_line():
    cmd = [sys.executable, "train.py", "drafter=diffucoder", "verifier=qwen72b", "trainer=deepspeed_z3", "peft=lora"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error:") and "Qwen/Qwen2.5-72B-Instruct" in lines[0] and "verifier.path=" in lines[0]
    assert "drafter.path=" in lines[0]


def test_a_finished_run_dir_is_not_reused_without_resume(micro_world, cache_dir, tmp_path):
    """Issue 22 item 3: a second run into a finished run's directory overwrote its export (and left the stale
    last.ckpt beside a new last-v1.ckpt); it is refused in one line, before any work, unless it resumes that run."""
    from specdiff2.errors import CheckpointError

    steps = ("trainer.max_steps=2", "trainer.val_check_interval=2")
    train(micro_cfg(micro_world, cache_dir, tmp_path, *steps))
    export = tmp_path / "export" / "drafter" / "model.safetensors"
    before = export.read_bytes()
    with pytest.raises(Exception) as err:  # Hydra wraps it; train.py prints the CheckpointError alone
        instantiate(micro_cfg(micro_world, cache_dir, tmp_path, *steps).job)
    assert isinstance(err.value.__cause__, CheckpointError), err.value
    line = str(err.value.__cause__)
    assert "\n" not in line and "already holds a run (checkpoints/" in line and f"resume={tmp_path}" in line
    assert export.read_bytes() == before and not list((tmp_path / "checkpoints").glob("last-v*.ckpt"))
    instantiate(micro_cfg(micro_world, cache_dir, tmp_path, *steps, f"resume={tmp_path}").job)  # resuming it: fine


@pytest.mark.parametrize("packing", ["shared", "none"])
def test_other_packings_train(micro_world, cache_dir, tmp_path, packing):
    cfg = micro_cfg(micro_world, cache_dir, tmp_path, f"data.windows.packing={packing}",
                    "data.windows.blocks_per_row=4", "trainer.max_steps=2", "trainer.val_check_interval=2")
    summary = train(cfg)
    assert summary["sections"]["windows"]["packing"] == packing and summary["sections"]["training"]["steps"] == 2


def test_online_verifier_topk_matches_the_stored_topk(micro_world, cache_dir, tmp_path):
    from specdiff2.losses import LossMix
    from specdiff2.training.datamodule import TrajectoryDataModule
    from specdiff2.training.module import DistillModule

    cfg = micro_cfg(micro_world, cache_dir, tmp_path, "loss=kl", "module.online_topk=4", "trainer.max_steps=2",
                    "trainer.val_check_interval=2")
    summary = train(cfg)  # trains on online soft targets (loads the verifier)
    dm = TrajectoryDataModule(summary["sections"]["trajectories"]["store"], gamma=4, mask_token_id=1, max_len=64,
                              windows_per_batch=8, val_fraction=0.25, val_train_windows=0)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))  # the held-out loader alone (no training slice)
    module = DistillModule(str(micro_world.drafter), LossMix({"kl": 1.0}), torch.optim.AdamW,
                           verifier_path=str(micro_world.verifier), online_topk=4)
    ids, lps = module._online_topk(batch, drafter_vocab=10**6)
    valid = batch["mask"]
    assert torch.equal(ids[valid], batch["verifier_topk_ids"][valid])
    torch.testing.assert_close(lps[valid], batch["verifier_topk_logprobs"][valid], rtol=1e-4, atol=1e-4)


def test_the_module_asks_the_loss_whether_it_needs_verifier_distributions():
    """No list of loss names in the module: a loss that declares VERIFIER_DIST stops the fit without stored or online
    top-k, in one line naming it; one that does not, starts."""
    from types import SimpleNamespace

    from specdiff2.errors import ConfigError
    from specdiff2.losses import LossMix
    from specdiff2.training.module import DistillModule

    store = SimpleNamespace(datamodule=SimpleNamespace(trajectories=[SimpleNamespace(topk_ids=None)]))
    for weights, refused in (({"streak": 1.0, "tvd": 0.5}, True), ({"streak": 1.0, "ce": 0.1}, False)):
        module = DistillModule("unused", LossMix(weights), torch.optim.AdamW)
        module._trainer = store
        if refused:
            with pytest.raises(ConfigError, match=r"losses \['tvd'\] need verifier distributions"):
                module.on_fit_start()
        else:
            module.on_fit_start()


def test_nonfinite_loss_stops_the_run_and_exports_nothing(micro_world, cache_dir, tmp_path):
    from specdiff2.errors import TrainingError

    cfg = micro_cfg(micro_world, cache_dir, tmp_path, "optim.optimizer.lr=1e30", "optim.scheduler=null")
    with pytest.raises(TrainingError) as info:
        train(cfg)
    line = str(info.value)
    assert "\n" not in line and "at step 2" in line and "streak_loss=" in line and "ce_loss=" in line
    assert "optim.optimizer.lr" in line
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("override,needle", [
    ("export=bogus", "export='bogus'; choose one of best, last"),
    ("trainer.max_steps=-1", "trainer.max_steps=-1; set an integer >= 0"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5; set an integer >= 0"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0; set an integer >= 1 or a fraction"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval=1.5;"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0; set an integer >= 1"),
    ("trainer.limit_val_batches=0", "trainer.limit_val_batches=0;"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1;"),
    ("optim.optimizer.lr=-1", "optim.optimizer.lr=-1; set a finite learning rate > 0"),
    ("optim.optimizer.lr=0", "optim.optimizer.lr=0;"),
    ("optim.optimizer.betas=[2,1]", "optim.optimizer is invalid (Invalid beta parameter"),
    ("optim.scheduler.num_warmup_steps=-3", "optim.scheduler.num_warmup_steps=-3;"),
    ("resume=/nonexistent/run.ckpt", "no checkpoint at /nonexistent/run.ckpt; pass resume=FILE.ckpt"),
    ("drafter.dtype=float8", "drafter.dtype='float8' is not a supported dtype"),
])
def test_nonsense_settings_stop_with_one_line_naming_the_key(override, needle, tmp_path, capsys):
    from specdiff2.cli import one_line_errors

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "logger=tiny", override])
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        instantiate(cfg.job)  # what train.py does first, before any pocket build or sampling
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and needle in lines[0], lines


class _Holder(torch.nn.Module):
    """The two attributes of a DistillModule that export and checkpoint loading touch."""

    def __init__(self):
        super().__init__()
        self.drafter = torch.nn.Linear(2, 2)
        self.strict_loading = True


def test_checkpoint_weights_load_as_data_only_and_finite(tmp_path):
    from specdiff2.errors import CheckpointError
    from specdiff2.training.export import load_checkpoint_weights

    module = _Holder()
    good = {k: torch.full_like(v, 0.5) for k, v in module.state_dict().items()}
    torch.save({"state_dict": good, "epoch": 0}, tmp_path / "good.ckpt")
    load_checkpoint_weights(module, tmp_path / "good.ckpt")
    assert torch.equal(module.drafter.weight, torch.full((2, 2), 0.5))
    bad = {**good, "drafter.bias": torch.tensor([0.0, float("nan")])}
    torch.save({"state_dict": bad}, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match="drafter.bias .* NaN or inf"):
        load_checkpoint_weights(module, tmp_path / "nan.ckpt")
    assert torch.equal(module.drafter.bias, torch.full((2,), 0.5))  # refused before loading anything
    torch.save({"state_dict": good, "code": _Holder}, tmp_path / "code.ckpt")  # unpickling it would import code
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint_weights(module, tmp_path / "code.ckpt")


def test_nonfinite_drafter_is_never_exported(micro_world, tmp_path):
    from types import SimpleNamespace

    from specdiff2.errors import CheckpointError
    from specdiff2.models.hf import load_hf_drafter
    from specdiff2.training.export import export_drafter

    model = load_hf_drafter(micro_world.drafter)
    with torch.no_grad():
        model.model.norm.weight[0] = float("inf")
    with pytest.raises(CheckpointError, match="model.norm.weight .* NaN or inf"):
        export_drafter(SimpleNamespace(drafter=model, lora=None), tmp_path / "export", micro_world.drafter)
    assert not (tmp_path / "export").exists()
