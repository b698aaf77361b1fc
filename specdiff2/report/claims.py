"""The papers' headline claims against a reproduction run: paper number, pocket number with its 95% interval over
prompts, verdict.

Every verdict comes from the rows by the rule of report/stats.py (quoted in the report): the pocket statistic's
bootstrap interval over prompts (paired between the rows a ratio compares) against half the paper's gain —
*reproduced* when the whole interval reaches that bar, *refuted* when it falls short of it, *inconclusive* when
it contains it; "no gain" claims use an equivalence band, "best setting" claims the best cell inside the claimed
region over the best outside (bar 1). Before any of that, the data gates:
- not comparable: rows are missing, or the claim is about wall-clock throughput and the run timed a CPU (tiny
  models on CPU measure Python overhead, not the memory-bound GPU regime the papers time);
- too few prompts / too few steps: a row the claim rests on has fewer than MIN_PROMPTS prompts (a bootstrap over
  fewer says little) or MIN_STEPS verifier steps.
Speed claims carry the pocket world's verify:draft cost ratio c (measured when the world was built): the papers'
speed-ups assume drafting is cheap next to verifying a 32B-72B verifier (c ~ 5-10). The speed-up over AR is also
judged on the projection to a 72B verifier (report/projection.py), labelled as a projection.
The paper numbers are from /work/shared/REFERENCE.md (SpecDiff-2 arXiv 2511.00606, DiffuSpec arXiv 2510.02358,
SpecDiff arXiv 2408.05636); the streak +30% throughput is issue 16's reading of SpecDiff-2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from specdiff2.report import samples
from specdiff2.report.rundata import RunData, knob, model_target
from specdiff2.report.samples import LATE_FROM
from specdiff2.report.stats import Interval, band_verdict, gain_verdict, threshold_verdict

MIN_STEPS = 50  # fewest verifier steps in a compared row
MIN_PROMPTS = 16  # fewest prompts in a compared row: the interval is a bootstrap over prompts
CPU_TIMED = ("not comparable", "tok/s timed on CPU (tiny models): not the GPU regime of the paper")


@dataclass
class ClaimResult:
    claim: str
    paper: str
    set: str
    pocket: str  # the statistic and its 95% interval
    verdict: str  # reproduced | refuted | inconclusive | not comparable | too few prompts | too few steps
    reason: str
    sample: str = ""  # what the verdict rests on: prompts, new tokens and verifier steps per row
    c: str = ""  # speed claims: the pocket world's verify:draft cost ratio

    def as_dict(self) -> dict:
        return asdict(self)


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _prompts(row: dict) -> int:
    return int(row.get("prompts", len(row.get("per_prompt", []))))


def sample_of(rows: list[dict]) -> str:
    """'32 prompts, 8192 new tokens, 4100 verifier steps' (ranges over rows, and the row count, when several)."""
    if not rows:
        return "–"
    prompts = [_prompts(r) for r in rows]
    text = (f"{_span(prompts)} prompt{'s' if max(prompts) != 1 else ''}, "
            f"{_span([int(r.get('new_tokens', 0)) for r in rows])} new tokens, "
            f"{_span([int(r.get('verifier_steps', 0)) for r in rows])} verifier steps")
    return text + (f" per row ({len(rows)} rows)" if len(rows) > 1 else "")


def cost_ratio(run: RunData) -> str:
    cost = (run.worlds().get(run.main_world()) or {}).get("cost") or {}
    return f"{cost['ratio']:.1f}" if "ratio" in cost else "?"


def gate(rows: list[dict], speed: bool, run: RunData) -> tuple[str, str] | None:
    """The data gates (module docstring), before any interval is computed."""
    if not rows:
        return "not comparable", "no rows for this comparison in the run"
    if speed and run.device == "cpu":
        return CPU_TIMED
    fewest = min(_prompts(r) for r in rows)
    if fewest < MIN_PROMPTS:
        return "too few prompts", f"not judged: {fewest} prompts in a row < {MIN_PROMPTS}"
    steps = min(int(r.get("verifier_steps", 0)) for r in rows)
    if steps < MIN_STEPS:
        return "too few steps", f"not judged: {steps} verifier steps in a row < {MIN_STEPS}"
    return None


def claim(run: RunData, rows: list[dict], name: str, paper: str, s: str, speed: bool, judge, *args) -> ClaimResult:
    """judge(*args) -> (pocket text, verdict, reason), called only when the data gates pass."""
    gated = gate(rows, speed, run)
    pocket, verdict, reason = ("–", *gated) if gated else judge(*args)
    return ClaimResult(name, paper, s, pocket, verdict, reason, sample_of(rows), cost_ratio(run) if speed else "")


# --- judges: (pocket text, verdict, reason) of one comparison ---

def judge_gain(a: dict, b: dict, paper_ratio: float, metric: str = "tps", label: str = "") -> tuple[str, str, str]:
    """metric(a) / metric(b) against half the paper's gain (tok/s ratios also show the τ ratio)."""
    iv = samples.ratio(a, b, metric)
    shown = iv.text() + (f" tok/s (τ {samples.ratio(a, b, 'tau').text()})" if metric == "tps" else "")
    return shown + (f" {label}" if label else ""), *gain_verdict(iv, paper_ratio)


