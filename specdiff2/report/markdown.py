"""Markdown sections of report.md (tables built from RunData; no numbers written by hand)."""

from __future__ import annotations

from specdiff2.report.claims import (
    MIN_STEPS,
    ClaimResult,
    _diffuspec,
    _self_select,
    late_alpha,
    overrides_of,
    self_select_drafters,
)
from specdiff2.report.projection import StepCosts
from specdiff2.report.rundata import STAGE_ORDER, RunData


def table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def stages_section(run: RunData) -> str:
    rows = [[s, f"{run.stages[s].get('wall_s', 0):.1f}"] for s in STAGE_ORDER if s in run.stages]
    world = run.stages.get("pocket", {}).get("stages") or {}
    if world:  # the world's own build times (kept in world.json even when this run found it built)
        rows.insert(1, ["pocket (build, world.json)", ", ".join(f"{k} {v.get('wall_s', 0):.0f}"
                                                                 for k, v in world.items() if isinstance(v, dict))])
    total = sum(run.stages[s].get("wall_s", 0) for s in run.stages)
    rows.append(["**total**", f"{total:.1f}"])
    note = ("Wall time of each stage's first run (a skipped stage keeps the time it took when it ran). "
            f"Decode device: {run.device}.")
    return "## Stages\n\n" + note + "\n\n" + table(["stage", "wall s"], rows)


def speedup_section(run: RunData) -> str:
    """Speed-up table against `ar`, HF static and HF assisted (greedy), with the time split."""
    out = ["## Speed-up table (greedy)", "",
           ("tok/s per prompt averaged (Spec-Bench); `x ar` from the same run; `x HF static` / `x HF assisted` "
            "where the HF stage ran on the set. draft / verify / other: seconds summed over the timed prompts.")]
    for s in run.sets():
        hf = {r["kind"]: r for r in run.hf if r["set"] == s}
        rows = []
        for kind in ("dynamic", "static", "assisted"):
            if kind in hf:
                rows.append([hf[kind]["method"], "–", "–", f"{hf[kind]['tokens_per_s']:.1f}",
                             _ratio(hf[kind]["tokens_per_s"], hf.get("static")),
                             _ratio(hf[kind]["tokens_per_s"], hf.get("assisted")), "", "", "", ""])
        for r in run.select(set=s, temperature=0.0):
            if r["sweep"] not in ("reference", "core", "core_streak"):
                continue
            rows.append([r["method"], r["drafter"], f"{r['mean_accept_len']:.2f}", f"{r['tokens_per_s']:.1f}",
                         _ratio(r["tokens_per_s"], hf.get("static")), _ratio(r["tokens_per_s"], hf.get("assisted")),
                         f"{r.get('speedup_ar', 1.0):.2f}x", f"{r['drafter_s']:.3f}", f"{r['verifier_s']:.3f}",
                         f"{r['other_s']:.3f}"])
        out += ["", f"### {s}", "", table(["method", "drafter", "τ", "tok/s", "x HF static", "x HF assisted",
                                            "x ar", "draft s", "verify s", "other s"], rows)]
    sampled = [[r["set"], r["method"], r["drafter"], f"{r['mean_accept_len']:.2f}", f"{r['tokens_per_s']:.1f}",
                f"{r.get('speedup_ar', 1.0):.2f}x"] for r in run.rows
               if float(r["temperature"]) > 0 and r["sweep"] in ("reference", "core", "core_streak")]
    if sampled:
        out += ["", "### sampled (T > 0; lossless rejection sampling, same seeds for every method)", "",
                table(["set", "method", "drafter", "τ", "tok/s", "x ar"], sampled)]
    return "\n".join(out)


def _ratio(tps: float, base: dict | None) -> str:
    return f"{tps / base['tokens_per_s']:.2f}x" if base and base.get("tokens_per_s") else "–"


def claims_section(results: list[ClaimResult]) -> str:
    rows = [[c.claim, c.paper, c.set, c.sample, c.pocket, f"**{c.verdict}**", c.reason] for c in results]
    rule = ("Verdict rule (specdiff2/report/claims.py): *reproduced* when the pocket gain (ratio − 1) is at least "
            "half the paper's, or the claimed best setting is the pocket's best; *refuted* when the data miss that; "
            "*not comparable* when rows are missing or a wall-clock claim was timed on CPU; *too few steps* (never "
            f"reproduced or refuted) when a row it rests on has fewer than {MIN_STEPS} verifier steps. *sample*: "
            "prompts, new tokens and verifier steps of each row the verdict rests on. Wall-clock reasons give "
            "the pocket drafter's time relative to the verifier's; *(projected)* verdicts judge the projection "
            "section's speed-up (measured α, real-shape step costs), not a timing.")
    return "## Claims\n\n" + rule + "\n\n" + table(["claim", "paper", "set", "sample", "pocket", "verdict", "why"],
                                                     rows)


