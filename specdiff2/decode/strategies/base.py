"""What every drafting strategy gets at start-up, and the shared drafter loaders."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdiff2.decode.rules import SamplingParams
from specdiff2.errors import CheckpointError, ConfigError
from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.refs import CheckpointRef
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.models.vocab import proposable_ids


@dataclass
class EngineContext:
    verifier_tokenizer: object
    verifier_rows: int
    device: torch.device
    max_seq_len: int


def load_drafter(ref: CheckpointRef, ctx: EngineContext, diffusion: bool):
    """Load a drafter checkpoint; returns (model, config dict, proposable ids, tokenizer)."""
    path = ref.resolve()
    model, config = load_transformer(path, dtype=getattr(torch, ref.dtype), device=ctx.device)
    tokenizer = load_tokenizer(path, require_mask=diffusion and ref.mask_token_id is None)
    proposable = proposable_ids(ctx.verifier_tokenizer, tokenizer, ctx.verifier_rows, model.args.vocab_size,
                                ctx.device)
    if model.args.max_position_embeddings < ctx.max_seq_len:
        raise ConfigError(f"drafter context {model.args.max_position_embeddings} < decode.max_seq_len "
                          f"{ctx.max_seq_len}; lower decode.max_seq_len")
    return model, config, proposable, tokenizer


def mask_token_id(ref: CheckpointRef, config: dict, tokenizer) -> int:
    for candidate in (ref.mask_token_id, config.get("mask_token_id"), tokenizer.mask_token_id):
        if candidate is not None:
            return int(candidate)
    raise CheckpointError(f"drafter {ref.path} defines no mask token; set drafter.mask_token_id")


def load_diffusion_drafter(ref: CheckpointRef, ctx: EngineContext, cache: str):
    """The masked-diffusion drafter of `ref`, mapped to the verifier vocabulary (shifted head by default)."""
    from specdiff2.models.drafters import DiffusionDrafter

    model, config, proposable, tokenizer = load_drafter(ref, ctx, diffusion=True)
    shift = ref.logit_shift if ref.logit_shift is not None else True
    return DiffusionDrafter(model, mask_token_id(ref, config, tokenizer), shift, proposable, ctx.max_seq_len, cache)


def check_gamma(gamma: int) -> None:
    if gamma <= 0:
        raise ConfigError(f"draft length gamma={gamma} must be >= 1; set decode.strategy.gamma to a positive int")


def pick_tokens(logits: torch.Tensor, sampling: SamplingParams, generator):
    """Greedy or sampled tokens from drafter logits (..., V); q is returned only when sampling."""
    from specdiff2.decode.acceptance import sample_probs

    if sampling.temperature == 0:
        return logits.argmax(-1), None
    q_probs = sampling.probs(logits)  # (..., V)
    return sample_probs(q_probs, generator), q_probs
