"""Markdown sections of report.md (tables built from RunData; no numbers written by hand)."""

from __future__ import annotations

from specdiff2.report import samples
from specdiff2.report.claims import (
    MIN_PROMPTS,
    MIN_STEPS,
    ClaimResult,
    diffuspec_variants,
    gamma_steps_cells,
    late_alpha,
    self_select_drafters,
    self_select_grid,
    variant_name,
)
from specdiff2.report.projection import StepCosts
from specdiff2.report.rundata import STAGE_ORDER, RunData, method_of
from specdiff2.report.stats import plateau


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


def _model(info: dict, spec: dict) -> str:
    params = f"{info['params'] / 1e6:.1f}M" if "params" in info else "?"
    shape = f"{spec.get('num_layers', '?')} layers × {spec.get('hidden_size', '?')}" if spec else "?"
    return f"{params}, {shape}"


def _val_loss(info: dict) -> str:
    last = info.get("final_val") or {}
    key = "val/loss" if "val/loss" in last else "loss"
    return f"{last[key]:.3f}" if key in last else "?"


def world_line(run: RunData, name: str) -> str:
    """'World gpu72: verifier 85.6M, 48 layers × 384, val loss 2.310; c = 9.50.' (what every table ran on)"""
    world = run.worlds().get(name) or {}
    v, spec = (world.get("stages") or {}).get("verifier") or {}, (world.get("spec") or {}).get("verifier") or {}
    cost = (world.get("cost") or {}).get("ratio")
    return (f"World {name}: verifier {_model(v, spec)}, val loss {_val_loss(v)}; "
            f"c = {f'{cost:.2f}' if cost else '?'}.")


def world_rows(run: RunData) -> list[list]:
    rows = []
    for name, world in run.worlds().items():
        stages, spec, cost = world.get("stages") or {}, world.get("spec") or {}, world.get("cost") or {}
        v, d = stages.get("verifier") or {}, stages.get("drafter") or {}
        ms = cost.get("verify_ms") or {}
        rows.append([name + (" (this run)" if name == run.main_world() else " (ratio world)"),
                     _model(v, spec.get("verifier") or {}), _val_loss(v), _model(d, spec.get("drafter") or {}),
                     f"**{cost['ratio']:.2f}**" if "ratio" in cost else "?",
                     f"{cost['ratio_verify_window']:.2f}" if "ratio_verify_window" in cost else "?",
                     " / ".join(f"{ms[k]:.3f}" for k in sorted(ms, key=int)) or "?",
                     f"{cost['draft_ms']:.3f}" if "draft_ms" in cost else "?", cost.get("device", "?")])
    return rows


def worlds_section(run: RunData) -> str:
    rows = world_rows(run)
    if not rows:
        return ""
    note = ("What the pocket verifier is, and the verify:draft cost ratio **c** = t_verify(1 token) / t_draft(one "
            "γ-window pass with the prefix cache), measured on the build device after warm-up (GPU: CUDA-graph "
            "replays timed with CUDA events, i.e. GPU-busy time; CPU: perf_counter). The papers' pairs: 7B drafter for "
            "a 32B-72B verifier, c ≈ 5-10; the authors' logged 7B:7B run, c ≈ 1. The decode rows' own split "
            "(verify s / draft s) is in the speed-up tables.")
    return "## Pocket worlds\n\n" + note + "\n\n" + table(
        ["world", "verifier (params, shape)", "verifier val loss", "drafter (params, shape)", "c", "t_v(γ+1) / t_d",
         "t_verify ms (1 / γ+1)", "t_draft ms", "device"], rows)


def claims_section(results: list[ClaimResult], world: str = "") -> str:
    rows = [[c.claim, c.paper, c.set, c.sample, c.c, c.pocket, f"**{c.verdict}**", c.reason] for c in results]
    rule = ("Verdict rule (specdiff2/report/stats.py, claims.py): the *pocket* number is the statistic over all "
            "prompts with its 95% bootstrap interval over prompts (2000 resamples, seed 0; a ratio between two rows is "
            "a paired bootstrap over the prompts both ran). Gain claims: *reproduced* when the whole interval reaches "
            "half the paper's gain, 1 + (R − 1)/2, or more; *refuted* when the whole interval falls short of it; "
            "*inconclusive* when it contains it. 'No gain' claims: an equivalence band (±5%). 'Best setting' claims: "
            "the best cell inside the claimed region over the best outside, against 1. Data gates first: *not "
            "comparable* (rows missing, or wall-clock timed on CPU), *too few prompts* (< "
            f"{MIN_PROMPTS} in a row), *too few steps* (< {MIN_STEPS} verifier steps in a row). *c*: the world's "
            "verify:draft cost ratio, beside every speed claim. *(projected)* verdicts judge the projection "
            "section's speed-up (measured τ, real-shape step costs), not a timing.")
    return "## Claims\n\n" + rule + (f" {world}" if world else "") + "\n\n" + table(
        ["claim", "paper", "set", "sample", "c", "pocket [95% CI]", "verdict", "why"], rows)


