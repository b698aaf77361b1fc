"""Streak-distillation entry point: python train.py [group=option ...] (Hydra).

pocket world (built on first use) → verifier trajectories (resumable store) → distillation (Lightning) →
checkpoint + Hugging Face export → summary table. This file only wires the config to
`specdiff2.training.pipeline.run_distillation`; settings are checked and real checkpoint paths resolved
before any heavy work, so a bad value or a missing 72B verifier stops the run at once with one line.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from specdiff2.cli import (
    TRAIN_DEVICE_SETTINGS,
    TRAIN_SETTINGS,
    check_required,
    check_settings,
    one_line_errors,
    run_main,
)

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        check_required(OmegaConf.to_container(cfg, resolve=False))
        check_settings({key: OmegaConf.select(cfg, key) for key in TRAIN_SETTINGS}, TRAIN_SETTINGS)
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import instantiate

        from specdiff2.pocket.world import ensure_pocket_world
        from specdiff2.report import print_world
        from specdiff2.training.pipeline import resolve_checkpoints, run_distillation
        from specdiff2.training.summary import decode_command

        job = instantiate(cfg.job)  # refs, trajectory source, factories, loggers, callbacks; settings checked
        refs = (job.verifier, job.drafter)
        resolve_checkpoints(*(ref for ref in refs if not ref.pocket))  # absent real checkpoints: fail now
        check_settings({key: OmegaConf.select(cfg, key) for key in TRAIN_DEVICE_SETTINGS}, TRAIN_DEVICE_SETTINGS)
        if any(ref.pocket for ref in refs):
            print_world(ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir))
        exported = run_distillation(job)["sections"]["export"].get("drafter")  # rank 0 exports, others: none
        if exported:
            hydra_cfg = HydraConfig.get()
            command = decode_command(exported, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task))
            print(f"decode with the distilled drafter (plain python decode.py uses the pretrained one):\n  {command}")


if __name__ == "__main__":
    run_main(main, CONF_DIR, "train")
