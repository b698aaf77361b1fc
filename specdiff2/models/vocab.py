"""Start-up check that drafter and verifier speak the same vocabulary, and which ids a drafter may propose."""

from __future__ import annotations

import torch

from specdiff2.errors import TokenizerError


def proposable_ids(verifier_tokenizer, drafter_tokenizer, verifier_rows: int, drafter_rows: int,
                   device="cpu", mask_token_id: int | None = None) -> torch.Tensor:
    """(verifier_rows,) bool: ids the drafter may propose.

    Every id both tokenizers define must be the same token (else one error naming the first
    differing ids). Drafter-only ids (anything the verifier tokenizer lacks: DiffuCoder's <|dlm_pad|>, Dream's
    <|mask|>), the drafter's mask id and ids beyond either embedding table are never proposed. A pad token the
    verifier also has stays proposable: Dream's pad is <|endoftext|>, the EOS a Qwen2.5 verifier emits.
    """
    v_vocab = {i: t for t, i in verifier_tokenizer.get_vocab().items()}
    d_vocab = {i: t for t, i in drafter_tokenizer.get_vocab().items()}
    shared = sorted(set(v_vocab) & set(d_vocab))
    diff = [i for i in shared if v_vocab[i] != d_vocab[i]]
    if diff:
        shown = ", ".join(f"{i} ({v_vocab[i]!r} vs {d_vocab[i]!r})" for i in diff[:3])
        raise TokenizerError(
            f"drafter and verifier tokenizers disagree on {len(diff)} ids, first: {shown} (verifier vs drafter): "
            "different vocabularies (e.g. LLaDA's vs Qwen's) and specdiff2 has no vocabulary translation; "
            "pair the drafter with a verifier that shares its tokenizer"
        )
    if len(shared) < 0.5 * len(v_vocab):
        raise TokenizerError(f"drafter tokenizer shares only {len(shared)} of the verifier's {len(v_vocab)} ids "
                             f"(drafter {_name(drafter_tokenizer)}, verifier {_name(verifier_tokenizer)}): it is "
                             "another vocabulary (LLaDA's ~126k ids vs Qwen's ~152k) and specdiff2 has no vocabulary "
                             "translation; pair the drafter with a verifier that shares its tokenizer")
    never = {mask_token_id, getattr(drafter_tokenizer, "mask_token_id", None)}
    ok = torch.zeros(verifier_rows, dtype=torch.bool)
    ids = [i for i in shared if i < min(verifier_rows, drafter_rows) and i not in never]
    ok[torch.tensor(ids, dtype=torch.long)] = True
    return ok.to(device)


def _name(tokenizer) -> str:
    return f"{type(tokenizer).__name__} of {len(tokenizer)} ids"


def to_verifier_vocab(drafter_logits: torch.Tensor, proposable: torch.Tensor) -> torch.Tensor:
    """Drafter logits (..., V_d) → (..., V_v) with −inf on every id the drafter must not propose."""
    v = proposable.shape[0]
    d = drafter_logits.shape[-1]
    if d < v:
        pad = drafter_logits.new_full((*drafter_logits.shape[:-1], v - d), float("-inf"))
        drafter_logits = torch.cat([drafter_logits, pad], dim=-1)
    return drafter_logits[..., :v].float().masked_fill(~proposable, float("-inf"))  # (..., V_v)
