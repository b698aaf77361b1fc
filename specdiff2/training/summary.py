"""The summary of a distillation run: a dict (returned by the pipeline) and the rich tables printed from it."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from rich.table import Table

from specdiff2.tables import print_wide

# train.py groups and keys that say which verifier and which drafter family a run used: decode.py needs the same
DECODE_GROUPS = {"pocket": "tiny", "verifier": "pocket", "drafter": "pocket"}  # group -> decode.py's default
DECODE_KEYS = ("verifier.", "drafter.", "pocket.", "paths.root_dir", "paths.cache_dir", "paths.pocket_dir")


def make_summary(run: dict, datamodule, module, trainer, throughput, exported: dict) -> dict:
    """run: {"store", "gen_s", "train_s", "params": (drafter params, trained params)} of the pipeline."""
    trajs = datamodule.trajectories
    n_params, trained = run["params"]
    rate = throughput.summary() if throughput is not None else {"windows_per_s": "n/a", "tokens_per_s": "n/a"}
    last_loss = trainer.callback_metrics.get("train/loss")
    checkpoint = trainer.checkpoint_callback
    best_score = getattr(checkpoint, "best_model_score", None)
    sections = {
        "trajectories": {"store": str(run["store"]), "trajectories": len(trajs),
                         "verifier tokens": sum(len(t.tokens) - t.prompt_len for t in trajs),
                         "wall s (sample or reuse)": run["gen_s"]},
        "windows": datamodule.stats(),
        "training": {"loss": dict(module.loss.weights), "peft": "lora" if module.lora is not None else "full",
                     "drafter params": n_params, "trained params": trained, "steps": trainer.global_step,
                     "wall s (validate + fit)": run["train_s"], "windows/s (train steps)": rate["windows_per_s"],
                     "tokens/s (packed)": rate["tokens_per_s"],
                     "final train/loss": float(last_loss) if last_loss is not None else "n/a"},
        "checkpoints": {"best": getattr(checkpoint, "best_model_path", "") or "none",
                        "best val/expected_streak": float(best_score) if best_score is not None else "n/a",
                        "last": getattr(checkpoint, "last_model_path", "") or "none"},
        "export": exported,
    }
    history = module.val_history
    return {"sections": sections, "val_before": history[0] if history else {},
            "val_after": history[-1] if len(history) > 1 else {}, "val_history": history}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_training_summary(summary: dict) -> None:
    """summary: {"sections": {title: {key: value}}, "val_before": {...}, "val_after": {...}}."""
    table = Table(title="streak distillation")
    table.add_column("stage")
    table.add_column("item")
    table.add_column("value")
    for section, items in summary["sections"].items():
        for i, (key, value) in enumerate(items.items()):
            table.add_row(section if i == 0 else "", key, _fmt(value))
        table.add_section()
    print_wide(table)  # store, checkpoint and export paths on one line each
    before, after = summary.get("val_before") or {}, summary.get("val_after") or {}
    if not (before or after):
        return
    val = Table(title="validation windows: held-out (val/) and a training slice (val_train/), before → after")
    for col in ("metric", "before", "after"):
        val.add_column(col)
    before, after = _curves(before), _curves(after)
    for key in dict.fromkeys([*before, *after]):
        if key != "step":
            val.add_row(key if "/" in key else f"val/{key}", _fmt(before.get(key, "")), _fmt(after.get(key, "")))
    print_wide(val)


def _curves(row: dict) -> dict:
    """row with each per-position family (alpha_1, alpha_2, ...) folded into one entry "alpha_1..γ": "0.91 0.80 ..."."""
    families: dict[str, list[float]] = {}
    for key, value in row.items():
        stem, _, j = key.rpartition("_")
        if stem and j.isdigit() and isinstance(value, float):
            families.setdefault(stem, []).append(value)
    out = {}
    for key, value in row.items():
        stem, _, j = key.rpartition("_")
        if stem not in families or not j.isdigit():
            out[key] = value
        elif j == "1":
            out[f"{stem}_1..{len(families[stem])}"] = " ".join(f"{v:.2f}" for v in families[stem])
    return out


def decode_command(drafter_dir: str, choices: Mapping[str, str], overrides: list[str]) -> str:
    """The decode.py command that decodes with this run's exported drafter against the verifier it was distilled to.

    choices: the run's group choices (Hydra runtime.choices); overrides: its command-line overrides. The verifier,
    pocket world and drafter family carry over; the drafter is the export (`drafter.pocket=false`: never rebuilt).
    """
    parts = ["python decode.py"]
    parts += [f"{group}={choices[group]}" for group, default in DECODE_GROUPS.items()
              if choices.get(group, default) != default]
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith(DECODE_KEYS) and key not in ("drafter.path", "drafter.pocket"):
            parts.append(shlex.quote(override))
    return " ".join([*parts, shlex.quote(f"drafter.path={drafter_dir}"), "drafter.pocket=false"])
