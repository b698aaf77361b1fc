"""W&B for the reproduction: offline unless a key is configured; WANDB_MODE in the environment wins.

The JSONL/CSV files stay the source of truth; W&B mirrors them under namespaced keys (`decode/...`, `report/...`).
"""

from __future__ import annotations

import os
from pathlib import Path

from specdiff2.errors import ConfigError, require

DECODE_KEYS = ("mean_accept_len", "tokens_per_s", "speedup_ar", "agree_ar", "wall_s", "drafter_s", "verifier_s",
               "other_s")


def resolve_mode(mode: str = "auto") -> str:
    require(mode in ("auto", "online", "offline", "disabled"),
            f"W&B mode {mode!r}: use auto, online, offline or disabled (the `mode` of `wandb` in conf/reproduce.yaml)",
            ConfigError)
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if mode == "auto":
        # Imported here, not at the top: training.loggers pulls in Lightning (seconds), which the report and the
        # notebooks otherwise never need.
        from specdiff2.training.loggers import wandb_key_configured

        return "online" if wandb_key_configured() else "offline"
    return mode


def open_run(save_dir: Path, name: str, mode: str = "auto", project: str = "specdiff2", group: str | None = None,
             config: dict | None = None):
    """A wandb run writing under save_dir, or None when disabled."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        return None
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=project, name=name, group=group, dir=str(save_dir), mode=mode, config=config or {},
                      reinit="create_new")


def decode_metrics(row: dict) -> dict:
    """One sweep row as namespaced W&B metrics (`decode/mean_accept_len`, `decode/alpha_3`, ...)."""
    out = {f"decode/{k}": row[k] for k in DECODE_KEYS if isinstance(row.get(k), (int, float))}
    out.update({f"decode/{k}": v for k, v in row.items() if k.startswith("alpha_")})
    out.update({f"decode/accept_hist_{n}": c for n, c in enumerate(row.get("accept_hist", []))})
    return out


def log_decode_row(run, row: dict) -> None:
    if run is None or "error" in row:
        return
    run.log({**decode_metrics(row), "decode/temperature": row["temperature"]})


def log_table(run, key: str, rows: list[dict], columns: list[str]) -> None:
    if run is None or not rows:
        return
    import wandb

    run.log({key: wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})


def log_images(run, figures: dict[str, Path]) -> None:
    if run is None:
        return
    import wandb

    run.log({f"report/{name}": wandb.Image(str(path)) for name, path in figures.items()})