def arms_section(run: RunData) -> str:
    rows = []
    for arm, info in run.arms.items():
        after = info.get("val_after") or info.get("val_before") or {}
        rows.append([arm, f"{info.get('wall_s', 0):.0f}", f"{after.get('expected_streak', float('nan')):.3f}",
                     " ".join(info.get("overrides", []))])
    if not rows:
        return ""
    return "## Distillation arms\n\n" + table(["arm", "train wall s", "val E[streak]", "overrides"], rows)


def projection_section(rows: list[dict], costs: StepCosts) -> str:
    formula = ("**Projection, not a measurement.** τ = 1 + Σ_j α_j (α_j = fraction of steps whose first j drafted "
               "tokens were all accepted, as measured on the pocket world), speed-up = τ · t_AR / (t_draft + "
               "t_verify(γ+1)). Step costs: " + costs.source + "; targets larger than the measured shape are "
               "scaled by weight bytes (bandwidth-bound batch-1 decode, same fraction of the floor); the drafter "
               "keeps its measured (7B-class) cost. 72B does not fit one 80 GB GPU: its row assumes the same "
               "per-byte efficiency across GPUs.")
    body = table(["α profile", "target", "τ", "t_AR ms", "t_draft ms", "t_verify(γ+1) ms", "speed-up"],
                 [[r["profile"], r["target"], f"{r['tau']:.2f}", f"{r['t_ar_ms']:.2f}", f"{r['t_draft_ms']:.2f}",
                   f"{r['t_verify_ms']:.2f}", f"{r['speedup']:.2f}x"] for r in rows])
    return "## Projection to real sizes\n\n" + formula + "\n\n" + body


def errors_section(run: RunData) -> str:
    rows = [[r["sweep"], r["drafter"], r["set"], r["temperature"], r["method"], r["error"][:120]] for r in run.errors]
    for stage in ("hf", "real_shapes"):
        for err in run.stages.get(stage, {}).get("errors") or []:
            rows.append([stage, "", err.get("set", "") if isinstance(err, dict) else "", "", "",
                         (err["error"] if isinstance(err, dict) else err)[:120]])
    if not rows:
        return ""
    return "## What failed\n\n" + table(["sweep / stage", "drafter", "set", "T", "method", "error"], rows)


def figure_notes(run: RunData) -> dict[str, str]:
    """One line of numbers under each figure, so the report reads without the pictures."""
    notes: dict[str, list[str]] = {"alpha_per_arm": [], "tps_vs_k": [], "gamma_steps_heatmap": [],
                                   "diffuspec_bars": []}
    for s in run.sets():
        arms = run.select(sweep="arms", set=s, temperature=0.0)
        if arms:
            notes["alpha_per_arm"].append(f"{s}: " + "; ".join(
                f"{r['drafter']} τ {r['mean_accept_len']:.2f}, α1 {r.get('alpha_1', 0):.2f}, "
                f"α4 {r.get('alpha_4', 0):.2f}, mean α8+ {late_alpha(r) or 0:.3f}" for r in arms))
        for d in self_select_drafters(run, s):
            grid = _self_select(run, s, d)
            best = max(grid, key=lambda c: grid[c]["tokens_per_s"])
            k1 = ", ".join(f"t={t:g} {grid[(1, t)]['tokens_per_s']:.0f}" for k, t in sorted(grid) if k == 1)
            notes["tps_vs_k"].append(f"{s}, {d}: best K={best[0]} t={best[1]:g} {grid[best]['tokens_per_s']:.0f} "
                                     f"tok/s (τ {grid[best]['mean_accept_len']:.2f}); K=1: {k1} tok/s")
        cells = {(int(overrides_of(r)["decode.strategy.gamma"]), int(overrides_of(r)["decode.strategy.steps"])): r
                 for r in run.select(sweep="specdiff_gamma_steps", set=s, temperature=0.0)}
        if cells:
            hi = max(cells, key=lambda c: cells[c]["tokens_per_s"])
            lo = min(cells, key=lambda c: cells[c]["tokens_per_s"])
            notes["gamma_steps_heatmap"].append(
                f"{s}: best γ={hi[0]} T={hi[1]} {cells[hi]['tokens_per_s']:.0f} tok/s (τ {cells[hi]['mean_accept_len']:.2f}),"
                f" worst γ={lo[0]} T={lo[1]} {cells[lo]['tokens_per_s']:.0f} tok/s")
        variants = _diffuspec(run, s)
        if variants:
            notes["diffuspec_bars"].append(f"{s}: " + "; ".join(
                f"{n} {r.get('speedup_ar', float('nan')):.2f}x (τ {r['mean_accept_len']:.2f})"
                for n, r in variants.items()))
    return {name: " | ".join(lines) for name, lines in notes.items() if lines}
