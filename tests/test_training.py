"""train.py on the micro pocket world: main path, LoRA, exact resume, trainer configs, one-line errors."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.hf import read_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # trajectories generated once, reused (keyed) by every run


def micro_cfg(world, cache, out, *extra):
    overrides = [
        f"paths.output_dir={out}", f"paths.cache_dir={cache}", "verifier.pocket=false", "drafter.pocket=false",
        f"verifier.path={world.verifier}", f"drafter.path={world.drafter}", f"data.tokens_dir={world.tokens}",
        "trainer=tiny", "logger=tiny", "optim=tiny", "loss=tiny", "progress_bar=false",
        "data.generation.num_prompts=8", "data.generation.prompt_tokens=16", "data.generation.max_new_tokens=16",
        "data.generation.prompts_per_shard=4", "data.generation.samples_per_prompt=2", "data.generation.device=cpu",
        "data.generation.topk_logprobs=4", "data.windows.max_len=64", "data.windows.windows_per_batch=8",
        "data.windows.gamma=4", "data.windows.val_fraction=0.25", "data.windows.row_tokens=128", *extra]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


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
    summary = train.run(micro_cfg(micro_world, cache_dir, tmp_path, "loss=mix"))
    assert summary["sections"]["training"]["steps"] == 8
    before, after = summary["val_before"], summary["val_after"]
    assert before["step"] == 0 and after["step"] == 8
    assert {f"alpha_{j}" for j in range(1, 5)} <= set(after) and after["alpha_1"] >= after["alpha_4"]
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


def test_lora_trains_only_adapter_params(micro_world, cache_dir, tmp_path):
    recorder = Recorder()
    summary = train.run(micro_cfg(micro_world, cache_dir, tmp_path, "peft=tiny"), [recorder])
    training = summary["sections"]["training"]
    assert training["peft"] == "lora" and 0 < training["trained params"] < training["drafter params"] / 5
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state and all("lora_" in k for k in state)  # the checkpoint holds the adapter only
    assert (tmp_path / "export" / "adapter" / "adapter_config.json").is_file()
    merged, _ = load_transformer(tmp_path / "export" / "drafter")
    old, _ = load_transformer(micro_world.drafter)
    assert not torch.equal(merged.model.layers[0].mlp.down_proj.weight, old.model.layers[0].mlp.down_proj.weight)
    assert torch.equal(merged.model.norm.weight, old.model.norm.weight)  # not a LoRA target: untouched


def test_resume_reproduces_the_loss_curve(micro_world, cache_dir, tmp_path):
    straight = Recorder()
    train.run(micro_cfg(micro_world, cache_dir, tmp_path / "a", "peft=tiny"), [straight])
    with pytest.raises(RuntimeError, match="simulated crash"):  # checkpoint at step 4, killed during step 7
        train.run(micro_cfg(micro_world, cache_dir, tmp_path / "b", "peft=tiny"), [Crash(6)])
    resumed = Recorder()
    train.run(micro_cfg(micro_world, cache_dir, tmp_path / "c", "peft=tiny", f"resume={tmp_path / 'b'}"), [resumed])
    assert sorted(straight.losses) == list(range(1, 9)) and sorted(resumed.losses) == [5, 6, 7, 8]
    for step in (5, 6, 7, 8):
        assert resumed.losses[step] == pytest.approx(straight.losses[step], rel=1e-6, abs=1e-7), step


@pytest.mark.parametrize("name,stage,offload", [("deepspeed_z2", 2, False), ("deepspeed_z3", 3, False),
                                                ("deepspeed_z3_offload", 3, True), ("ddp", None, False),
                                                ("gpu", None, False), ("cpu", None, False)])
def test_trainer_configs_construct_on_cpu(name, stage, offload, tmp_path):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={name}", f"paths.output_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, accelerator="cpu", devices=1, logger=False, callbacks=[])
    assert trainer.max_steps > 0 and trainer.gradient_clip_val == 1.0
    if stage is not None:
        from lightning.pytorch.strategies import DeepSpeedStrategy

        zero = trainer.strategy.config["zero_optimization"]
        assert isinstance(trainer.strategy, DeepSpeedStrategy) and zero["stage"] == stage
        assert ("offload_optimizer" in zero and "offload_param" in zero) == offload
        assert str(trainer.precision) == "bf16-mixed"


def test_missing_72b_verifier_is_one_clear_line():
    cmd = [sys.executable, "train.py", "drafter=diffucoder", "verifier=qwen72b", "trainer=deepspeed_z3", "peft=lora"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error:") and "Qwen/Qwen2.5-72B-Instruct" in lines[0] and "verifier.path=" in lines[0]
    assert "drafter.path=" in lines[0]


@pytest.mark.parametrize("packing", ["shared", "none"])
def test_other_packings_train(micro_world, cache_dir, tmp_path, packing):
    cfg = micro_cfg(micro_world, cache_dir, tmp_path, f"data.windows.packing={packing}",
                    "data.windows.blocks_per_row=4", "trainer.max_steps=2", "trainer.val_check_interval=2")
    summary = train.run(cfg)
    assert summary["sections"]["windows"]["packing"] == packing and summary["sections"]["training"]["steps"] == 2


def test_online_verifier_topk_matches_the_stored_topk(micro_world, cache_dir, tmp_path):
    from specdiff2.losses import LossMix
    from specdiff2.training.datamodule import TrajectoryDataModule
    from specdiff2.training.module import DistillModule

    cfg = micro_cfg(micro_world, cache_dir, tmp_path, "loss=kl", "module.online_topk=4", "trainer.max_steps=2",
                    "trainer.val_check_interval=2")
    summary = train.run(cfg)  # trains on online soft targets (loads the verifier)
    dm = TrajectoryDataModule(summary["sections"]["trajectories"]["store"], gamma=4, mask_token_id=1, max_len=64,
                              windows_per_batch=8, val_fraction=0.25)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    module = DistillModule(str(micro_world.drafter), LossMix({"kl": 1.0}), torch.optim.AdamW,
                           verifier_path=str(micro_world.verifier), online_topk=4)
    ids, lps = module._online_topk(batch, drafter_vocab=10**6)
    valid = batch["mask"]
    assert torch.equal(ids[valid], batch["verifier_topk_ids"][valid])
    torch.testing.assert_close(lps[valid], batch["verifier_topk_logprobs"][valid], rtol=1e-4, atol=1e-4)
