"""The projection to a real verifier placed next to the measurement at the closest cost ratio (issue 25).

The projection (report/projection.py) says what a drafter with a measured α profile would gain in front of
Qwen2.5-72B, from real-shape step costs. Its cost ratio is c = t_AR / t_draft of those costs. The measured side is
the same method (the one-pass γ chain, greedy) with the same drafter on the same prompt set, in the pocket world
whose build-time c is closest to it (on a log scale), with its interval over prompts. Two differences are stated:
measured vs projected, and measured vs the projection formula fed with that world's own step costs, which
separates "the formula is wrong" from "the cost ratios differ".
"""

from __future__ import annotations

import math

from specdiff2.report import samples
from specdiff2.report.rundata import RunData, knob, method_of

TARGET = "Qwen2.5-72B"


def projected_c(p: dict) -> float:
    return p["t_ar_ms"] / p["t_draft_ms"]


def closest_world(run: RunData, c: float) -> tuple[str, dict] | None:
    """(name, cost) of the world whose measured c is closest to c (log scale)."""
    costs = {name: w["cost"] for name, w in run.worlds().items() if (w.get("cost") or {}).get("ratio")}
    if not costs:
        return None
    name = min(costs, key=lambda n: abs(math.log(costs[n]["ratio"] / c)))
    return name, costs[name]


def _chain_row(rows: list[dict], drafter: str, s: str, gamma: int) -> dict | None:
    """The one-pass γ chain (specdiff, T=1 step), greedy, with `drafter` on set s, that has a speed-up over ar.
    The unaligned arm's weights are the world's own drafter (`pocket`)."""
    names = {drafter, "pocket"} if drafter == "unaligned" else {drafter}
    for r in rows:
        if (r["set"] == s and r["drafter"] in names and float(r["temperature"]) == 0.0 and "speedup_ar" in r
                and method_of(r) == "specdiff" and int(knob(r, "gamma")) == gamma and int(knob(r, "steps")) == 1):
            return r
    return None


def _reference(rows: list[dict], s: str) -> dict | None:
    return next((r for r in rows if r["sweep"] == "reference" and r["set"] == s
                 and float(r["temperature"]) == 0.0), None)


def world_formula(row: dict, cost: dict) -> float | None:
    """τ · t_verify(1) / (t_draft + t_verify(γ+1)) with the world's own build-time costs."""
    ms = cost.get("verify_ms") or {}
    if "1" not in ms or len(ms) < 2 or "draft_ms" not in cost:
        return None
    window = ms[max(ms, key=int)]
    return row["mean_accept_len"] * ms["1"] / (cost["draft_ms"] + window)


def busy_speedup(row: dict, ref: dict) -> float | None:
    """Speed-up over ar on GPU-busy time (the rows' draft + verify seconds per new token): the measurement without
    the host's share (`other_s`: prefill, the loop, first-use captures), which the projection formula leaves out."""
    busy = [(r["drafter_s"] + r["verifier_s"]) / r["new_tokens"] for r in (ref, row)
            if r.get("new_tokens") and "drafter_s" in r and "verifier_s" in r]
    return busy[0] / busy[1] if len(busy) == 2 and busy[1] > 0 else None


def projection_vs_measured(run: RunData, projection: list[dict]) -> list[dict]:
    out = []
    for p in projection:
        if p["target"] != TARGET:
            continue
        arm, _, s = p["profile"].partition(" / ")
        c = projected_c(p)
        found = closest_world(run, c)
        entry = {"profile": p["profile"], "projected": p["speedup"], "c_projected": c, "world": None}
        if found is not None:
            world, cost = found
            rows = run.rows if world == run.main_world() else run.ratio_rows.get(world, [])
            row, ref = _chain_row(rows, arm, s, int(p.get("gamma", 16))), _reference(rows, s)
            entry.update(world=world, c_world=cost["ratio"])
            if row is not None and ref is not None:
                iv = samples.ratio(row, ref, "tps")
                entry.update(measured=iv.value, measured_ci=iv.text(), difference=iv.value / p["speedup"] - 1,
                             formula_world=world_formula(row, cost), measured_busy=busy_speedup(row, ref))
        out.append(entry)
    return out
