"""Streak-distillation entry point: python train.py [group=option ...] (Hydra)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from specdiff2.cli import one_line_errors, run_main

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        from hydra.utils import instantiate

        from specdiff2.pocket.world import ensure_pocket_world
        from specdiff2.report import print_world

        pocket_spec = instantiate(cfg.pocket)
        verifier_ref, drafter_ref = instantiate(cfg.verifier), instantiate(cfg.drafter)
        if verifier_ref.pocket or drafter_ref.pocket:
            world = ensure_pocket_world(pocket_spec, cfg.paths.pocket_dir)
            print_world(world)
        verifier_ref.resolve()
        drafter_ref.resolve()


if __name__ == "__main__":
    run_main(main, CONF_DIR)