def changes_section(results: list[ClaimResult], previous: list[dict] | None, source: str = "") -> str:
    """Claims whose verdict differs from an earlier run's claims.json (same claim and set), with both reasons."""
    if previous is None:
        return ""
    before = {(c["claim"], c["set"]): c for c in previous}
    rows = []
    for c in results:
        old = before.get((c.claim, c.set))
        if old is None or old["verdict"] != c.verdict:
            rows.append([c.claim, c.set, f"{old['verdict']} ({old.get('pocket', '–')}; {old.get('sample', '')})"
                         if old else "– (not in the earlier run)", f"{c.verdict} ({c.pocket}; {c.sample})",
                         old.get("reason", "") if old else "", c.reason])
    now = {(c.claim, c.set) for c in results}
    rows += [[k[0], k[1], f"{v['verdict']} ({v.get('pocket', '–')})", "– (not in this run)", v.get("reason", ""), ""]
             for k, v in before.items() if k not in now]
    head = f"## Verdicts changed since {source or 'the earlier run'}\n\n"
    if not rows:
        return head + "None: every claim of both runs has the same verdict."
    return head + table(["claim", "set", "before", "now", "why before", "why now"], rows)


def _ratio_ci(row: dict, ref: dict | None) -> str:
    if ref is None or row is ref:
        return f"{row.get('speedup_ar', 1.0):.2f}x"
    try:
        return samples.ratio(row, ref, "tps").text()
    except Exception:  # noqa: BLE001 — rows without per-prompt records (old runs): the point value only
        return f"{row['tokens_per_s'] / ref['tokens_per_s']:.2f}x"


def _refs(rows: list[dict], temperature: float) -> dict[str, dict]:
    """set -> the `ar` row speed-ups are measured against: the reference sweep's, else (T > 0 grids that carry
    their own) any `ar` row at that temperature."""
    at = [r for r in rows if float(r["temperature"]) == temperature]
    own = {r["set"]: r for r in at if r["sweep"] != "reference" and method_of(r) == "ar"}
    return own | {r["set"]: r for r in at if r["sweep"] == "reference"}


SPEED_SWEEPS = ("reference", "core", "core_streak", "sampled", "sampled_streak")


def speed_rows(run: RunData, s: str, temperature: float) -> list[dict]:
    """The speed-up table's rows: reference, core methods and the streak drafter's chain (arms grid included)."""
    return [r for r in run.select(set=s, temperature=temperature)
            if r["sweep"] in SPEED_SWEEPS or (r["sweep"] == "arms" and r["drafter"] == "streak")]


def speedup_section(run: RunData) -> str:
    """Speed-up table against `ar`, HF static and HF assisted (greedy), with the time split."""
    out = ["## Speed-up table (greedy)", "", world_line(run, run.main_world()) + " " +
           ("tok/s per prompt averaged (Spec-Bench); `x ar` from the same run with its 95% interval over prompts "
            "(paired); `x HF static` / `x HF assisted` where the HF stage ran on the set (its own, smaller sample: "
            "hf.prompts x hf.max_new_tokens). draft / verify / other: seconds summed over the timed prompts "
            "(verify / draft is the decode-time cost split).")]
    refs = _refs(run.rows, 0.0)
    for s in run.sets():
        hf = {r["kind"]: r for r in run.hf if r["set"] == s}
        rows = []
        for kind in ("dynamic", "static", "assisted"):
            if kind in hf:
                rows.append([hf[kind]["method"], "–", "–", f"{hf[kind]['tokens_per_s']:.1f}",
                             _ratio(hf[kind]["tokens_per_s"], hf.get("static")),
                             _ratio(hf[kind]["tokens_per_s"], hf.get("assisted")), "", "", "", ""])
        for r in speed_rows(run, s, 0.0):
            rows.append([r["method"], r["drafter"], f"{r['mean_accept_len']:.2f}", f"{r['tokens_per_s']:.1f}",
                         _ratio(r["tokens_per_s"], hf.get("static")), _ratio(r["tokens_per_s"], hf.get("assisted")),
                         _ratio_ci(r, refs.get(s)), f"{r['drafter_s']:.3f}", f"{r['verifier_s']:.3f}",
                         f"{r['other_s']:.3f}"])
        out += ["", f"### {s}", "", table(["method", "drafter", "τ", "tok/s", "x HF static", "x HF assisted",
                                            "x ar [95% CI]", "draft s", "verify s", "other s"], rows)]
    temps = sorted({float(r["temperature"]) for r in run.rows} - {0.0})
    sampled = [[r["set"], f"{t:g}", r["method"], r["drafter"], f"{r['mean_accept_len']:.2f}", f"{r['tokens_per_s']:.1f}",
                _ratio_ci(r, _refs(run.rows, t).get(r["set"]))] for t in temps for s in run.sets()
               for r in speed_rows(run, s, t)]
    if sampled:
        out += ["", "### sampled (T > 0; lossless rejection sampling, same seeds for every method)", "",
                table(["set", "T", "method", "drafter", "τ", "tok/s", "x ar [95% CI]"], sampled)]
    return "\n".join(out)


