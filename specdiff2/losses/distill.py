"""AR-style distillation baselines (DistillSpec family): per-position CE, forward KL, reverse KL and TVD.

These treat window positions as exchangeable: each valid position counts once and the loss is the mean over
valid positions of the whole batch (mask used as given, not as a prefix: a position's loss does not depend on
its neighbours). SpecDiff-2 compares streak distillation against exactly these. Verifier inputs are detached.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from specdiff2.losses.streak import (
    LossOutput,
    check_window,
    log_overlap,
    position_mask,
    scaled_logits,
    target_logprobs,
    verifier_support,
)


def _mean_output(per_position: Tensor, valid: Tensor, name: str) -> LossOutput:
    """Token-mean over valid positions of a (B, γ) per-position loss that is already 0 at invalid positions."""
    loss = per_position.sum() / valid.sum().clamp_min(1)
    per_row = per_position.sum(dim=-1) / valid.sum(dim=-1).clamp_min(1)  # (B,)
    return LossOutput(loss, {name: loss.detach()}, per_row.detach())


def ce_loss(
    drafter_logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
) -> LossOutput:
    """Mean CE −log q_j(x_j) on verifier tokens x over valid positions (AR-distillation baseline).

    drafter_logits (B, N, V), targets (B, N) long, mask (B, N) bool. Metrics: "ce", "accuracy" (drafter
    argmax == verifier token, over valid positions). Without a mask the loss is torch's fused cross_entropy over
    all B·N positions (pocket pretraining's numerics, kept bit for bit; the masked path agrees to rounding).
    """
    check_window(drafter_logits, targets)
    valid = position_mask(mask, targets)
    logits = scaled_logits(drafter_logits, temperature)  # (B, N, V)
    if mask is None:
        return _fused_ce(logits, targets)
    ce = -target_logprobs(logits, targets, valid)  # (B, N), 0 at invalid positions
    out = _mean_output(ce, valid, "ce")
    hits = (logits.detach().argmax(dim=-1) == targets) & valid
    out.metrics["accuracy"] = hits.sum() / valid.sum().clamp_min(1)
    return out


def _fused_ce(logits: Tensor, targets: Tensor) -> LossOutput:
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    with torch.no_grad():
        per_row = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
        accuracy = (logits.argmax(dim=-1) == targets).float().mean()
    return LossOutput(loss, {"ce": loss.detach(), "accuracy": accuracy}, per_row.mean(dim=-1))


def forward_kl_loss(
    drafter_logits: Tensor,
    verifier_probs: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    verifier_topk_ids: Tensor | None = None,
    verifier_topk_logprobs: Tensor | None = None,
    temperature: float = 1.0,
) -> LossOutput:
    """Mean forward KL(p ‖ q) per valid position. Metric: "kl".

    Dense form: verifier_probs (B, γ, V), exact (0·log 0 = 0, also where q = 0 too). Sparse form
    (verifier_topk_ids, verifier_topk_logprobs (B, γ, k)): KL between the two distributions coarsened to the
    listed support S plus one "rest of the vocabulary" bucket,
        Σ_{v∈S} p(v) log(p(v)/q(v)) + r_p log(r_p / r_q),   r = 1 − mass on S.
    S is the set of entries with a finite log-prob: padding (any id, log-prob −inf, up to a whole padded row)
    belongs to the rest bucket, so a padded list gives exactly the loss and gradient of the unpadded one.
    Finite entries must have distinct ids. The loss is ≥ 0, a lower bound on the full KL (data processing
    inequality: {v} for v ∈ S and the rest form a partition of the vocabulary), 0 when q = p, and exact when S
    holds all of p. The bucket keeps q from being rewarded for piling p's tail mass onto S (what renormalised
    top-k KD does). r_q is floored at machine epsilon: below that 1 − Σ_S q is rounding noise (e.g. k = V), not
    signal; the floor only lowers the bucket term, so the bound still holds.
    """
    check_window(drafter_logits)
    valid = position_mask(mask, drafter_logits)
    logits = scaled_logits(drafter_logits, temperature)  # (B, γ, V)
    log_p, log_q, dense = verifier_support(logits, valid, verifier_probs, verifier_topk_ids, verifier_topk_logprobs)
    p = log_p.exp()  # (B, γ, S)
    on_support = p > 0  # (B, γ, S): zero-probability and padded entries carry no term
    # Finite stand-ins where p = 0 keep 0·(−inf) and 0·∞ (q = 0 there too) out of the loss and of autograd.
    safe_log_p = torch.where(on_support, log_p, 0.0)
    safe_log_q = torch.where(on_support, log_q, 0.0)
    kl = (p * (safe_log_p - safe_log_q)).sum(dim=-1)  # (B, γ)
    if not dense:
        mass_p = torch.where(on_support, p, 0.0).sum(dim=-1)  # (B, γ) verifier mass on S
        mass_q = torch.where(on_support, log_q.exp(), 0.0).sum(dim=-1)  # (B, γ) drafter mass on S
        rest_p = (1.0 - mass_p).clamp_min(0)
        rest_q = (1.0 - mass_q).clamp_min(torch.finfo(logits.dtype).eps)
        safe_log_rest_p = torch.where(rest_p > 0, rest_p, 1.0).log()
        kl = kl + rest_p * (safe_log_rest_p - rest_q.log())
    return _mean_output(torch.where(valid, kl, 0.0), valid, "kl")


def reverse_kl_loss(
    drafter_logits: Tensor,
    verifier_probs: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    verifier_topk_ids: Tensor | None = None,
    verifier_topk_logprobs: Tensor | None = None,
    temperature: float = 1.0,
) -> LossOutput:
    """Mean reverse KL(q ‖ p) = Σ_v q(v) log(q(v)/p(v)) per valid position (mode-seeking: q leaves the places p
    gives little mass rather than covering them; DistillSpec's RKL). Metric: "rkl".

    Dense form: verifier_probs (B, γ, V); where p = 0 the KL is infinite wherever q > 0, so p is floored at
    machine epsilon there (a large finite penalty, and the value stays a lower bound). Sparse form
    (verifier_topk_ids, verifier_topk_logprobs (B, γ, k)): the two distributions coarsened to the listed support S
    plus one rest bucket, as in `forward_kl_loss` (padding, log-prob −inf, belongs to the rest):
        Σ_{v∈S} q(v) log(q(v)/p(v)) + r_q log(r_q / r_p),   r = 1 − mass on S,
    ≥ 0, a lower bound on the full reverse KL (data processing inequality), 0 when q = p; r_p is floored at
    machine epsilon (k = V leaves only rounding noise there), which only lowers the bucket term.
    """
    check_window(drafter_logits)
    valid = position_mask(mask, drafter_logits)
    logits = scaled_logits(drafter_logits, temperature)  # (B, γ, V)
    log_p, log_q, dense = verifier_support(logits, valid, verifier_probs, verifier_topk_ids, verifier_topk_logprobs)
    eps = torch.finfo(logits.dtype).eps
    on_support = torch.ones_like(log_p, dtype=torch.bool) if dense else log_p > float("-inf")  # (B, γ, S)
    q = torch.where(on_support, log_q.exp(), 0.0)  # (B, γ, S)
    safe_log_p = torch.where(on_support, log_p.clamp_min(math.log(eps)), 0.0)
    safe_log_q = torch.where(q > 0, log_q, 0.0)  # 0·log 0 = 0, also in autograd
    rkl = (q * (safe_log_q - safe_log_p)).sum(dim=-1)  # (B, γ)
    if not dense:
        rest_q = (1.0 - q.sum(dim=-1)).clamp_min(0)  # (B, γ) drafter mass off S
        rest_p = (1.0 - torch.where(on_support, log_p.exp(), 0.0).sum(dim=-1)).clamp_min(eps)
        rkl = rkl + rest_q * (torch.where(rest_q > 0, rest_q, 1.0).log() - rest_p.log())
    return _mean_output(torch.where(valid, rkl, 0.0), valid, "rkl")


def tvd_loss(
    drafter_logits: Tensor,
    verifier_probs: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    verifier_topk_ids: Tensor | None = None,
    verifier_topk_logprobs: Tensor | None = None,
    temperature: float = 1.0,
) -> LossOutput:
    """Mean total variation ½ Σ_v |p(v) − q(v)| = 1 − Σ_v min(p, q) per valid position. Metric: "tvd".

    1 − TVD is the rejection-sampling acceptance probability, so this is the expected rejection rate.
    Sparse top-k form: 1 − Σ_{v∈S} min(p, q), an UPPER bound on the TVD (the same support-restricted
    acceptance as `streak_soft_loss`), exact when S holds all of p's mass.
    """
    check_window(drafter_logits)
    valid = position_mask(mask, drafter_logits)
    logits = scaled_logits(drafter_logits, temperature)  # (B, γ, V)
    log_p, log_q, _ = verifier_support(logits, valid, verifier_probs, verifier_topk_ids, verifier_topk_logprobs)
    tvd = 1.0 - log_overlap(log_p, log_q).exp()  # (B, γ)
    return _mean_output(torch.where(valid, tvd, 0.0), valid, "tvd")
