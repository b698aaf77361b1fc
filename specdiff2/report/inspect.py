"""Helpers the notebooks call to look inside one decode run: per-prompt acceptance, where drafts fail, text with
the accepted spans highlighted. Input: rows of RUN_DIR/decode/rows.jsonl (`per_prompt` holds ids, decoded pieces
and (accepted, committed) per verifier step)."""

from __future__ import annotations

import html
from collections import Counter

from specdiff2.report.rundata import RunData


def find_row(run: RunData, **where) -> dict:
    rows = run.select(**where)
    if not rows:
        raise KeyError(f"no decode row with {where}; sweeps present: {sorted({r['sweep'] for r in run.rows})}")
    return rows[0]


def per_prompt_table(row: dict) -> list[dict]:
    """One line per prompt: τ, tok/s, steps, new tokens, stop reason, α_1..α_4."""
    out = []
    for p in row["per_prompt"]:
        m = p["metrics"]
        out.append({"id": p["id"], "τ": round(m["mean_accept_len"], 3), "tok/s": round(m["tokens_per_s"], 1),
                    "steps": len(p["steps"]), "new tokens": len(p["token_ids"]), "stop": p["stop_reason"],
                    **{f"α{j}": round(m.get(f"alpha_{j}", float("nan")), 3) for j in range(1, 5)}})
    return out


def accepted_histogram(row: dict) -> dict[int, int]:
    """How many verifier steps accepted 0, 1, 2, ... drafted tokens (all prompts): where the drafts fail."""
    counts = Counter(min(a, c) for p in row["per_prompt"] for a, c in p["steps"])
    return dict(sorted(counts.items()))


def spans(prompt: dict) -> list[tuple[str, bool]]:
    """(text, accepted) spans in output order: drafted-and-accepted tokens vs tokens the verifier produced."""
    pieces, out, i = prompt["pieces"], [], 0
    for accepted, committed in prompt["steps"]:
        accepted = min(accepted, committed)
        if accepted:
            out.append(("".join(pieces[i:i + accepted]), True))
        if committed > accepted:
            out.append(("".join(pieces[i + accepted:i + committed]), False))
        i += committed
    return out


def render_html(prompt: dict, colour: str = "#b7f5b0") -> str:
    """The generation as HTML: accepted draft spans on a green background, verifier tokens plain."""
    body = "".join(f'<span style="background:{colour}">{html.escape(text)}</span>' if ok else html.escape(text)
                   for text, ok in spans(prompt))
    return f'<pre style="white-space:pre-wrap">{body}</pre>'


def accepted_fraction(prompt: dict) -> float:
    """Share of generated tokens that came from accepted drafts."""
    total = sum(c for _, c in prompt["steps"])
    return sum(min(a, c) for a, c in prompt["steps"]) / max(total, 1)