def _ratio(tps: float, base: dict | None) -> str:
    return f"{tps / base['tokens_per_s']:.2f}x" if base and base.get("tokens_per_s") else "–"


def ratios_section(run: RunData) -> str:
    """The same methods at every measured cost ratio: this run's world and the ratio worlds (greedy)."""
    if not run.ratio_rows:
        return ""
    worlds = run.worlds()
    by_world = {run.main_world(): [r for r in run.rows if r["sweep"] in ("reference", "core")], **run.ratio_rows}
    body = []
    for world, rows in by_world.items():
        c = (worlds.get(world) or {}).get("cost", {}).get("ratio")
        refs = _refs(rows, 0.0)
        for r in rows:
            if float(r["temperature"]) == 0.0 and r["drafter"] == "pocket":
                body.append([r["set"], world, f"{c:.2f}" if c else "?", r["method"], f"{r['mean_accept_len']:.2f}",
                             f"{r['tokens_per_s']:.1f}", _ratio_ci(r, refs.get(r["set"])),
                             f"{r['verifier_s'] / max(r['drafter_s'], 1e-9):.1f}" if r.get("drafter_s") else "–"])
    body.sort(key=lambda x: (x[0], x[3], x[1]))
    note = ("The pocket drafter (the same weights in every world) against verifiers of different depth: the speed-up "
            "moves with c at the same acceptance. *verify s / draft s*: the decode rows' own time split. "
            + " ".join(world_line(run, w) for w in by_world))
    return "## Speed-up at both cost ratios (greedy, pocket drafter)\n\n" + note + "\n\n" + table(
        ["set", "world", "c", "method", "τ", "tok/s", "x ar [95% CI]", "verify s / draft s"], body)


