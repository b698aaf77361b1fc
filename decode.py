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
        from specdiff2.decode.loading import check_vocabularies
        from specdiff2.decode.run import build_engine, pick_device, print_summary, run_prompts
        from specdiff2.decode.sampling import SamplingParams
        from specdiff2.pocket.world import ensure_pocket_world

        sampling = SamplingParams(cfg.temperature, cfg.top_k, cfg.top_p)
        rule = instantiate(cfg.acceptance)  # refuses non-lossless choices (greedy at T > 0, ...) up front
        verifier_ref = instantiate(cfg.verifier)
        used = [verifier_ref] + [instantiate(m.ref) for m in cfg.decode.models.values() if "ref" in m]
        for ref in used:  # fail fast, before any pocket build, on real checkpoints that are absent
            if not ref.pocket:
                ref.resolve()
        check_vocabularies(verifier_ref, used[1:])  # tokenizers only: a mismatched pair fails before weights load
        if any(r.pocket for r in used):
            ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir)
        prompts = load_prompts(instantiate(cfg.data.prompts))
        models = instantiate(cfg.decode.models, _convert_="all")  # name -> loader(ctx): built by build_engine
        engine = build_engine(verifier_ref, instantiate(cfg.decode.strategy), models, rule, sampling,
                              pick_device(cfg.device), cfg.max_seq_len, cfg.seed, cfg.compile, cfg.kernels)
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = run_prompts(engine, prompts, cfg.max_new_tokens, out_dir, cfg.decode.method, cfg.warmup)
        print_summary(summary, f"{cfg.decode.method} on {cfg.data.name} ({len(prompts)} prompts) → {out_dir}")

if __name__ == "__main__":
    run_main(main, CONF_DIR, "decode")
