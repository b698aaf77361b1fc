"""Streak-distillation objectives (SpecDiff-2, arXiv 2511.00606, Def. 5.1) and the helpers every loss shares.

Conventions: `q` = drafter, `p` = verifier. A window has γ positions; `mask` (B, γ) bool marks valid positions
(None = all valid). All losses are pure functions that return a `LossOutput` whose `loss` is a scalar to
MINIMISE. Work is done in at least fp32 (bf16/fp16 logits are upcast; fp64 stays fp64 so tests can be exact).
The verifier side is always detached: it is a fixed target, never trained.

Streak masks are prefixes: the expected streak of a window of valid length L sums m = 1..L, and a streak cannot
continue past an invalid position, so a non-prefix mask is read as its prefix closure (every position after the
first False counts as invalid). Per-position losses (CE, KL, TVD) use the mask as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from specdiff2.errors import SpecDiffError, require


@dataclass(frozen=True)
class LossOutput:
    """What every loss function returns.

    loss: () scalar to minimise; carries the autograd graph.
    metrics: detached () scalars under plain names (e.g. "expected_streak"); the caller adds "train/" etc.
    per_row: (B,) detached per-row metric: the expected streak of each window for streak losses, the row's mean
        per-position loss for CE/KL/TVD, the row's weighted masked CE for MDLM.
    per_position: (γ,) detached mean acceptance proxy at each window position over valid windows (streak
        losses only): q_j(x_j) for `streak_loss`, a_j for `streak_soft_loss`. It is the paper's Fig. 2 profile.
    """

    loss: Tensor
    metrics: dict[str, Tensor]
    per_row: Tensor
    per_position: Tensor | None = None


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    # bf16 log-probs keep ~3 significant digits, too few for products over γ positions; fp64 stays for tests.
    return torch.promote_types(dtype, torch.float32)


def scaled_logits(drafter_logits: Tensor, temperature: float) -> Tensor:
    """Drafter logits in the work dtype divided by the temperature (no copy when already fp32 and T == 1)."""
    require(temperature > 0, f"temperature must be > 0, got {temperature}; use 1.0 to match deployment sampling")
    logits = drafter_logits.to(work_dtype(drafter_logits.dtype))
    return logits if temperature == 1.0 else logits / temperature


def position_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    """`mask` as bool, or all True with the shape/device of `like` (B, N) when mask is None."""
    if mask is None:
        return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    require(mask.shape == like.shape[:2], f"mask shape {tuple(mask.shape)} != {tuple(like.shape[:2])}; pass (B, γ)",
            SpecDiffError)
    return mask.bool()


def prefix_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    """Prefix closure of `mask` (B, γ): True up to (not including) the first False of each row."""
    valid = position_mask(mask, like)
    return (~valid).cumsum(dim=-1) == 0  # (B, γ)


def check_window(drafter_logits: Tensor, targets: Tensor | None = None) -> None:
    require(drafter_logits.dim() == 3 and drafter_logits.shape[1] >= 1,
            f"drafter_logits must be (B, γ, V) with γ >= 1, got {tuple(drafter_logits.shape)}", SpecDiffError)
    if targets is not None:
        require(targets.shape == drafter_logits.shape[:2],
                f"targets shape {tuple(targets.shape)} != {tuple(drafter_logits.shape[:2])}; pass (B, γ) token ids",
                SpecDiffError)


def target_logprobs(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """log q(x) (B, N) at the target ids; exactly 0 at invalid positions.

    Invalid targets (pad, -100, ids past V) are replaced by 0 before the gather so they never index out of range.
    gather − logsumexp instead of log_softmax: autograd then keeps no extra (B, N, V) tensor alive.
    """
    safe_targets = targets.masked_fill(~valid, 0).unsqueeze(-1)  # (B, N, 1)
    picked = logits.gather(-1, safe_targets).squeeze(-1)  # (B, N)
    return torch.where(valid, picked - torch.logsumexp(logits, dim=-1), 0.0)


def verifier_support(
    logits: Tensor,
    valid: Tensor,
    verifier_probs: Tensor | None,
    verifier_topk_ids: Tensor | None,
    verifier_topk_logprobs: Tensor | None,
) -> tuple[Tensor, Tensor, bool]:
    """(log_p, log_q, dense): both (B, γ, S) on the verifier's stored support S.

    Dense form: S is the whole vocabulary (verifier_probs (B, γ, V)). Sparse form: S is the stored top-k
    (verifier_topk_ids (B, γ, k) distinct ids, verifier_topk_logprobs (B, γ, k)); -inf logprobs are allowed
    (e.g. padding of a top-p-truncated list). At invalid positions log_p is replaced by 0 (a harmless finite
    stand-in: those positions are masked out downstream but must not produce NaN first).
    """
    dense = verifier_probs is not None
    sparse = verifier_topk_ids is not None or verifier_topk_logprobs is not None
    require(dense != sparse, "pass either verifier_probs or (verifier_topk_ids, verifier_topk_logprobs), not both",
            SpecDiffError)
    if dense:
        require(verifier_probs.shape == logits.shape,
                f"verifier_probs shape {tuple(verifier_probs.shape)} != drafter_logits {tuple(logits.shape)}",
                SpecDiffError)
        log_q = torch.log_softmax(logits, dim=-1)  # (B, γ, V)
        log_p = verifier_probs.detach().to(logits.dtype).log()  # (B, γ, V); p = 0 gives -inf, handled below
    else:
        require(verifier_topk_ids is not None and verifier_topk_logprobs is not None
                and verifier_topk_ids.shape == verifier_topk_logprobs.shape
                and verifier_topk_ids.shape[:2] == logits.shape[:2],
                "sparse verifier needs verifier_topk_ids and verifier_topk_logprobs, both (B, γ, k)", SpecDiffError)
        safe_ids = verifier_topk_ids.masked_fill(~valid.unsqueeze(-1), 0)  # (B, γ, k)
        log_q = logits.gather(-1, safe_ids) - torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, γ, k)
        log_p = verifier_topk_logprobs.detach().to(logits.dtype)  # (B, γ, k)
    log_p = torch.where(valid.unsqueeze(-1), log_p, 0.0)
    return log_p, log_q, dense


def log_overlap(log_p: Tensor, log_q: Tensor) -> Tensor:
    """log a (B, γ) with a = Σ_{v∈S} min(p(v), q(v)): the rejection-sampling acceptance probability.

    Computed as logsumexp of min(log p, log q), so tiny overlaps stay exact. Where p vanishes on all of S the
    overlap is 0 and log a = -inf; only there is the logsumexp input replaced (its backward would be 0·NaN).
    """
    min_logprobs = torch.minimum(log_p, log_q)  # (B, γ, S)
    empty = torch.isneginf(min_logprobs).all(dim=-1)  # (B, γ)
    min_logprobs = torch.where(empty.unsqueeze(-1), 0.0, min_logprobs)
    return torch.where(empty, float("-inf"), torch.logsumexp(min_logprobs, dim=-1))


def expected_streak(log_accept: Tensor, mask: Tensor | None = None) -> Tensor:
    """E (B,) = Σ_{m=1..L} Π_{j≤m} a_j from log a_j (B, γ); L = valid prefix length of each row.

    This is the expected length of the leading run of accepts when position j is accepted independently with
    probability a_j. Exact in log space (cumsum, then exp): no floor, so the gradient is exact:
    dE/d log a_j = Σ_{m≥j} Π_{i≤m} a_i. log a_j = -inf is allowed (the streak stops there, gradients stay finite).
    """
    valid = prefix_mask(mask, log_accept)
    log_prefix = torch.where(valid, log_accept, 0.0).cumsum(dim=-1)  # (B, γ): log Π_{j≤m} a_j
    return torch.where(valid, log_prefix.exp(), 0.0).sum(dim=-1)


def _streak_output(log_accept: Tensor, valid: Tensor, normalize: bool, name: str) -> tuple[LossOutput, Tensor]:
    streak = expected_streak(log_accept, valid)  # (B,)
    # Mean over windows with at least one valid position: empty rows (padding) must not dilute the loss.
    windows = valid[:, 0].sum().clamp_min(1)
    mean_streak = streak.sum() / windows
    window = log_accept.shape[1]
    loss = -(mean_streak / window if normalize else mean_streak)
    accept = torch.where(valid, log_accept.exp(), 0.0)  # (B, γ)
    per_position = accept.sum(dim=0) / valid.sum(dim=0).clamp_min(1)  # (γ,)
    mean_accept = accept.sum() / valid.sum().clamp_min(1)
    out = LossOutput(loss, {name: mean_streak.detach()}, streak.detach(), per_position.detach())
    return out, mean_accept.detach()


def streak_loss(
    drafter_logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    normalize: bool = False,
) -> LossOutput:
    """Streak distillation on one verifier trajectory: loss = −mean_windows Σ_{m≤L} Π_{j≤m} q_j(x_j).

    drafter_logits (B, γ, V): the drafter's marginals for the γ masked window positions (already aligned, i.e.
    the caller applied the logit shift); targets (B, γ) long: the verifier trajectory tokens x; mask (B, γ) bool,
    read as its prefix closure. q = softmax(logits / temperature). normalize=True divides by γ (loss in [−1, 0]).
    Fully masked windows contribute 0 and are left out of the mean. Metric: "expected_streak" (mean E).
    """
    check_window(drafter_logits, targets)
    valid = prefix_mask(mask, targets)
    logits = scaled_logits(drafter_logits, temperature)  # (B, γ, V)
    log_q_targets = target_logprobs(logits, targets, valid)  # (B, γ): log q_j(x_j)
    out, _ = _streak_output(log_q_targets, valid, normalize, "expected_streak")
    return out


def streak_soft_loss(
    drafter_logits: Tensor,
    verifier_probs: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    verifier_topk_ids: Tensor | None = None,
    verifier_topk_logprobs: Tensor | None = None,
    temperature: float = 1.0,
    normalize: bool = False,
) -> LossOutput:
    """Soft streak: loss = −mean_windows Σ_{m≤L} Π_{j≤m} a_j, a_j = Σ_v min(p_j(v), q_j(v)).

    a_j is the exact acceptance probability of rejection sampling at position j, so E is the expected streak
    of lossless speculative decoding when positions are accepted independently (verifier conditionals taken
    along the trajectory). Pass verifier_probs (B, γ, V), or the sparse top-k form (verifier_topk_ids,
    verifier_topk_logprobs), each (B, γ, k): the sum then runs over the stored support only, which gives a
    LOWER bound on a_j (and on E), exact when the support holds all of p's mass. Ids must be distinct.
    Metrics: "expected_streak_soft" (mean E), "soft_acceptance" (mean a_j over valid positions).
    """
    check_window(drafter_logits)
    valid = prefix_mask(mask, drafter_logits)
    logits = scaled_logits(drafter_logits, temperature)  # (B, γ, V)
    log_p, log_q, _ = verifier_support(logits, valid, verifier_probs, verifier_topk_ids, verifier_topk_logprobs)
    log_accept = log_overlap(log_p, log_q)  # (B, γ)
    out, mean_accept = _streak_output(log_accept, valid, normalize, "expected_streak_soft")
    out.metrics["soft_acceptance"] = mean_accept
    return out
