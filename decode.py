"""Evaluation entry point: python decode.py [decode=ar|sd_ar|specdiff|...] [acceptance=...] [data=...] (Hydra; -m)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from specdiff2.cli import DECODE_SETTINGS, check_required, check_settings, one_line_errors, run_main
from specdiff2.config_types import check_config_types

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path=str(CONF_DIR), config_name="decode", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        check_required(OmegaConf.to_container(cfg, resolve=False))
        check_settings({key: OmegaConf.select(cfg, key) for key in DECODE_SETTINGS}, DECODE_SETTINGS)
        check_config_types(cfg)  # every strategy / acceptance / loader field against its target's signature
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import instantiate

        from specdiff2.data.prompts import load_prompts
        from specdiff2.decode.run import print_summary, run_prompts
        from specdiff2.pocket.world import ensure_pocket_world

        job = instantiate(cfg.job)  # the acceptance rule is built here: non-lossless choices fail up front
        job.check_checkpoints()  # absent real checkpoints, mismatched tokenizers: one line before any pocket build
        if job.uses_pocket:
            ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir)
        prompts = load_prompts(instantiate(cfg.data.prompts))
        engine = job.build()
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run_prompts(engine, prompts, cfg.max_new_tokens, out_dir, job.method, cfg.warmup)
        print_summary(summary, f"{job.method} on {cfg.data.name} ({len(prompts)} prompts) → {out_dir}")

if __name__ == "__main__":
    run_main(main, CONF_DIR, "decode")
