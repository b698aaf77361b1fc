"""Helpers shared by the benchmark scripts: compose the project's Hydra config without a CLI, build engines."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.utils import instantiate

from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import load_verifier
from specdiff2.decode.run import engine_for, pick_device
from specdiff2.decode.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[2]


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    os.environ.setdefault("SPECDIFF2_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def sampling_of(cfg) -> SamplingParams:
    return SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p)


def engine_from_config(cfg, verifier=None, tokenizer=None) -> DecodeEngine:
    """A DecodeEngine from a composed decode config (as decode.py builds it); pass a loaded verifier and its
    tokenizer to share one across methods. The pocket world must exist already (ensure_pocket_world)."""
    if verifier is None:
        verifier, tokenizer = load_verifier(instantiate(cfg.verifier), pick_device(cfg.device), cfg.max_seq_len,
                                            cfg.compile, cfg.kernels)
    return engine_for(verifier, tokenizer, instantiate(cfg.decode.strategy),
                      instantiate(cfg.decode.models, _convert_="all"), instantiate(cfg.acceptance), sampling_of(cfg),
                      cfg.seed)
