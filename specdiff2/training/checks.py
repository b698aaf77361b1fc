"""Fail-fast checks of run settings, before any heavy work: one ConfigError line naming the key and the fix.

Lightning and torch accept some nonsense silently (`max_steps=-1` trains for 1000 epochs, a zero validation
interval or learning rate fails only after the trajectories are sampled) or refuse it in several lines; these
checks run when the job is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, get_args

import torch

from specdiff2.errors import ConfigError, is_int, is_real, require

EXPORTS = ("best", "last")


def _count(settings: Mapping[str, Any], key: str, minimum: int, meaning: str) -> None:
    value = settings.get(key)
    if value is None:
        return
    require(is_int(value, minimum), f"trainer.{key}={value!r}; set an integer >= {minimum} ({meaning})")


def _count_or_fraction(settings: Mapping[str, Any], key: str, meaning: str) -> None:
    """Lightning's int-or-float convention: an integer >= 1 (batches) or a fraction in (0, 1]."""
    value = settings.get(key)
    if value is None:
        return
    ok = is_int(value, 1) or (isinstance(value, float) and 0.0 < value <= 1.0)
    require(ok, f"trainer.{key}={value!r}; set an integer >= 1 or a fraction in (0, 1] ({meaning})")


def _precision(settings: Mapping[str, Any]) -> None:
    from lightning.fabric.connector import _PRECISION_INPUT

    value = settings.get("precision")
    allowed = [v for group in get_args(_PRECISION_INPUT) for v in get_args(group)]
    require(value is None or value in allowed, f"trainer.precision={value!r}; use 32-true (CPU), bf16-mixed or "
            "bf16-true (GPU), or another of Lightning's: " + ", ".join(dict.fromkeys(map(str, allowed))))


def _device_settings(settings: Mapping[str, Any]) -> None:
    # Whether a GPU is visible is the entry point's check (cli.TRAIN_SETTINGS): configs build anywhere.
    devices = settings.get("devices")
    ok = devices is None or devices in ("auto", -1) or is_int(devices, 1) or (
        isinstance(devices, list | tuple) and len(devices) > 0 and all(is_int(d, 0) for d in devices))
    require(ok, f"trainer.devices={devices!r}; set an integer >= 1, -1 (all), auto, or a list of device indices")


def check_trainer_settings(settings: Mapping[str, Any]) -> None:
    """The Lightning Trainer keyword arguments of conf/trainer (a plain mapping)."""
    _precision(settings)
    _device_settings(settings)
    _count(settings, "max_steps", 0, "optimizer steps; 0 validates and exports the drafter as it is")
    _count_or_fraction(settings, "val_check_interval", "training batches between validations and checkpoints")
    _count_or_fraction(settings, "limit_val_batches", "validation batches per validation")
    _count_or_fraction(settings, "limit_train_batches", "training batches per epoch")
    _count(settings, "accumulate_grad_batches", 1, "batches per optimizer step")
    _count(settings, "log_every_n_steps", 1, "steps between logged training metrics")
    clip = settings.get("gradient_clip_val")
    require(clip is None or is_real(clip, 0),
            f"trainer.gradient_clip_val={clip!r}; set a finite number >= 0 (0 or null: no clipping)")


def _positive_lr(lr: Any) -> None:
    require(is_real(lr, 0, exclusive=True),
            f"optim.optimizer.lr={lr!r}; set a finite learning rate > 0")


def check_optimizer(optimizer: Callable | None, scheduler: Callable | None = None) -> None:
    """Build the optimizer once on a dummy parameter, so bad values fail now with the key they came from."""
    if optimizer is None:
        return
    settings = getattr(optimizer, "keywords", {})
    if "lr" in settings:
        _positive_lr(settings["lr"])
    try:
        probe = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:  # torch's own checks (betas, eps, weight_decay, unknown names)
        raise ConfigError(f"optim.optimizer is invalid ({err}); fix that value under optim.optimizer") from None
    _positive_lr(probe.param_groups[0].get("lr"))
    warmup = getattr(scheduler, "keywords", {}).get("num_warmup_steps")
    require(warmup is None or is_int(warmup, 0),
            f"optim.scheduler.num_warmup_steps={warmup!r}; set an integer >= 0")


def check_export(export: str) -> str:
    require(export in EXPORTS, f"export={export!r}; choose one of {', '.join(EXPORTS)} (the weights written to "
            "<run dir>/export)")
    return export
