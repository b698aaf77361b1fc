"""The papers' headline claims against a reproduction run: paper number, pocket number per prompt set, verdict.

Every verdict is computed from the rows, by one rule written here and in the report:
- reproduced: the measured gain (ratio − 1) is at least half the paper's gain, in the same direction (or the
  claimed best setting is where the pocket's best lies);
- refuted: the data are there and miss that bar;
- not comparable: rows are missing, or the claim is about wall-clock throughput and the run timed a CPU (tiny
  models on CPU measure Python overhead, not the memory-bound GPU regime the papers time);
- too few steps: a row the comparison rests on has fewer than MIN_STEPS verifier steps; then neither
  reproduced nor refuted is said. Every claim states its sample (prompts, new tokens, verifier steps per row).
A wall-clock reason names the pocket drafter's share of the step (drafting time / verifying time): the papers'
speed-ups assume drafting is cheap next to verifying a 32B-72B verifier. The speed-up over AR is also judged on
the projection to a 72B verifier (report/projection.py), labelled as a projection.
The paper numbers are from /work/shared/REFERENCE.md (SpecDiff-2 arXiv 2511.00606, DiffuSpec arXiv 2510.02358,
SpecDiff arXiv 2408.05636); the streak +30% throughput is issue 16's reading of SpecDiff-2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from specdiff2.report.rundata import RunData

LATE_FROM = 8  # "late window positions": j >= 8 of a γ=16 window
# Fewest verifier steps a compared row may have for a verdict: one prompt of 24 tokens (about 10 steps) says nothing;
# the GPU sweep's 2 prompts x 128 tokens give 60-130 steps per row.
MIN_STEPS = 50
CPU_TIMED = ("not comparable", "tok/s timed on CPU (tiny models): not the GPU regime")


@dataclass
class ClaimResult:
    claim: str
    paper: str
    set: str
    pocket: str
    verdict: str  # reproduced | refuted | not comparable | too few steps
    reason: str
    sample: str = ""  # what the verdict rests on: prompts, new tokens and verifier steps per row

    def as_dict(self) -> dict:
        return asdict(self)


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def sample_of(rows: list[dict]) -> str:
    """'2 prompts, 256 new tokens, 90 verifier steps' (ranges over rows, and the row count, when several)."""
    if not rows:
        return "–"
    prompts = [int(r.get("prompts", len(r.get("per_prompt", [])))) for r in rows]
    text = (f"{_span(prompts)} prompt{'s' if max(prompts) != 1 else ''}, "
            f"{_span([int(r.get('new_tokens', 0)) for r in rows])} new tokens, "
            f"{_span([int(r.get('verifier_steps', 0)) for r in rows])} verifier steps")
    return text + (f" per row ({len(rows)} rows)" if len(rows) > 1 else "")


def result(rows: list[dict], claim: str, paper: str, s: str, pocket: str, verdict: str, reason: str) -> ClaimResult:
    """A claim row with its sample; a reproduced/refuted verdict on a row of < MIN_STEPS steps is 'too few steps'."""
    fewest = min((int(r.get("verifier_steps", 0)) for r in rows), default=0)
    if verdict.startswith(("reproduced", "refuted")) and fewest < MIN_STEPS:
        label = " (projected)" if verdict.endswith("(projected)") else ""
        reason = f"{reason}; not judged: {fewest} verifier steps in a row < {MIN_STEPS}"
        verdict = f"too few steps{label}"
    return ClaimResult(claim, paper, s, pocket, verdict, reason, sample_of(rows))


def overrides_of(row: dict) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in row["overrides"].split())


def on_cpu(run: RunData) -> bool:
    return run.device == "cpu"


def gain_verdict(ratio: float | None, paper_ratio: float, speed: bool, run: RunData) -> tuple[str, str]:
    """The half-the-paper's-gain rule (module docstring)."""
    if ratio is None:
        return "not comparable", "no rows for this comparison in the run"
    if speed and on_cpu(run):
        return CPU_TIMED[0], CPU_TIMED[1] + " of the paper"
    need = 1 + 0.5 * (paper_ratio - 1)
    if ratio >= need:
        return "reproduced", f"{ratio:.2f}x >= {need:.2f}x (half the paper's gain)"
    return "refuted", f"{ratio:.2f}x < {need:.2f}x (half the paper's gain)"


def late_alpha(row: dict) -> float | None:
    # alpha_j only: rows also carry the conditional alpha_cond_j beside it
    vals = [v for k, v in row.items() if k.startswith("alpha_") and k[6:].isdigit() and int(k[6:]) >= LATE_FROM]
    return sum(vals) / len(vals) if vals else None


def cost_note(row: dict) -> str:
    """Why a wall-clock verdict may not carry over: drafting time relative to verifying time in this row."""
    d, v = row.get("drafter_s"), row.get("verifier_s")
    return f"; drafting {d / v:.1f}x the verify time" if d is not None and v else ""


