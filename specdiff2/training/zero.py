"""DeepSpeed ZeRO around the distillation module: what sharding changes for checkpoints and export.

Under ZeRO-3 each rank holds 1/N of every parameter, so the module's `drafter` cannot be exported as is. Two
ways back to one Hugging Face checkpoint, both tested on GPUs (bench/zero_distill.py):
  - `gather_state_dict`: all ranks gather the 16-bit weights onto rank 0 (DeepSpeed's consolidated state
    dict); rank 0 loads them into a fresh, unsharded module and exports that. This is what train.py does.
  - `consolidate_checkpoint`: a saved ZeRO checkpoint directory (any stage) → fp32 state dict on one process
    (DeepSpeed's zero_to_fp32), for runs that ended or were killed: export from the checkpoint, no GPUs needed.
ZeRO-2 keeps whole parameters on every rank; only ZeRO-3 needs either.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

_PREFIXES = ("_forward_module.", "module.")  # Lightning's wrapper and DeepSpeed's engine around the module


def zero_stage(trainer) -> int:
    """0 without DeepSpeed, else the ZeRO stage of the trainer's strategy."""
    strategy = trainer.strategy
    config = getattr(strategy, "config", None)
    if not isinstance(config, dict) or "zero_optimization" not in config:
        return 0
    return int(config["zero_optimization"].get("stage", 0))


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def gather_state_dict(trainer) -> dict[str, torch.Tensor] | None:
    """Collective (every rank calls it): the module's full 16-bit state dict on rank 0, None elsewhere."""
    engine = trainer.strategy.deepspeed_engine
    state = engine._zero3_consolidated_16bit_state_dict()  # DeepSpeed's save_16bit_model path; rank 0 only
    if not trainer.is_global_zero:
        return None
    return {_strip(k): v.detach().to("cpu") for k, v in state.items()}


def consolidate_checkpoint(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """fp32 state dict of a Lightning DeepSpeed checkpoint directory (ZeRO-2 or 3), on one process."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir))
    return {_strip(k): v for k, v in state.items()}


def unsharded_module(rebuild: Callable[[], object], state: dict[str, torch.Tensor]):
    """A fresh module (`rebuild()` → DistillModule) with `state` loaded: what export writes."""
    module = rebuild()
    module.configure_model()
    own = module.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    missing = [k for k in own if k not in state and (module.lora is None or "lora_" in k)]
    if missing:
        raise RuntimeError(f"consolidated ZeRO state lacks {len(missing)} tensors (first: {missing[0]})")
    module.load_state_dict(state, strict=False)
    return module
