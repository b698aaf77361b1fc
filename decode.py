"""Evaluation entry point: python decode.py [decode=ar|sd_ar|specdiff] [data=...] (Hydra; -m for sweeps)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from specdiff2.cli import one_line_errors, run_main

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path=str(CONF_DIR), config_name="decode", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import instantiate

        from specdiff2.data.prompts import load_prompts
        from specdiff2.decode.rules import SamplingParams
        from specdiff2.decode.run import build_engine, pick_device, print_summary, run_prompts
        from specdiff2.pocket.world import ensure_pocket_world

        verifier_ref = instantiate(cfg.verifier)
        strategy = cfg.decode.strategy
        used = [verifier_ref] + ([instantiate(strategy.drafter)] if "drafter" in strategy else [])
        for ref in used:  # fail fast, before any pocket build, on real checkpoints that are absent
            if not ref.pocket:
                ref.resolve()
        if any(r.pocket for r in used):
            ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir)
        prompts = load_prompts(instantiate(cfg.data.prompts))
        sampling = SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p)
        engine = build_engine(verifier_ref, instantiate(strategy), sampling, pick_device(cfg.device),
                              cfg.max_seq_len, cfg.acceptance, cfg.seed)
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run_prompts(engine, prompts, cfg.max_new_tokens, out_dir, cfg.decode.method, cfg.warmup)
        print_summary(summary, f"{cfg.decode.method} on {cfg.data.name} ({len(prompts)} prompts) → {out_dir}")


if __name__ == "__main__":
    run_main(main, CONF_DIR)