def _steps(*rows: dict) -> int:
    return int(sum(r.get("verifier_steps", 0) for r in rows))


def _one(rows: list[dict]) -> dict | None:
    return rows[0] if rows else None


def streak_vs_ce(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        streak = _one(run.select(sweep="arms", drafter="streak", set=s, temperature=0.0))
        ce = _one(run.select(sweep="arms", drafter="ce", set=s, temperature=0.0))
        if streak is None or ce is None:
            continue
        ratio = streak["tokens_per_s"] / max(ce["tokens_per_s"], 1e-9)
        tau = streak["mean_accept_len"] / max(ce["mean_accept_len"], 1e-9)
        v, why = gain_verdict(ratio, 1.30, True, run)
        out.append(result([streak, ce], "streak-distillation: throughput over AR-distillation (CE)", "~+30% tok/s", s,
                          f"{ratio:.2f}x tok/s (τ {tau:.2f}x)", v, why + cost_note(streak)))
        late_s, late_c = late_alpha(streak), late_alpha(ce)
        if late_s is None or late_c is None:
            v, why, shown = "not comparable", f"no α_j for j >= {LATE_FROM} (γ < {LATE_FROM})", "–"
        elif late_c == 0 and late_s == 0:
            why = f"neither arm accepts any position j >= {LATE_FROM} in {_steps(streak, ce)} verifier steps"
            v, shown = "not comparable", "0 vs 0"
        else:
            ratio = late_s / late_c if late_c > 0 else float("inf")
            v, why = gain_verdict(ratio, 3.2, False, run)
            why += f" over {_steps(streak, ce)} verifier steps"
            shown = f"{ratio:.2f}x (mean α_{LATE_FROM}+ {late_s:.3f} vs {late_c:.3f})"
        out.append(result([streak, ce], f"streak-distillation: late-position (j >= {LATE_FROM}) acceptance over CE",
                          "3.2x", s, shown, v, why))
    return out


def self_select_drafters(run: RunData, s: str) -> list[str]:
    """Drafters with a K × drafter-temperature grid (sweeps named self_select*) on set s, greedy."""
    return list(dict.fromkeys(r["drafter"] for r in run.select(set=s, temperature=0.0)
                              if r["sweep"].startswith("self_select")))


def _self_select(run: RunData, s: str, drafter: str) -> dict[tuple[int, float], dict]:
    grid = {}
    for r in run.select(set=s, temperature=0.0, drafter=drafter):
        if r["sweep"].startswith("self_select"):
            o = overrides_of(r)
            grid[(int(o["decode.strategy.k"]), float(o["decode.strategy.drafter_temperature"]))] = r
    return grid


def self_selection(run: RunData) -> list[ClaimResult]:
    return [c for s in run.sets() for d in self_select_drafters(run, s)
            for c in _self_selection(run, _self_select(run, s, d), f"{s} ({d} drafter)")]


def _self_selection(run: RunData, grid: dict, s: str) -> list[ClaimResult]:
    out = []
    hot = [(grid[(8, t)]["tokens_per_s"] / max(grid[(1, t)]["tokens_per_s"], 1e-9), t)
           for t in (1.5, 2.0) if (8, t) in grid and (1, t) in grid]
    best = max(hot) if hot else None
    v, why = gain_verdict(best[0] if best else None, 1.20, True, run)
    out.append(result([grid[(8, best[1])], grid[(1, best[1])]] if best else [],
                      "self-selection: K=8 over K=1, drafter temperature 1.5-2", "up to +20% tok/s", s,
                      f"{best[0]:.2f}x at t={best[1]:g}" if best else "–", v, why))
    at8 = {t: r for (k, t), r in grid.items() if k == 8}
    if len(at8) >= 2 and not on_cpu(run):
        t_best = max(at8, key=lambda t: at8[t]["tokens_per_s"])
        ok = 1.5 <= t_best <= 2.0
        out.append(result(list(at8.values()), "self-selection: best drafter temperature at K=8", "1.5-2", s,
                          f"t={t_best:g} ({at8[t_best]['tokens_per_s']:.0f} tok/s)",
                          "reproduced" if ok else "refuted", f"best of {sorted(at8)} is {t_best:g}"))
    elif len(at8) >= 2:
        out.append(result(list(at8.values()), "self-selection: best drafter temperature at K=8", "1.5-2", s, "–",
                          *CPU_TIMED))
    if (8, 0.1) in grid and (1, 0.1) in grid:
        tau = grid[(8, 0.1)]["mean_accept_len"] / max(grid[(1, 0.1)]["mean_accept_len"], 1e-9)
        ok = tau <= 1.05
        out.append(result([grid[(8, 0.1)], grid[(1, 0.1)]],
                          "self-selection: no gain at drafter temperature 0.1 (τ, K=8 vs K=1)", "none",
                          s, f"τ {tau:.2f}x", "reproduced" if ok else "refuted",
                          f"τ gain {tau - 1:+.0%} ({'within' if ok else 'beyond'} ±5%)"))
    return out


def _diffuspec(run: RunData, s: str) -> dict[str, dict]:
    variants = {}
    for r in run.select(sweep="diffuspec", set=s, temperature=0.0):
        o = overrides_of(r)
        name = f"cps={o.get('decode.strategy.cps', 'true')} adl={o.get('decode.strategy.adl', 'true')}"
        if "decode/proxy@decode.models.proxy" in o:
            name += f" proxy={o['decode/proxy@decode.models.proxy']}"
        variants[name] = r
    return variants


def diffuspec(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        v = _diffuspec(run, s)
        both, fixed = v.get("cps=true adl=true"), v.get("cps=false adl=false")
        if both and fixed:
            ratio = both["tokens_per_s"] / max(fixed["tokens_per_s"], 1e-9)
            tau = both["mean_accept_len"] / max(fixed["mean_accept_len"], 1e-9)
            if on_cpu(run):
                verdict, why = CPU_TIMED
            else:
                verdict, why = ("reproduced", "CPS+ADL faster") if ratio > 1 else ("refuted", "fixed length faster")
            out.append(result([both, fixed], "DiffuSpec: CPS+ADL over fixed draft length", "> 1x", s,
                              f"{ratio:.2f}x tok/s (τ {tau:.2f}x)", verdict, why + cost_note(both)))
        timed = [r for r in v.values() if "speedup_ar" in r]
        if timed:
            best = max(timed, key=lambda r: r["speedup_ar"])
            verdict, why = gain_verdict(best["speedup_ar"], 3.0, True, run)
            out.append(result([best], "DiffuSpec: speed-up over AR (best variant)", "up to 3x", s,
                              f"{best['speedup_ar']:.2f}x", verdict, why))
    return out


def specdiff_gamma_steps(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        cells = {}
        for r in run.select(sweep="specdiff_gamma_steps", set=s, temperature=0.0):
            o = overrides_of(r)
            cells[(int(o["decode.strategy.gamma"]), int(o["decode.strategy.steps"]))] = r
        if not cells:
            continue
        gammas, steps = {g for g, _ in cells}, {t for _, t in cells}
        best = max(cells, key=lambda c: cells[c]["tokens_per_s"])
        shown = f"best γ={best[0]}, T={best[1]} ({cells[best]['tokens_per_s']:.0f} tok/s)"
        if on_cpu(run):
            verdict, why = CPU_TIMED
        elif not any(10 <= g <= 20 for g in gammas) or not any(4 <= t <= 6 for t in steps):
            verdict, why = "not comparable", f"grid γ {sorted(gammas)} × T {sorted(steps)} misses γ 10-20 or T 4-6"
        else:
            ok = 10 <= best[0] <= 20 and 4 <= best[1] <= 6
            verdict, why = ("reproduced" if ok else "refuted"), f"best of {len(cells)} cells"
        out.append(result(list(cells.values()), "SpecDiff: best γ and denoising steps T", "γ 10-20, T 4-6", s, shown,
                          verdict, why))
    return out


def specdiff2_speedup(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        rows = [r for r in run.select(set=s, temperature=0.0) if r["drafter"] == "streak" and "speedup_ar" in r]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["speedup_ar"])
        verdict, why = gain_verdict(best["speedup_ar"], 4.22, True, run)
        out.append(result([best], "SpecDiff-2: speed-up over AR (streak drafter, best method)",
                          "4.22x avg, up to 5.5x", s, f"{best['speedup_ar']:.2f}x ({best['method']})", verdict,
                          why + cost_note(best)))
    return out


PROJECTED_TARGET = "Qwen2.5-72B"


def specdiff2_projected(run: RunData, projection: list[dict]) -> list[ClaimResult]:
    """The same claim on the projection: the streak arm's measured α profile, a 7B-shape drafter's and the 72B
    verifier's step costs (report/projection.py). An acceptance-driven estimate, never a timing."""
    out = []
    for p in projection:
        arm, _, s = p["profile"].partition(" / ")
        if arm != "streak" or p["target"] != PROJECTED_TARGET:
            continue
        verdict, why = gain_verdict(p["speedup"], 4.22, False, run)
        out.append(result(run.select(sweep="arms", drafter="streak", set=s, temperature=0.0),
                          f"SpecDiff-2: speed-up over AR, projected to {PROJECTED_TARGET} (streak α, 7B drafter)",
                          "4.22x avg, up to 5.5x", s, f"{p['speedup']:.2f}x projected (τ {p['tau']:.2f})",
                          f"{verdict} (projected)", f"projection, not a measurement: {why}"))
    return out


CLAIMS = (streak_vs_ce, self_selection, diffuspec, specdiff_gamma_steps, specdiff2_speedup)


def evaluate_claims(run: RunData, projection: list[dict] | None = None) -> list[ClaimResult]:
    return [result for claim in CLAIMS for result in claim(run)] + specdiff2_projected(run, projection or [])
