"""Resuming a killed run: which checkpoint, which run it came from, and one continuous log history.

`resume=` names a checkpoint file or a run directory (its checkpoints/last.ckpt). The loggers continue that
run's history: the CSV rows before the checkpoint's step are carried into the new metrics.csv (the same file
when the run directory is reused) and the steps logged between the checkpoint and the kill are dropped, so
they are not logged twice; W&B resumes the run id stored in the run directory (`WANDB_ID_FILE`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from specdiff2.errors import CheckpointError

WANDB_ID_FILE = "wandb_run_id"  # in the run directory (paths.output_dir): the W&B run a resume continues


def resume_path(resume: str | Path | None) -> str | None:
    """The checkpoint file `resume=` names (a run directory means its checkpoints/last.ckpt), or None."""
    if resume is None:
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; pass resume=FILE.ckpt or a run dir with checkpoints/")
    return str(path)


def previous_run(output_dir: str | Path) -> list[str]:
    """What an earlier run left in `output_dir` that a new one would overwrite or shadow: its export, and its
    checkpoints (a new last.ckpt would be written as last-v1.ckpt beside the stale one that resume= picks)."""
    root = Path(output_dir)
    found = sorted(str(p.relative_to(root)) for p in (root / "checkpoints").glob("*.ckpt"))
    return found + (["export/"] if (root / "export").exists() else [])


def check_fresh_output(output_dir: str | Path, resume: str | None) -> None:
    """One line when output_dir holds an earlier run and this one does not resume it (issue 22 item 3)."""
    found = previous_run(output_dir)
    resumes_it = resume is not None and run_dir_of(resume) == Path(output_dir).resolve()
    if found and not resumes_it:
        raise CheckpointError(f"{output_dir} already holds a run ({', '.join(found[:3])}); pass resume={output_dir} "
                              "to continue it, or leave hydra.run.dir unset for a fresh run directory")


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint was written under (<run>/checkpoints/x.ckpt), else its own directory."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def checkpoint_step(checkpoint: str | Path) -> int | None:
    """The optimizer step a Lightning checkpoint was saved at (read as data only, tensors memory-mapped).

    None for a DeepSpeed checkpoint (a directory of shards, read by DeepSpeed itself): its step is unknown here.
    """
    import torch

    if Path(checkpoint).is_dir():
        return None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"resume={checkpoint} is not a readable Lightning checkpoint ({reason}); pass "
                              "resume=FILE.ckpt written by train.py, or a run dir with checkpoints/last.ckpt") from None
    if not isinstance(state, dict) or "global_step" not in state:
        raise CheckpointError(f"resume={checkpoint} has no global_step (not a Lightning checkpoint); pass "
                              "resume=FILE.ckpt written by train.py")
    return int(state["global_step"])


def previous_metrics(run_dir: Path, name: str) -> Path | None:
    """The newest metrics.csv a CSV logger called `name` wrote under `run_dir` (<name>/version_N/), if any."""
    files = [p for p in (run_dir / name).glob("version_*/metrics.csv") if p.parent.name[8:].isdigit()]
    return max(files, key=lambda p: int(p.parent.name[8:]), default=None)


def rows_before(metrics: Path, step: int | None) -> tuple[list[str], list[dict]]:
    """(header, rows logged before a checkpoint at global step `step`; every row when `step` is None).

    Lightning logs a batch's metrics (and a validation after it) at the step count before that batch's optimizer
    step, so a checkpoint after k steps covers rows 0..k−1 and the resumed run logs step k first.
    """
    with metrics.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader
                if step is None or (row.get("step") not in (None, "") and int(float(row["step"])) < step)]
        return list(reader.fieldnames or []), rows


def write_rows(metrics: Path, header: list[str], rows: list[dict]) -> None:
    metrics.parent.mkdir(parents=True, exist_ok=True)
    with metrics.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
