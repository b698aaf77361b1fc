"""Per-position acceptance of one-pass drafts against a reference trajectory: α_j, defined once.

A window's draft is the drafter's argmax at each of its γ positions (greedy: temperature-free) and `hits` (W, γ)
marks where it equals the reference token (the verifier trajectory in distillation, the data in pretraining).
Position j counts among windows with ≥ j valid positions (`valid` is read as its prefix closure).

    α_j (joint prefix match)  = #windows whose positions 1..j all hit / #windows with ≥ j positions.
                                A greedy verification of the draft accepts ≥ j tokens exactly then, so α_j is
                                non-increasing in j; it is what vLLM's `speculators` logs as
                                reference_acc_at_pos_{j−1} (0-based positions there).
    m_j (marginal)            = #windows that hit at position j / #windows with ≥ j positions.
    Π_{i≤j} m_i               = the joint α_j would be if positions hit independently of each other. α_j above
                                it means hits cluster within windows (a window drafted right early tends to stay
                                right); the gap α_j − Π m_i is that intra-window correlation.

Counts are returned as sums, so batches (and ranks) are added before the ratios are taken.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from specdiff2.errors import SpecDiffError, require
from specdiff2.losses.streak import prefix_mask


@dataclass(frozen=True)
class PrefixMatchCounts:
    """Sums over windows, each (γ,): joint = Σ_w Π_{i≤j} hit, marginal = Σ_w hit_j, windows = #w with ≥ j."""

    joint: Tensor
    marginal: Tensor
    windows: Tensor

    def __add__(self, other: PrefixMatchCounts) -> PrefixMatchCounts:
        return PrefixMatchCounts(self.joint + other.joint, self.marginal + other.marginal,
                                 self.windows + other.windows)


def prefix_match_counts(hits: Tensor, valid: Tensor | None = None) -> PrefixMatchCounts:
    """hits (W, γ) bool; valid (W, γ) bool or None (all valid), read as its prefix closure."""
    require(hits.dim() == 2, f"hits must be (W, γ), got {tuple(hits.shape)}", SpecDiffError)
    valid = prefix_mask(valid, hits)  # (W, γ)
    scored = hits.bool() & valid  # (W, γ)
    return PrefixMatchCounts(scored.long().cumprod(dim=-1).sum(dim=0), scored.long().sum(dim=0),
                             valid.long().sum(dim=0))


def prefix_match_rates(counts: PrefixMatchCounts) -> tuple[Tensor, Tensor]:
    """(α (γ,), Π_{i≤j} m_i (γ,)) in float64; positions no window reaches give 0."""
    windows = counts.windows.double().clamp_min(1)
    joint = counts.joint.double() / windows
    marginal_prod = (counts.marginal.double() / windows).cumprod(dim=0)
    return joint, marginal_prod


def alpha_metrics(hits: Tensor, valid: Tensor | None = None) -> dict[str, Tensor]:
    """{"alpha_j": α_j} (j = 1..γ) of one batch of windows."""
    joint, _ = prefix_match_rates(prefix_match_counts(hits, valid))
    return {f"alpha_{j + 1}": a for j, a in enumerate(joint)}


def prefix_match_metrics(counts: PrefixMatchCounts) -> dict[str, Tensor]:
    """{"alpha_j": α_j, "marginal_prod_at_pos_j": Π_{i≤j} m_i} for j = 1..γ."""
    joint, marginal_prod = prefix_match_rates(counts)
    return {**{f"alpha_{j + 1}": a for j, a in enumerate(joint)},
            **{f"marginal_prod_at_pos_{j + 1}": m for j, m in enumerate(marginal_prod)}}
