"""τ and tok/s vs draft node budget N (issue 24): python -m specdiff2.report.tree_table DIR/decode_rows.jsonl.

Reads the rows of `--sweep tree` (conf/sweep/tree.yaml) and prints, per prompt set and temperature, every method
at its verified width N (the strategy's draft nodes per step, recorded by the sweep), with bootstrap 95% intervals
over prompts (report/stats.py) for τ and tok/s and paired ones for the ratios against the one-pass chain and `ar`.
Then the goal lines: the best tree budget against the chain (τ ≥ 1.35x, tok/s ≥ 1.25x) and, at T > 0,
deterministic proposals against sampled ones (≥ 1.2x).

With `--real-shapes real_shapes_qwen7b.json` (bench/real_shapes.py's tree section: the measured Qwen2.5-7B-shape
verify pass of N+1 tokens) it adds a labelled projection, not a timing: each row's τ at the 7B-shape step
    t_step(N) = t_draft + t_verify(N + 1) + (the row's drafter ms/step − the chain's drafter ms/step)
where the last term is the tree's own drafting overhead (tree building) measured on the pocket run, and t_draft
is one Dream-7B-shape window pass (`--draft-ms`; default: the measured 17-token pass of the same shape, the cost of
a γ=16 window with the prefix cache). proj x ar = τ · t_verify(1) / t_step; proj x chain likewise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from specdiff2.errors import DataError, require
from specdiff2.report import samples
from specdiff2.report.rundata import read_jsonl

TREE_SWEEPS = ("chain", "chain_argmax", "self_select", "tree", "tree_variants")


def _cell(rows: list[dict], sweep: str, s: str, t: float) -> list[dict]:
    return [r for r in rows if r.get("sweep") == sweep and r.get("set") == s and float(r["temperature"]) == t
            and "error" not in r]


def _draft_ms(row: dict) -> float:
    return 1e3 * row["drafter_s"] / max(row["verifier_steps"], 1)


def verify_costs(real_shapes: dict) -> dict[int, float]:
    """Verified tokens (N + 1) -> ms of one verify pass, from bench/real_shapes.py's JSON (its tree section)."""
    return {int(r["tokens"]): float(r["ms"]) for r in real_shapes.get("tree") or []}


def _projection(row: dict, tau: float, chain: dict, chain_tau: float, costs: dict[int, float],
                draft_ms: float) -> dict:
    """proj_x_ar and proj_x_chain of one sweep row (the module docstring's formula); {} without a measured cost."""
    n = row.get("draft_nodes")
    if n is None or n + 1 not in costs or chain["draft_nodes"] + 1 not in costs or 1 not in costs:
        return {}
    overhead = max(_draft_ms(row) - _draft_ms(chain), 0.0)  # the row's own drafting (tree building) beyond the chain's
    x_ar = tau * costs[1] / (draft_ms + costs[n + 1] + overhead)
    chain_x_ar = chain_tau * costs[1] / (draft_ms + costs[chain["draft_nodes"] + 1])
    return {"proj_x_ar": x_ar, "proj_x_chain": x_ar / chain_x_ar}


def table_rows(rows: list[dict], costs: dict[int, float] | None = None,
               draft_ms: float | None = None) -> list[dict]:
    """One dict per method row: set, T, method, N, τ, tok/s with intervals, ratios to the chain and to `ar`; with
    `costs` (verified tokens -> ms, `verify_costs`) and `draft_ms` also the labelled 7B projection."""
    out = []
    cells = sorted({(r["set"], float(r["temperature"])) for r in rows if r.get("sweep") in TREE_SWEEPS})
    for s, t in cells:
        chain = next(iter(_cell(rows, "chain", s, t)), None)
        ref = next(iter(_cell(rows, "reference", s, t)), None)
        chain_tau = samples.interval(chain, "tau").value if chain is not None else None
        for sweep in TREE_SWEEPS:
            for r in sorted(_cell(rows, sweep, s, t), key=lambda r: r.get("draft_nodes", 0)):
                row = {"set": s, "T": t, "sweep": sweep, "method": r["method"], "N": r.get("draft_nodes"),
                       "tau": samples.interval(r, "tau"), "tps": samples.interval(r, "tps")}
                if chain is not None:
                    row["tau_x_chain"] = samples.ratio(r, chain, "tau")
                    row["tps_x_chain"] = samples.ratio(r, chain, "tps")
                    if costs is not None:
                        row.update(_projection(r, row["tau"].value, chain, chain_tau, costs, draft_ms))
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
    cols = ["set", "T", "method", "N", "τ", "tok/s", "τ / chain", "tok/s / chain", "tok/s / ar", "proj 7B x ar",
            "proj 7B x chain"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in table:
        t.add_row(r["set"], f"{r['T']:g}", r["method"], str(r["N"]), _text(r, "tau", ""), _text(r, "tps", "", 0),
                  _text(r, "tau_x_chain"), _text(r, "tps_x_chain"), _text(r, "tps_x_ar"),
                  *(f"{r[k]:.2f}x" if k in r else "" for k in ("proj_x_ar", "proj_x_chain")))
    Console(width=220).print(t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", help="decode_rows.jsonl of a --sweep tree run")
    parser.add_argument("--json", default=None, help="also write the table here")
    parser.add_argument("--real-shapes", default=None, help="bench/real_shapes.py JSON with its tree section")
    parser.add_argument("--draft-ms", type=float, default=None, help="one 7B-shape drafter window pass (ms)")
    args = parser.parse_args()
    rows = read_jsonl(Path(args.rows))
    device = next((r.get("device") for r in rows if r.get("device")), "?")
    costs, draft_ms = None, None
    if args.real_shapes:
        costs = verify_costs(json.loads(Path(args.real_shapes).read_text()))
        draft_ms = args.draft_ms if args.draft_ms is not None else costs.get(17)
        require(draft_ms is not None and 1 in costs, f"{args.real_shapes} has no tree section with 1 and 17 "
                "tokens; rerun bench/real_shapes.py --sections tree or pass --draft-ms", DataError)
        print(f"projection at the 7B shape: t_verify(1) {costs[1]:.2f} ms, t_draft {draft_ms:.2f} ms (labelled "
              "estimate from measured step costs, not a timing)")
    table = table_rows(rows, costs, draft_ms)
    print_table(table, f"τ and tok/s vs draft nodes N, one drafter pass per step ({device}; 95% bootstrap "
                       "intervals over prompts)")
    for line in goals(table):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: (vars(v) if hasattr(v, "low") else v) for k, v in r.items()}
                                               for r in table], indent=1))


if __name__ == "__main__":
    main()