def judge_faster(a: dict, b: dict) -> tuple[str, str, str]:
    iv = samples.ratio(a, b, "tps")
    return f"{iv.text()} tok/s (τ {samples.ratio(a, b, 'tau').text()})", *threshold_verdict(
        iv, 1.0, "faster than the baseline")


def judge_late(a: dict, b: dict) -> tuple[str, str, str]:
    la, lb = samples.interval(a, "late"), samples.interval(b, "late")
    if la.value == 0 and lb.value == 0:
        return "0 vs 0", "inconclusive", f"neither arm accepts any position j >= {LATE_FROM}"
    iv = samples.ratio(a, b, "late")
    return f"{iv.text()} (mean α_{LATE_FROM}+ {la.value:.3f} vs {lb.value:.3f})", *gain_verdict(iv, 3.2)


def judge_band(a: dict, b: dict) -> tuple[str, str, str]:
    iv = samples.ratio(a, b, "tau")
    return f"τ {iv.text()}", *band_verdict(iv, 0.95, 1.05)


def judge_best(cells: dict, inside: set, label) -> tuple[str, str, str]:
    """The best cell inside the claimed region over the best outside, against 1."""
    best = max(cells, key=lambda c: cells[c]["tokens_per_s"])
    shown = f"best {label(best)} ({cells[best]['tokens_per_s']:.0f} tok/s)"
    if not inside or inside == set(cells):
        return shown, "not comparable", f"the grid {sorted(cells)} has no cell inside, or none outside, the claim"
    iv = samples.best_share(cells, inside)
    return f"{shown}; best inside / best outside {iv.text()}", *threshold_verdict(
        iv, 1.0, "best inside the claimed region over the best outside")


def late_alpha(row: dict) -> float | None:
    """Mean α_j over j >= LATE_FROM of a row's aggregate (display; the claim uses samples' per-prompt counts).
    alpha_j only: rows also carry the conditional alpha_cond_j beside it."""
    vals = [v for k, v in row.items() if k.startswith("alpha_") and k[6:].isdigit() and int(k[6:]) >= LATE_FROM]
    return sum(vals) / len(vals) if vals else None


def _one(rows: list[dict]) -> dict | None:
    return rows[0] if rows else None


def _ref(run: RunData, s: str) -> dict | None:
    return _one(run.select(sweep="reference", set=s, temperature=0.0))


