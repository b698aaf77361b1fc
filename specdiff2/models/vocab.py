"""Start-up check that drafter and verifier speak the same vocabulary, and which ids a drafter may propose."""

from __future__ import annotations

import torch

from specdiff2.errors import TokenizerError


def proposable_ids(verifier_tokenizer, drafter_tokenizer, verifier_rows: int, drafter_rows: int,
                   device="cpu") -> torch.Tensor:
    """(verifier_rows,) bool: ids the drafter may propose.

    Every id both tokenizers define must be the same token (else one error naming the first
    differing ids). Drafter-only ids (mask, pad, anything the verifier tokenizer lacks) and ids
    beyond either embedding table are never proposed.
    """
    v_vocab = {i: t for t, i in verifier_tokenizer.get_vocab().items()}
    d_vocab = {i: t for t, i in drafter_tokenizer.get_vocab().items()}
    shared = sorted(set(v_vocab) & set(d_vocab))
    diff = [i for i in shared if v_vocab[i] != d_vocab[i]]
    if diff:
        shown = ", ".join(f"{i} ({v_vocab[i]!r} vs {d_vocab[i]!r})" for i in diff[:3])
        raise TokenizerError(
            f"drafter and verifier tokenizers disagree on {len(diff)} ids, first: {shown} (verifier vs drafter); "
            "pair models that share a tokenizer"
        )
    if len(shared) < 0.5 * len(v_vocab):
        raise TokenizerError(f"drafter tokenizer shares only {len(shared)} of the verifier's {len(v_vocab)} ids; "
                             "pair models that share a tokenizer")
    drafter_only = {getattr(drafter_tokenizer, a, None) for a in ("mask_token_id", "pad_token_id")}
    ok = torch.zeros(verifier_rows, dtype=torch.bool)
    ids = [i for i in shared if i < min(verifier_rows, drafter_rows) and i not in drafter_only]
    ok[torch.tensor(ids, dtype=torch.long)] = True
    return ok.to(device)


def to_verifier_vocab(drafter_logits: torch.Tensor, proposable: torch.Tensor) -> torch.Tensor:
    """Drafter logits (..., V_d) → (..., V_v) with −inf on every id the drafter must not propose."""
    v = proposable.shape[0]
    d = drafter_logits.shape[-1]
    if d < v:
        pad = drafter_logits.new_full((*drafter_logits.shape[:-1], v - d), float("-inf"))
        drafter_logits = torch.cat([drafter_logits, pad], dim=-1)
    return drafter_logits[..., :v].float().masked_fill(~proposable, float("-inf"))  # (..., V_v)
