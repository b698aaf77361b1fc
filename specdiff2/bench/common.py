"""Helpers shared by the benchmark scripts: compose the project's Hydra config without a CLI, build engines."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import instantiate

from specdiff2.decode.engine import DecodeEngine

ROOT = Path(__file__).resolve().parents[2]


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    os.environ.setdefault("SPECDIFF2_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def engine_from_config(cfg, verifier=None, tokenizer=None) -> DecodeEngine:
    """A DecodeEngine from a composed decode config, as decode.py builds it (`cfg.job`); pass a loaded verifier
    and its tokenizer to share one across methods. The pocket world must exist already (ensure_pocket_world)."""
    return instantiate(cfg.job).build(verifier, tokenizer)