def streak_vs_ce(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        streak = _one(run.select(sweep="arms", drafter="streak", set=s, temperature=0.0))
        ce = _one(run.select(sweep="arms", drafter="ce", set=s, temperature=0.0))
        if streak is None or ce is None:
            continue
        out.append(claim(run, [streak, ce], "streak-distillation: throughput over AR-distillation (CE)",
                         "~+30% tok/s", s, True, judge_gain, streak, ce, 1.30))
        out.append(claim(run, [streak, ce], f"streak-distillation: late-position (j >= {LATE_FROM}) acceptance over "
                         "CE", "3.2x", s, False, judge_late, streak, ce))
    return out


def self_select_drafters(run: RunData, s: str) -> list[str]:
    """Drafters with a K × drafter-temperature grid (sweeps named self_select*) on set s, greedy."""
    return list(dict.fromkeys(r["drafter"] for r in run.select(set=s, temperature=0.0)
                              if r["sweep"].startswith("self_select")))


def self_select_grid(run: RunData, s: str, drafter: str) -> dict[tuple[int, float], dict]:
    """(K, drafter temperature) -> row, from the rows' resolved knobs."""
    return {(int(knob(r, "k")), float(knob(r, "drafter_temperature"))): r
            for r in run.select(set=s, temperature=0.0, drafter=drafter) if r["sweep"].startswith("self_select")}


def self_selection(run: RunData) -> list[ClaimResult]:
    return [c for s in run.sets() for d in self_select_drafters(run, s)
            for c in _self_selection(run, self_select_grid(run, s, d), f"{s} ({d} drafter)")]


def _self_selection(run: RunData, grid: dict, s: str) -> list[ClaimResult]:
    out = []
    hot = [t for t in (1.5, 2.0) if (8, t) in grid and (1, t) in grid]
    # the paper's "up to": the better of its two temperatures, by the point estimate
    t = max(hot, key=lambda t: grid[(8, t)]["tokens_per_s"] / max(grid[(1, t)]["tokens_per_s"], 1e-9)) if hot else 0
    pair = [grid[(8, t)], grid[(1, t)]] if hot else []
    out.append(claim(run, pair, "self-selection: K=8 over K=1, drafter temperature 1.5-2", "up to +20% tok/s", s,
                     True, judge_gain, *pair, 1.20, "tps", f"at t={t:g}"))
    at8 = {t: r for (k, t), r in grid.items() if k == 8}
    if len(at8) >= 2:
        out.append(claim(run, list(at8.values()), "self-selection: best drafter temperature at K=8", "1.5-2", s, True,
                         judge_best, at8, {t for t in at8 if 1.5 <= t <= 2.0}, lambda t: f"t={t:g}"))
    if (8, 0.1) in grid and (1, 0.1) in grid:
        out.append(claim(run, [grid[(8, 0.1)], grid[(1, 0.1)]],
                         "self-selection: no gain at drafter temperature 0.1 (τ, K=8 vs K=1)", "none", s, False,
                         judge_band, grid[(8, 0.1)], grid[(1, 0.1)]))
    return out


def diffuspec_variants(run: RunData, s: str) -> dict[tuple[bool, bool, str], dict]:
    """(cps, adl, proxy) -> row of the DiffuSpec ablation, from the rows' resolved fields."""
    out = {}
    for r in run.select(sweep="diffuspec", set=s, temperature=0.0):
        proxy = (model_target(r, "proxy") or "none").rsplit(".", 1)[-1]
        out[(bool(knob(r, "cps")), bool(knob(r, "adl")), proxy)] = r
    return out


def variant_name(key: tuple[bool, bool, str]) -> str:
    cps, adl, proxy = key
    return f"cps={str(cps).lower()} adl={str(adl).lower()} proxy={proxy}"


def diffuspec(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        v = diffuspec_variants(run, s)
        fixed = next((k for k in v if not k[0] and not k[1]), None)
        both = (True, True, fixed[2]) if fixed else None  # the same proxy as the fixed-length row
        if fixed and both in v:
            out.append(claim(run, [v[both], v[fixed]], "DiffuSpec: CPS+ADL over fixed draft length", "> 1x", s, True,
                             judge_faster, v[both], v[fixed]))
        ref = _ref(run, s)
        if v and ref is not None:
            best = max(v, key=lambda k: v[k]["tokens_per_s"])
            out.append(claim(run, [v[best], ref], "DiffuSpec: speed-up over AR (best variant)", "up to 3x", s, True,
                             judge_gain, v[best], ref, 3.0, "tps", f"({variant_name(best)})"))
    return out


def gamma_steps_cells(run: RunData, s: str) -> dict[tuple[int, int], dict]:
    """(γ, denoising steps T) -> row of the SpecDiff grid, from the rows' resolved knobs."""
    return {(int(knob(r, "gamma")), int(knob(r, "steps"))): r
            for r in run.select(sweep="specdiff_gamma_steps", set=s, temperature=0.0)}


def specdiff_gamma_steps(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        cells = gamma_steps_cells(run, s)
        if cells:
            inside = {c for c in cells if 10 <= c[0] <= 20 and 4 <= c[1] <= 6}
            out.append(claim(run, list(cells.values()), "SpecDiff: best γ and denoising steps T", "γ 10-20, T 4-6", s,
                             True, judge_best, cells, inside, lambda c: f"γ={c[0]}, T={c[1]}"))
    return out


def specdiff2_speedup(run: RunData) -> list[ClaimResult]:
    out = []
    for s in run.sets():
        rows = [r for r in run.select(set=s, temperature=0.0) if r["drafter"] == "streak" and "speedup_ar" in r]
        ref = _ref(run, s)
        if rows and ref is not None:
            best = max(rows, key=lambda r: r["speedup_ar"])
            out.append(claim(run, [best, ref], "SpecDiff-2: speed-up over AR (streak drafter, best method)",
                             "4.22x avg, up to 5.5x", s, True, judge_gain, best, ref, 4.22, "tps", f"({best['method']})"))
    return out


PROJECTED_TARGET = "Qwen2.5-72B"


def judge_projected(p: dict, row: dict) -> tuple[str, str, str]:
    """The projected speed-up is linear in τ: the row's τ interval carried through it."""
    tau = samples.interval(row, "tau")
    scale = p["speedup"] / tau.value
    iv = Interval(p["speedup"], tau.low * scale, tau.high * scale, tau.n)
    verdict, why = gain_verdict(iv, 4.22)
    return f"{iv.text()} projected (τ {p['tau']:.2f})", f"{verdict} (projected)", f"projection, not a measurement: {why}"


def specdiff2_projected(run: RunData, projection: list[dict]) -> list[ClaimResult]:
    """The same claim on the projection: the streak arm's measured α profile, a 7B-shape drafter's and the 72B
    verifier's step costs (report/projection.py). An acceptance-driven estimate, never a timing."""
    out = []
    for p in projection:
        arm, _, s = p["profile"].partition(" / ")
        if arm != "streak" or p["target"] != PROJECTED_TARGET:
            continue
        rows = run.select(sweep="arms", drafter="streak", set=s, temperature=0.0)
        result = claim(run, rows, f"SpecDiff-2: speed-up over AR, projected to {PROJECTED_TARGET} (streak α, 7B "
                       "drafter)", "4.22x avg, up to 5.5x", s, False, judge_projected, p, _one(rows))
        if not result.verdict.endswith("(projected)"):
            result.verdict += " (projected)"
        out.append(result)
    return out


CLAIMS = (streak_vs_ce, self_selection, diffuspec, specdiff_gamma_steps, specdiff2_speedup)


def evaluate_claims(run: RunData, projection: list[dict] | None = None) -> list[ClaimResult]:
    return [result for claim_fn in CLAIMS for result in claim_fn(run)] + specdiff2_projected(run, projection or [])
