"""The χ² goodness-of-fit check every Monte Carlo test uses (no scipy: the quantile comes from torch.special)."""

from __future__ import annotations

import functools

import torch

ALPHA = 0.001  # false-alarm rate of one check


@functools.cache
def chi2_critical(dof: int, alpha: float = ALPHA) -> float:
    """Upper-α quantile of the χ² distribution with `dof` degrees of freedom (bisection on the exact tail)."""
    half = torch.tensor(dof / 2, dtype=torch.float64)

    def tail(x: float) -> float:  # P(X > x) = Q(dof/2, x/2), the regularised upper incomplete gamma
        return float(torch.special.gammaincc(half, torch.tensor(x / 2, dtype=torch.float64)))

    lo, hi = 0.0, dof + 10.0 * (2 * dof) ** 0.5 + 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > alpha else (lo, mid)
    return (lo + hi) / 2


def chi2_stat(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> tuple[float, int]:
    """(statistic, degrees of freedom) over the cells whose expected count exceeds `min_expected`."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    expected = probs * counts.sum()
    keep = expected > min_expected
    stat = (((counts - expected) ** 2) / expected.clamp_min(1e-300))[keep].sum()
    return float(stat), int(keep.sum()) - 1


def chi2_fits(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> bool:
    """counts (C,) of C cells ~ Multinomial(probs (C,)) at level α, and no count in a cell of probability 0.

    Cells expected to hold ≤ `min_expected` draws are left out of the statistic (min_expected=0 keeps every
    cell of positive probability). With a single cell left (all the mass in one outcome) there is nothing to
    test beyond the zero-probability check.
    """
    counts, probs = counts.double().flatten(), probs.double().flatten()
    assert counts[probs == 0].sum() == 0, "a cell with probability 0 was drawn"
    stat, dof = chi2_stat(counts, probs, min_expected)
    return dof < 1 or stat < chi2_critical(dof)


def first_two_law(model, params, prompt: list[int]) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The verifier's exact law of the first two sampled tokens after `prompt`: cells (x1, x2) with p(x1)·p(x2|x1) > 0
    and their probabilities (fp64; `params` warps the logits as the engine does)."""
    with torch.no_grad():
        def p_next(ids):
            return params.probs(model(torch.tensor([ids]), torch.arange(len(ids))[None])[0, -1].double())
        p1 = p_next(prompt)
        joint = {(a, b): float(p1[a] * pb) for a in p1.nonzero()[:, 0].tolist()
                 for b, pb in enumerate(p_next(prompt + [a])) if pb > 0}
    cells = sorted(joint)
    return cells, torch.tensor([joint[c] for c in cells], dtype=torch.float64)


def first_two_counts(engine, prompt: list[int], cells, samples: int, max_new: int = 2):
    """Counts over `cells` of the first two generated tokens in `samples` seeded runs, and the generations."""
    counts = torch.zeros(len(cells), dtype=torch.float64)
    gens = []
    for seed in range(samples):
        gen = engine.generate(prompt, max_new, seed=seed)
        counts[cells.index(tuple(gen.token_ids[:2]))] += 1
        gens.append(gen)
    return counts, gens
