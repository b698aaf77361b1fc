"""Experiment loggers: W&B offline unless an API key is configured; both continue a resumed run's history."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger

from specdiff2.errors import ConfigError, require
from specdiff2.training.resume import (
    WANDB_ID_FILE,
    checkpoint_step,
    previous_metrics,
    resume_path,
    rows_before,
    run_dir_of,
    write_rows,
)


def wandb_key_configured() -> bool:
    """True when W&B can log online: WANDB_API_KEY is set or `wandb login` wrote ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(save_dir: str, project: str = "specdiff2", name: str | None = None, mode: str = "auto",
                 tags: list[str] | None = None, resume: str | None = None):
    """Lightning WandbLogger writing under `save_dir`; mode auto = online only when a key is configured.

    The run id is stored in save_dir/wandb_run_id; with `resume=` (train.py's) the id stored in the resumed
    run's directory is reused (W&B resume="allow"), so the resumed run continues the same W&B run.
    """
    from lightning.pytorch.loggers import WandbLogger

    require(mode in ("auto", "online", "offline"), f"logger.wandb.mode={mode!r}; use auto, online or offline",
            ConfigError)
    offline = mode == "offline" or (mode == "auto" and not wandb_key_configured())
    run_id = None
    if resume is not None:
        stored = run_dir_of(resume_path(resume)) / WANDB_ID_FILE
        run_id = stored.read_text().strip() if stored.is_file() else None
    run_id = run_id or uuid.uuid4().hex[:8]  # W&B's id format: 8 lowercase alphanumerics
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    (Path(save_dir) / WANDB_ID_FILE).write_text(run_id + "\n")
    return WandbLogger(project=project, name=name, save_dir=save_dir, offline=offline, tags=tags, id=run_id,
                       resume="allow")


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSVLogger, continuing the metrics.csv of the run `resume=` names.

    Rows before the checkpoint's step are carried over (steps logged after it, before the kill, are dropped:
    the resumed run logs them again); when the resumed run directory is this one, the same version (the same
    file) is continued instead of a new version_N+1.
    """

    def __init__(self, save_dir: str, name: str = "csv", resume: str | None = None,
                 flush_logs_every_n_steps: int = 100):
        self._carry: tuple[list[str], list[dict]] | None = None
        version = None
        if resume is not None:
            checkpoint = resume_path(resume)
            step = checkpoint_step(checkpoint)
            previous = previous_metrics(run_dir_of(checkpoint), name)
            if previous is not None:
                self._carry = rows_before(previous, step)
                if previous.parent.parent.resolve() == (Path(save_dir) / name).resolve():
                    version = int(previous.parent.name.removeprefix("version_"))
        super().__init__(save_dir, name=name, version=version, flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    def experiment(self):
        fresh = self._experiment is None
        writer = super().experiment  # Lightning's writer deletes an existing metrics.csv when it starts
        if fresh and self._carry is not None and hasattr(writer, "metrics_file_path"):
            header, rows = self._carry
            write_rows(Path(writer.metrics_file_path), header, rows)
            writer.metrics_keys = list(header)  # later rows are appended under this header (or it is widened)
            self._carry = None
        return writer
