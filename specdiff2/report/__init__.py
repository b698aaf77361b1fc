"""Reports: rich tables printed at the end of runs (`print_world`) and the reproduction report
(`build_report`, `python -m specdiff2.report RUN_DIR`). Entry-point level: nothing in models/decode/data/training
imports this package."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from specdiff2.report.build import build_report

__all__ = ["build_report", "print_world"]


def print_world(world) -> None:
    summary = world.summary()
    table = Table(title=f"pocket world {world.root}")
    for col in ("stage", "wall s", "params", "val loss (first → last)", "notes"):
        table.add_column(col)
    for stage, info in summary.items():
        params = f"{info['params'] / 1e6:.2f}M" if "params" in info else ""
        first, last = info.get("initial_val", {}), info.get("final_val", {})
        val = ""
        if last:  # pretraining logs `val/loss` (older worlds: `loss`)
            key = "val/loss" if "val/loss" in last else "loss"
            val = f"{first.get(key, float('nan')):.3f} → {last[key]:.3f}"
        notes = ", ".join(f"{k}={v}" for k, v in info.items()
                          if k not in ("wall_s", "params", "final_val", "initial_val", "alpha"))
        if stage == "cost":  # the verify:draft cost ratio (pocket/cost.py)
            ms = info["verify_ms"]
            notes = (f"c = {info['ratio']:.2f}: verify " + " / ".join(f"{n} tok {v:.3f} ms" for n, v in ms.items())
                     + f", drafter γ={info['gamma']} pass {info['draft_ms']:.3f} ms ({info['device']}, {info['timer']})")
        alphas = [last[f"val/alpha_{j}"] for j in (1, 2, 4) if f"val/alpha_{j}" in last]
        if alphas:
            notes = "val α1/α2/α4 " + "/".join(f"{a:.2f}" for a in alphas) + (f", {notes}" if notes else "")
        table.add_row(stage, f"{info.get('wall_s', 0):.1f}", params, val, notes)
    Console().print(table)
