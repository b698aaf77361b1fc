"""Per-prompt columns of sweep rows and the bootstrap intervals of the numbers the claims rest on.

Every row's `per_prompt` records (bench/decode_methods.generate_all) carry the request's own metrics and its
per-step trace (accepted drafts, committed tokens). Rows compared with each other are aligned by prompt id, so a
ratio is a paired bootstrap over the same prompts (report/stats.py).
"""

from __future__ import annotations

import numpy as np

from specdiff2.errors import DataError, require
from specdiff2.report import stats
from specdiff2.report.rundata import describe
from specdiff2.report.stats import Interval

LATE_FROM = 8  # "late window positions": j >= 8 of a γ=16 window


def _positions(row: dict) -> int:
    """Draft positions the row's method reported (the largest j with an alpha_j)."""
    return max((int(k[6:]) for k in row if k.startswith("alpha_") and k[6:].isdigit()), default=0)


def columns(row: dict) -> dict[str, dict[str, float]]:
    """prompt id -> {tokens, steps, tps, late}: late = mean over positions j >= LATE_FROM of the share of the
    prompt's steps that accepted at least j drafts, times the prompt's steps (a count: pooled over prompts it gives
    the row's mean α_j there, up to the few steps whose draft the token budget cut)."""
    records = row.get("per_prompt") or []
    require(bool(records), f"sweep row {describe(row)} has no per_prompt records: no interval can be computed; "
            "rerun its sweep (redo=[decode])", DataError)
    late_positions = max(_positions(row) - LATE_FROM + 1, 0)
    out = {}
    for p in records:
        m = p["metrics"]
        accepted = np.array([a for a, _ in p.get("steps") or []], dtype=np.float64)
        hits = np.clip(accepted - LATE_FROM + 1, 0, late_positions).sum() if late_positions else 0.0
        out[str(p["id"])] = {"tokens": float(m["new_tokens"]), "steps": float(m["verifier_steps"]),
                             "tps": float(m["tokens_per_s"]), "late": hits / max(late_positions, 1)}
    return out


def aligned(*rows: dict) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """The prompts every row ran (in the first row's order) and each row's columns over them."""
    cols = [columns(r) for r in rows]
    ids = [i for i in cols[0] if all(i in c for c in cols[1:])]
    require(bool(ids), "rows " + " vs ".join(describe(r) for r in rows) + " share no prompt id; compare rows of "
            "one prompt set", DataError)
    return ids, [{k: np.array([c[i][k] for i in ids]) for k in ("tokens", "steps", "tps", "late")} for c in cols]


STATS = {  # metric -> (columns it needs, statistic over them)
    "tau": (("tokens", "steps"), stats.tau),
    "tps": (("tps",), stats.mean),
    "late": (("late", "steps"), lambda late, steps: late.sum(1) / steps.sum(1)),
}


def interval(row: dict, metric: str) -> Interval:
    """The row's τ / tok/s / late acceptance with its bootstrap interval over prompts."""
    _, (cols,) = aligned(row)
    names, stat = STATS[metric]
    return stats.bootstrap(stat, *(cols[n] for n in names))


def ratio(a: dict, b: dict, metric: str) -> Interval:
    """metric(a) / metric(b), paired bootstrap over the prompts both rows ran."""
    _, (ca, cb) = aligned(a, b)
    names, stat = STATS[metric]
    return stats.bootstrap(stats.ratio_of(stat, len(names)), *(ca[n] for n in names), *(cb[n] for n in names))


def best_share(cells: dict, inside: set) -> Interval:
    """Best tok/s inside `inside` (keys of `cells`) over the best outside, paired over the cells' common prompts."""
    keys = list(cells)
    _, cols = aligned(*(cells[k] for k in keys))
    values = np.stack([c["tps"] for c in cols], axis=1)  # (n, cells)
    mask = np.array([k in inside for k in keys])
    require(mask.any() and not mask.all(), "best-setting claim needs cells inside and outside the claimed region",
            DataError)
    return stats.bootstrap(lambda v: stats.best_in_over_out(v, mask), values)
