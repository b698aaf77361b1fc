"""Absorbing-state masked-diffusion loss (MDLM / LLaDA convention) and its masking helper.

Forward process: each token is replaced by MASK independently with probability t. The ELBO weight of a masked
token's CE is 1/t; the sum is normalised by the number of valid (non-pad) tokens of the batch, B·L_valid. Dividing
by the number of masked tokens instead would change the weight of each t and stop estimating the NLL bound.
"""

from __future__ import annotations

import torch
from torch import Tensor

from specdiff2.errors import SpecDiffError, require
from specdiff2.losses.streak import LossOutput, position_mask, scaled_logits, target_logprobs


def sample_mask(
    targets: Tensor,
    t: Tensor,
    generator: torch.Generator | None = None,
    protect: Tensor | None = None,
) -> Tensor:
    """Masked positions (B, L) bool: each token independently Bernoulli(t_b); `protect` (B, L) never masked.

    targets (B, L) only supplies shape and device; t (B,) in (0, 1] (t = 1 masks every unprotected token).
    protect marks e.g. the prompt and padding. Randomness comes only from `generator` (on targets' device).
    """
    require(targets.dim() == 2 and t.shape == targets.shape[:1],
            f"need targets (B, L) and t (B,), got {tuple(targets.shape)} and {tuple(t.shape)}", SpecDiffError)
    draws = torch.rand(targets.shape, generator=generator, device=targets.device)  # (B, L) in [0, 1)
    masked = draws < t.to(draws.dtype).unsqueeze(-1)
    if protect is not None:
        require(protect.shape == targets.shape, f"protect shape {tuple(protect.shape)} != {tuple(targets.shape)}",
                SpecDiffError)
        masked &= ~protect.bool()
    return masked


T_MIN = 1e-3  # smallest mask ratio drawn: the ELBO weight 1/t stays bounded


def mdlm_noise(clean: Tensor, mask_token_id: int, generator: torch.Generator | None = None,
               protect: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The one MDLM forward process: t_b ~ U(T_MIN, 1) per row, each unprotected token → MASK w.p. t_b.

    clean (B, L) long. Returns noisy (B, L) (clean with MASK where masked), masked (B, L) bool, t (B,).
    """
    # An affine map, not a clamp: a clamp would put an atom of mass T_MIN at t = T_MIN (weight 1/t at its largest).
    t = T_MIN + (1.0 - T_MIN) * torch.rand(clean.shape[0], device=clean.device, generator=generator)  # (B,)
    masked = sample_mask(clean, t, generator=generator, protect=protect)  # (B, L)
    noisy = torch.where(masked, torch.full_like(clean, mask_token_id), clean)  # (B, L)
    return noisy, masked, t


def mdlm_loss(
    drafter_logits: Tensor,
    targets: Tensor,
    masked: Tensor,
    t: Tensor,
    loss_mask: Tensor | None = None,
) -> LossOutput:
    """MDLM loss = Σ_{masked ∧ valid} CE / t_b  /  #valid tokens.

    drafter_logits (B, L, V) already aligned with targets (B, L) (the caller applied the drafter's logit shift);
    masked (B, L) bool: positions that were replaced by MASK; t (B,) the per-row mask ratio in (0, 1];
    loss_mask (B, L) bool: non-pad tokens (None = all). per_row: each row's Σ CE/t over its own valid count.
    Metrics: "mdlm_ce" (unweighted mean CE over masked tokens), "mdlm_accuracy" (argmax on masked tokens),
    "masked_frac" (masked / valid tokens).
    """
    require(drafter_logits.dim() == 3 and drafter_logits.shape[:2] == targets.shape == masked.shape
            and t.shape == targets.shape[:1],
            f"need drafter_logits (B, L, V), targets/masked (B, L), t (B,); got {tuple(drafter_logits.shape)}, "
            f"{tuple(targets.shape)}, {tuple(masked.shape)}, {tuple(t.shape)}", SpecDiffError)
    valid = position_mask(loss_mask, targets)  # (B, L)
    scored = masked.bool() & valid  # (B, L)
    logits = scaled_logits(drafter_logits, 1.0)  # (B, L, V)
    ce = -target_logprobs(logits, targets, scored)  # (B, L), 0 where not scored
    weighted = ce / t.to(ce.dtype).unsqueeze(-1)  # (B, L): ELBO weight 1/t
    loss = weighted.sum() / valid.sum().clamp_min(1)
    per_row = weighted.sum(dim=-1) / valid.sum(dim=-1).clamp_min(1)  # (B,)
    n_scored = scored.sum().clamp_min(1)
    hits = (logits.detach().argmax(dim=-1) == targets) & scored
    metrics = {
        "mdlm_ce": (ce.detach().sum() / n_scored),
        "mdlm_accuracy": hits.sum() / n_scored,
        "masked_frac": scored.sum() / valid.sum().clamp_min(1),
    }
    return LossOutput(loss, metrics, per_row.detach())
