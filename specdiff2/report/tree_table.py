"""τ and tok/s vs draft node budget N (issue 24): python -m specdiff2.report.tree_table DIR/decode_rows.jsonl.

Reads the rows of `--sweep tree` (conf/sweep/tree.yaml) and prints, per prompt set and temperature, every method
at its verified width N (the strategy's draft nodes per step, recorded by the sweep), with bootstrap 95% intervals
over prompts (report/stats.py) for τ and tok/s and paired ones for the ratios against the one-pass chain and `ar`.
Then the goal lines: the best tree budget against the chain (τ ≥ 1.35x, tok/s ≥ 1.25x) and, at T > 0,
deterministic proposals against sampled ones (≥ 1.2x).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from specdiff2.report import samples
from specdiff2.report.rundata import read_jsonl

TREE_SWEEPS = ("chain", "chain_argmax", "self_select", "tree", "tree_variants")


def _cell(rows: list[dict], sweep: str, s: str, t: float) -> list[dict]:
    return [r for r in rows if r.get("sweep") == sweep and r.get("set") == s and float(r["temperature"]) == t
            and "error" not in r]


def table_rows(rows: list[dict]) -> list[dict]:
    """One dict per method row: set, T, method, N, τ, tok/s with intervals, ratios to the chain and to `ar`."""
    out = []
    cells = sorted({(r["set"], float(r["temperature"])) for r in rows if r.get("sweep") in TREE_SWEEPS})
    for s, t in cells:
        chain = next(iter(_cell(rows, "chain", s, t)), None)
        ref = next(iter(_cell(rows, "reference", s, t)), None)
        for sweep in TREE_SWEEPS:
            for r in sorted(_cell(rows, sweep, s, t), key=lambda r: r.get("draft_nodes", 0)):
                row = {"set": s, "T": t, "sweep": sweep, "method": r["method"], "N": r.get("draft_nodes"),
                       "tau": samples.interval(r, "tau"), "tps": samples.interval(r, "tps")}
                if chain is not None:
                    row["tau_x_chain"] = samples.ratio(r, chain, "tau")
                    row["tps_x_chain"] = samples.ratio(r, chain, "tps")
                if ref is not None:
                    row["tps_x_ar"] = samples.ratio(r, ref, "tps")
                out.append(row)
    return out


def goals(table: list[dict]) -> list[str]:
    """The issue's goal lines, from the best tree budget (by tok/s) per set and temperature."""
    lines = []
    for s, t in sorted({(r["set"], r["T"]) for r in table}):
        trees = [r for r in table if r["set"] == s and r["T"] == t and r["sweep"] == "tree" and "tps_x_chain" in r]
        if trees:
            best = max(trees, key=lambda r: r["tps"].value)
            lines.append(f"{s} T={t:g}: best tree N={best['N']}: τ {best['tau_x_chain'].text()} of the chain "
                         f"(goal ≥ 1.35x), tok/s {best['tps_x_chain'].text()} (goal ≥ 1.25x)")
        argmax = [r for r in table if r["set"] == s and r["T"] == t and r["sweep"] == "chain_argmax"]
        if t > 0 and argmax and "tps_x_chain" in argmax[0]:
            lines.append(f"{s} T={t:g}: argmax proposals vs sampled (same chain): tok/s "
                         f"{argmax[0]['tps_x_chain'].text()} (goal ≥ 1.2x)")
    return lines


def _text(row: dict, key: str, unit: str = "x", digits: int = 2) -> str:
    return row[key].text(unit, digits) if key in row else ""


def print_table(table: list[dict], title: str) -> None:
    t = Table(title=title)
    cols = ["set", "T", "method", "N", "τ", "tok/s", "τ / chain", "tok/s / chain", "tok/s / ar"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in table:
        t.add_row(r["set"], f"{r['T']:g}", r["method"], str(r["N"]), _text(r, "tau", ""), _text(r, "tps", "", 0),
                  _text(r, "tau_x_chain"), _text(r, "tps_x_chain"), _text(r, "tps_x_ar"))
    Console(width=220).print(t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", help="decode_rows.jsonl of a --sweep tree run")
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args()
    rows = read_jsonl(Path(args.rows))
    device = next((r.get("device") for r in rows if r.get("device")), "?")
    table = table_rows(rows)
    print_table(table, f"τ and tok/s vs draft nodes N, one drafter pass per step ({device}; 95% bootstrap "
                       "intervals over prompts)")
    for line in goals(table):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: (vars(v) if hasattr(v, "low") else v) for k, v in r.items()}
                                               for r in table], indent=1))


if __name__ == "__main__":
    main()
