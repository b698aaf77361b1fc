"""Rich tables printed at the end of runs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_world(world) -> None:
    summary = world.summary()
    table = Table(title=f"pocket world {world.root}")
    for col in ("stage", "wall s", "params", "val loss (first → last)", "notes"):
        table.add_column(col)
    for stage, info in summary.items():
        params = f"{info['params'] / 1e6:.2f}M" if "params" in info else ""
        val = ""
        if "final_val" in info:
            val = f"{info['initial_val']['loss']:.3f} → {info['final_val']['loss']:.3f}"
        notes = ", ".join(f"{k}={v}" for k, v in info.items()
                          if k not in ("wall_s", "params", "final_val", "initial_val"))
        extra = info.get("final_val", {}).get("window_ce")
        if extra is not None:
            notes = f"window CE {extra:.3f}" + (f", {notes}" if notes else "")
        table.add_row(stage, f"{info.get('wall_s', 0):.1f}", params, val, notes)
    Console().print(table)
