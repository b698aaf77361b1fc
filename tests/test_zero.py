"""ZeRO helpers (training/zero.py) on CPU: stage detection, wrapper-prefix stripping, export from a gathered state.

The sharded runs themselves need GPUs (bench/zero_distill.py, bench/multi_gpu.sh); what is checked here is that a
state dict in the shape DeepSpeed hands back (wrapper prefixes, full or LoRA) rebuilds the module exactly.
"""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from peft import LoraConfig

from specdiff2.losses import LossMix
from specdiff2.training.module import DistillModule
from specdiff2.training.zero import _strip, unsharded_module, zero_stage
from tests.test_training import ROOT


@pytest.mark.parametrize("name,stage", [("deepspeed_z2", 2), ("deepspeed_z3", 3), ("cpu", 0)])
def test_zero_stage_of_each_trainer_config(name, stage, tmp_path):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={name}", f"paths.output_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, accelerator="cpu", devices=1, logger=False, callbacks=[])()
    assert zero_stage(trainer) == stage


def test_strip_removes_lightning_and_deepspeed_wrappers():
    assert _strip("_forward_module.drafter.model.norm.weight") == "drafter.model.norm.weight"
    assert _strip("module._forward_module.drafter.lm_head.weight") == "drafter.lm_head.weight"
    assert _strip("drafter.model.norm.weight") == "drafter.model.norm.weight"


@pytest.mark.parametrize("lora", [False, True])
def test_gathered_state_rebuilds_the_trained_module(tiny_world, lora):
    def build():
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if lora else None
        return DistillModule(str(tiny_world.drafter), LossMix({"streak": 1.0}), torch.optim.AdamW, lora=config)

    trained = build()
    trained.configure_model()
    with torch.no_grad():  # "training": every trainable tensor moves
        for _, p in trained.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    gathered = {f"_forward_module.{k}": v.clone() for k, v in trained.state_dict().items()}  # as DeepSpeed returns
    rebuilt = unsharded_module(build, {_strip(k): v for k, v in gathered.items()})
    ids = torch.arange(12)[None] + 3
    trained.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.drafter(input_ids=ids).logits, trained.drafter(input_ids=ids).logits)
    with pytest.raises(RuntimeError, match="lacks"):
        unsharded_module(build, {k: v for k, v in trained.state_dict().items() if "lora_" not in k and
                                 "layers.0." not in k})
