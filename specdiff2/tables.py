"""Rich tables printed whole: no cell and no title folded over lines, so output paths stay copyable.

Rich fits a table into the console width (80 columns when stdout is a pipe) by folding cells, which split run
directories and export paths over 2-3 lines. Here a table is printed at its natural width instead (a terminal
soft-wraps what does not fit, and copying the line gives the whole path back).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_wide(table: Table) -> None:
    console = Console()
    width = console.measure(table, options=console.options.update_width(10_000)).maximum  # uncapped
    if table.title and len(str(table.title)) > width:  # rich wraps a title to the table's width: print it alone
        console.print(table.title, soft_wrap=True, style="italic")
        table.title = None
    Console(width=max(width, console.width)).print(table)
