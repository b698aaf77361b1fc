"""Bootstrap 95% intervals over prompts and the verdict rule that reads them (issue 25). Pure functions.

A sweep row holds one record per prompt (`per_prompt`: its token ids, per-step trace and metrics). Every number a
claim rests on is a statistic of those records, computed as the row computes it (τ = Σ tokens / Σ verifier steps,
tok/s = mean of the per-prompt tok/s, as Spec-Bench does), and its interval is the percentile bootstrap over
prompts: resample the prompts with replacement N_BOOT times (fixed seed), recompute the statistic, take the 2.5%
and 97.5% order statistics. A ratio between two rows (two arms, two methods, a method and `ar`) is a *paired*
bootstrap: both rows ran the same prompts, and each resample draws the same prompts for both, so the interval
reflects the prompt-to-prompt spread of the difference, not of each row alone.

The verdict rule (one place, quoted by the report):
- gain claims (the paper reports a ratio R): the bar is half the paper's gain, b = 1 + (R − 1) / 2;
  *reproduced* when the whole interval of the pocket ratio lies at or beyond b (low ≥ b), *refuted* when it
  lies short of b (high < b), *inconclusive* when it contains b. A claim of "better than 1x" uses b = 1.
- "no gain" claims (the paper reports none): an equivalence band [lo, hi] around 1; *reproduced* when the
  interval lies inside the band, *refuted* when it lies wholly outside, *inconclusive* otherwise.
- "best setting" claims (the paper names a region of a grid): the ratio of the best cell inside the region to the
  best cell outside it, b = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from specdiff2.errors import DataError, require

N_BOOT = 2000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    value: float  # the statistic on all prompts
    low: float
    high: float
    n: int  # prompts resampled

    def text(self, unit: str = "x", digits: int = 2) -> str:
        f = f"{{:.{digits}f}}"
        return f"{f.format(self.value)}{unit} [{f.format(self.low)}, {f.format(self.high)}]"

    @property
    def defined(self) -> bool:
        return not any(math.isnan(v) for v in (self.value, self.low, self.high))


def bootstrap(stat: Callable[..., np.ndarray], *per_prompt, n_boot: int = N_BOOT, seed: int = SEED,
              level: float = LEVEL) -> Interval:
    """Percentile bootstrap of `stat` over prompts.

    per_prompt: arrays aligned by prompt, each (n,) or (n, m). stat maps arrays with a leading resample axis,
    (B, n) or (B, n, m), to (B,) values; it is called once on all prompts (B = 1) and once on the resamples."""
    arrays = [np.asarray(a, dtype=np.float64) for a in per_prompt]
    n = arrays[0].shape[0]
    require(n > 0 and all(a.shape[0] == n for a in arrays), "bootstrap needs per-prompt arrays of one length "
            f"(got {[a.shape[0] for a in arrays]})", DataError)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (B, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(stat(*(a[None] for a in arrays))[0])
        boot = np.sort(np.asarray(stat(*(a[idx] for a in arrays)), dtype=np.float64))  # (B,)
    if np.isnan(boot).any():  # 0/0 in some resamples: no interval
        return Interval(value, math.nan, math.nan, n)
    tail = (1 - level) / 2
    low = boot[math.floor(tail * n_boot)]
    high = boot[math.ceil((1 - tail) * n_boot) - 1]
    return Interval(value, float(low), float(high), n)


# --- statistics of per-prompt columns (leading resample axis B; the prompt axis is axis 1) ---

def tau(tokens: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """τ: committed tokens per verifier step, pooled over the prompts (the row's own definition)."""
    return tokens.sum(1) / steps.sum(1)


def mean(values: np.ndarray) -> np.ndarray:
    """tok/s of a row: the per-prompt tok/s averaged (Spec-Bench)."""
    return values.mean(1)


def ratio_of(stat: Callable[..., np.ndarray], k: int) -> Callable[..., np.ndarray]:
    """stat(first k columns) / stat(the rest): a paired ratio between two rows' columns."""
    return lambda *cols: stat(*cols[:k]) / stat(*cols[k:])


def best_in_over_out(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """values (B, n, cells) per-prompt tok/s of each grid cell; inside (cells,) bool: best mean in / best mean out."""
    means = values.mean(1)  # (B, cells)
    return means[:, inside].max(1) / means[:, ~inside].max(1)


# --- the verdict rule (module docstring) ---

def threshold_verdict(iv: Interval, bar: float, what: str) -> tuple[str, str]:
    """reproduced when the interval lies at or beyond `bar` in the claimed direction (bar ≥ 1: upward)."""
    if not iv.defined:
        return "inconclusive", f"{iv.text()}: no interval (a resample divides 0 by 0)"
    up = bar >= 1
    beyond, short = (iv.low >= bar, iv.high < bar) if up else (iv.high <= bar, iv.low > bar)
    if beyond:
        return "reproduced", f"95% CI {iv.text()} {'≥' if up else '≤'} {bar:.2f}x ({what})"
    if short:
        return "refuted", f"95% CI {iv.text()} {'<' if up else '>'} {bar:.2f}x ({what})"
    return "inconclusive", f"95% CI {iv.text()} contains {bar:.2f}x ({what})"


def gain_verdict(iv: Interval, paper_ratio: float) -> tuple[str, str]:
    """Half the paper's gain: bar = 1 + (R − 1) / 2."""
    return threshold_verdict(iv, 1 + 0.5 * (paper_ratio - 1), "half the paper's gain")


def band_verdict(iv: Interval, lo: float, hi: float) -> tuple[str, str]:
    """A 'no gain' claim: the interval inside [lo, hi] reproduces it, wholly outside refutes it."""
    if not iv.defined:
        return "inconclusive", f"{iv.text()}: no interval"
    band = f"band [{lo:.2f}, {hi:.2f}]"
    if lo <= iv.low and iv.high <= hi:
        return "reproduced", f"95% CI {iv.text()} inside the {band}"
    if iv.high < lo or iv.low > hi:
        return "refuted", f"95% CI {iv.text()} outside the {band}"
    return "inconclusive", f"95% CI {iv.text()} straddles the {band}"


def plateau(values: list[float], k: int = 3, tol: float = 0.02) -> tuple[bool, str]:
    """Has a learning curve flattened? (flat, reason): the last value gained < tol (relative) over the value k
    evaluations earlier. Fewer than k + 1 values: not flat (the curve is too short to say)."""
    if len(values) <= k:
        return False, f"{len(values)} evaluations, need > {k}"
    before, last = values[-1 - k], values[-1]
    gain = (last - before) / max(abs(before), 1e-12)
    return gain < tol, f"{gain:+.1%} over the last {k} evaluations"
