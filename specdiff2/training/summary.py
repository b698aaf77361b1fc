"""The rich summary printed at the end of `python train.py`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_training_summary(summary: dict) -> None:
    """summary: {"sections": {title: {key: value}}, "val_before": {...}, "val_after": {...}}."""
    console = Console()
    table = Table(title="streak distillation")
    table.add_column("stage")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    for section, items in summary["sections"].items():
        for i, (key, value) in enumerate(items.items()):
            table.add_row(section if i == 0 else "", key, _fmt(value))
        table.add_section()
    console.print(table)
    before, after = summary.get("val_before") or {}, summary.get("val_after") or {}
    if not (before or after):
        return
    val = Table(title="held-out windows (before → after training)")
    for col in ("metric", "before", "after"):
        val.add_column(col)
    for key in dict.fromkeys([*before, *after]):
        if key != "step":
            val.add_row(f"val/{key}", _fmt(before.get(key, "")), _fmt(after.get(key, "")))
    console.print(val)
