"""Conventions of masked-diffusion drafters shared by pretraining, distillation and decoding."""

from __future__ import annotations

import torch

from specdiff2.errors import CheckpointError
from specdiff2.models.archs import arch_for


def align_logits(logits: torch.Tensor, shifted: bool) -> torch.Tensor:
    """Return logits whose position i predicts token i.

    Dream, DiffuCoder and the pocket drafter are trained from AR checkpoints and keep the AR
    habit: the logits at i−1 predict token i. LLaDA predicts in place. Position 0 of a shifted
    model has no predictor; it repeats position 0 and must never be a target.
    """
    if not shifted:
        return logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # (B, L, V)


def window_logit_index(prefix_len: int | torch.Tensor, gamma: int, shifted: bool, device=None) -> torch.Tensor:
    """Raw-logit positions that carry q_1..q_γ for a pass over prefix ‖ MASK×γ."""
    offset = prefix_len - 1 if shifted else prefix_len
    return offset + torch.arange(gamma, device=device)  # (γ,)


PREFIX_ATTENTION = ("causal", "bidirectional")


def prefix_attention(config: dict) -> str:
    """How a diffusion drafter's clean prefix attends, from its config.json (a dict).

    "causal"         a prefix token sees earlier prefix tokens only; the MASK block sees the whole prefix and
                     itself (the pocket drafter). The prefix is then encoded once in an exact KV cache, and
                     many windows of one sequence can share one clean stream in training (`shared` packing).
    "bidirectional"  prefix tokens also see the block (Dream, DiffuCoder, LLaDA): the default when the key
                     is absent.
    """
    value = config.get("prefix_attention", "bidirectional")
    if value not in PREFIX_ATTENTION:
        raise CheckpointError(f"config.json prefix_attention={value!r} is unknown; use one of {PREFIX_ATTENTION}")
    return value


def require_diffusion_family(config: dict, where: str) -> None:
    """One line for an autoregressive checkpoint (Qwen2, LLaMA, ...) given as the diffusion drafter: it would
    draft MASK-conditioned windows it never learnt (a Qwen verifier so loaded drafts with α_2 = 0, silently)."""
    arch = arch_for(config)
    if not arch.bidirectional:
        raise CheckpointError(f"drafter {where} is an autoregressive {arch.name} checkpoint, not a masked-diffusion "
                              "drafter (Dream, DiffuCoder, LLaDA or the pocket drafter); pass one as drafter.path, or "
                              "draft with this one autoregressively: decode=sd_ar ar_drafter.path=DIR")


def resolve_mask_token_id(configured: int | None, config: dict, tokenizer, rows: int, where: str) -> int:
    """The drafter's mask id: `configured` (drafter.mask_token_id), else config.json's, else the tokenizer's;
    checked against the checkpoint (one line when it is outside the embedding table or contradicts the files)."""
    declared = {"config.json mask_token_id": config.get("mask_token_id"),
                "tokenizer mask_token": getattr(tokenizer, "mask_token_id", None)}
    mask_id = next((c for c in (configured, *declared.values()) if c is not None), None)
    if mask_id is None:
        raise CheckpointError(f"drafter {where} defines no mask token (no mask_token_id in config.json, no "
                              "mask_token in its tokenizer); set drafter.mask_token_id=ID")
    mask_id = int(mask_id)
    if not 0 <= mask_id < rows:
        raise CheckpointError(f"drafter.mask_token_id={mask_id} is outside the drafter's embedding table of {rows} "
                              f"rows ({where}); use the checkpoint's own mask id ({_declared(declared)})")
    for source, value in declared.items():
        if value is not None and int(value) != mask_id:
            raise CheckpointError(f"drafter.mask_token_id={mask_id} contradicts the {source} {value} of {where}; "
                                  f"set drafter.mask_token_id={value} (or null to read it from the checkpoint)")
    return mask_id


def _declared(declared: dict) -> str:
    found = [f"{k} {v}" for k, v in declared.items() if v is not None]
    return ", ".join(found) or "none declared"