def _f(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def arms_section(run: RunData) -> str:
    rows, curves = [], []
    for arm, info in run.arms.items():
        history = info.get("val_history") or []
        last = history[-1] if history else (info.get("val_after") or info.get("val_before") or {})
        streaks = [h["expected_streak"] for h in history if "expected_streak" in h]
        flat = plateau(streaks) if len(streaks) > 1 else None
        rows.append([arm, f"{info.get('wall_s', 0):.0f}", (info.get("training") or {}).get("steps", "?"),
                     _f(last.get("expected_streak")), _f(last.get("val_train/expected_streak")),
                     "–" if flat is None else ("yes" if flat[0] else "no") + f" ({flat[1]})",
                     _f(last.get("loss"), 4), _f(last.get("val_train/loss"), 4), " ".join(info.get("overrides", []))])
        if history:
            curves.append(f"- **{arm}**: " + ", ".join(
                f"{h['step']}: {_f(h.get('expected_streak'))}"
                + (f" ({_f(h['val_train/expected_streak'])})" if "val_train/expected_streak" in h else "")
                for h in history) + _joint(last))
    if not rows:
        return ""
    note = ("Equal step budgets. *val*: held-out prompts' windows; *train*: a slice of the training windows "
            "(val_train/...): train far above val is overfitting to the trajectories. *flat*: val E[streak] gained "
            "< 2% over its last 3 evaluations (a fixed budget whose flattening is reported, not an early stop).")
    return ("## Distillation arms\n\n" + note + "\n\n" + table(
        ["arm", "train wall s", "steps", "val E[streak]", "train E[streak]", "flat", "val loss", "train loss",
         "overrides"], rows)
        + ("\n\nE[streak] by step, val (train):\n\n" + "\n".join(curves) if curves else ""))


def _joint(val: dict) -> str:
    """The joint prefix-match rate α_j (all of positions 1..j match, speculators' reference_acc_at_pos) next to
    the product of the per-position match rates: the gap is the correlation of hits within a window."""
    joint = {int(k[6:]): v for k, v in val.items() if k.startswith("alpha_") and k[6:].isdigit()}
    prod = {int(k.rsplit("_", 1)[1]): v for k, v in val.items() if k.startswith("marginal_prod_at_pos_")}
    shown = [j for j in (1, 2, 4, 8, 12, 16) if j in joint and j in prod]
    if not shown:
        return ""
    return "; at the end, joint α_j vs Π marginals: " + ", ".join(f"j={j} {joint[j]:.3f} vs {prod[j]:.3f}"
                                                                   for j in shown)


def projection_section(rows: list[dict], costs: StepCosts, compared: list[dict] | None = None) -> str:
    formula = ("**Projection, not a measurement.** τ = 1 + Σ_j α_j (α_j = fraction of steps whose first j drafted "
               "tokens were all accepted, as measured on the pocket world), speed-up = τ · t_AR / (t_draft + "
               "t_verify(γ+1)). Step costs: " + costs.source + "; targets larger than the measured shape are "
               "scaled by weight bytes (bandwidth-bound batch-1 decode, same fraction of the floor); the drafter "
               "keeps its measured (7B-class) cost. 72B does not fit one 80 GB GPU: its row assumes the same "
               "per-byte efficiency across GPUs. c = t_AR / t_draft.")
    body = table(["α profile", "target", "τ", "t_AR ms", "t_draft ms", "t_verify(γ+1) ms", "c", "speed-up"],
                 [[r["profile"], r["target"], f"{r['tau']:.2f}", f"{r['t_ar_ms']:.2f}", f"{r['t_draft_ms']:.2f}",
                   f"{r['t_verify_ms']:.2f}", f"{r['t_ar_ms'] / r['t_draft_ms']:.1f}", f"{r['speedup']:.2f}x"]
                  for r in rows])
    return "## Projection to real sizes\n\n" + formula + "\n\n" + body + compared_section(compared or [])


def compared_section(compared: list[dict]) -> str:
    """Projection for Qwen2.5-72B beside the measured speed-up at the closest measured cost ratio."""
    if not compared:
        return ""
    rows = []
    for e in compared:
        measured = e.get("measured_ci", "– (no such row in that world)" if e["world"] else "– (no world has a c)")
        diff = f"{e['difference']:+.0%}" if "difference" in e else "–"
        formula = f"{e['formula_world']:.2f}x" if e.get("formula_world") else "–"
        busy = (f"{e['measured_busy']:.2f}x ({e['measured_busy'] / e['projected'] - 1:+.0%})"
                if e.get("measured_busy") else "–")
        rows.append([e["profile"], f"{e['projected']:.2f}x", f"{e['c_projected']:.1f}", e["world"] or "–",
                     f"{e['c_world']:.1f}" if e.get("c_world") else "–", measured, diff, busy, formula])
    note = ("Qwen2.5-72B projection beside the measured speed-up over `ar` of the same one-pass γ chain with the same "
            "drafter and prompt set, in the pocket world whose build-time c is closest to the projection's (`pocket` "
            "and `unaligned` are the same weights). *difference*: measured / projected − 1 (goal: within ±20%). "
            "*formula at the world's costs*: the projection formula with that world's own step costs and the row's "
            "τ: when it matches the measurement but the projection does not, the cost ratios differ, not the formula. "
            "*GPU-busy*: the measured speed-up on the rows' draft + verify seconds alone (no host share: prefill, "
            "the loop, first-use captures), and its difference to the projection.")
    return "\n\n### Projection vs measurement at the closest cost ratio\n\n" + note + "\n\n" + table(
        ["α profile", "projected (72B)", "c projected", "closest world", "c world", "measured x ar [95% CI]",
         "difference", "measured, GPU-busy", "formula at the world's costs"], rows)


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
            grid = self_select_grid(run, s, d)
            best = max(grid, key=lambda c: grid[c]["tokens_per_s"])
            k1 = ", ".join(f"t={t:g} {grid[(1, t)]['tokens_per_s']:.0f}" for k, t in sorted(grid) if k == 1)
            notes["tps_vs_k"].append(f"{s}, {d}: best K={best[0]} t={best[1]:g} {grid[best]['tokens_per_s']:.0f} "
                                     f"tok/s (τ {grid[best]['mean_accept_len']:.2f}); K=1: {k1} tok/s")
        cells = gamma_steps_cells(run, s)
        if cells:
            hi = max(cells, key=lambda c: cells[c]["tokens_per_s"])
            lo = min(cells, key=lambda c: cells[c]["tokens_per_s"])
            notes["gamma_steps_heatmap"].append(
                f"{s}: best γ={hi[0]} T={hi[1]} {cells[hi]['tokens_per_s']:.0f} tok/s (τ {cells[hi]['mean_accept_len']:.2f}),"
                f" worst γ={lo[0]} T={lo[1]} {cells[lo]['tokens_per_s']:.0f} tok/s")
        variants = diffuspec_variants(run, s)
        if variants:
            notes["diffuspec_bars"].append(f"{s}: " + "; ".join(
                f"{variant_name(n)} {r.get('speedup_ar', float('nan')):.2f}x (τ {r['mean_accept_len']:.2f})"
                for n, r in variants.items()))
    return {name: " | ".join(lines) for name, lines in notes.items() if lines}
