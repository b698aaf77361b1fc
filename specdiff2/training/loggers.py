"""Experiment loggers: W&B offline unless an API key is configured."""

from __future__ import annotations

import os
from pathlib import Path

from specdiff2.errors import ConfigError, require


def wandb_key_configured() -> bool:
    """True when W&B can log online: WANDB_API_KEY is set or `wandb login` wrote ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(save_dir: str, project: str = "specdiff2", name: str | None = None, mode: str = "auto",
                 tags: list[str] | None = None):
    """Lightning WandbLogger writing under `save_dir`; mode auto = online only when a key is configured."""
    from lightning.pytorch.loggers import WandbLogger

    require(mode in ("auto", "online", "offline"), f"logger.wandb.mode={mode!r}; use auto, online or offline",
            ConfigError)
    offline = mode == "offline" or (mode == "auto" and not wandb_key_configured())
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, name=name, save_dir=save_dir, offline=offline, tags=tags)
