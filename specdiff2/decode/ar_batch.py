"""Batched autoregressive sampling with our static-cache `Transformer` (the engine's `ar` method, batched).

Used to sample verifier trajectories. Prompts of different lengths are left-padded: row b's prompt ends at
slot P−1 for every row, so each decode step writes all rows at the same cache slot, while position ids and
attention masks follow each row's own length (pad slots are invisible to real tokens). Rows stop at EOS.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch

from specdiff2.decode.sampling import SamplingParams, sample_probs
from specdiff2.errors import ConfigError, require
from specdiff2.models.masks import causal_cache_mask
from specdiff2.models.transformer import Transformer


@dataclass(frozen=True)
class TrajectoryLimits:
    """What a trajectory sample records and how long it runs (the sampling itself is a `SamplingParams`)."""

    max_new_tokens: int
    topk_logprobs: int = 0  # store the verifier's top-k log-probs per continuation position (0 = none)
    logprob_temperature: float = 1.0  # temperature of the stored log-probs (soft targets of the drafter)
    vocab_limit: int | None = None  # ids >= this (untrained embedding rows past the tokenizer) are never sampled


@dataclass
class ARSample:
    continuation_ids: list[int]
    finished: bool  # ended with EOS (the EOS is the last continuation id)
    topk_ids: list[list[int]] | None = None  # (C, k)
    topk_logprobs: list[list[float]] | None = None  # (C, k)


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
    width = int(lengths.max())
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)  # (B, P)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long, device=device)
    return ids, lengths


def _prefill_mask(pad: torch.Tensor, width: int, cache_len: int) -> torch.Tensor:
    """(B, 1, P, S): causal over real tokens of each row; a pad query sees only itself.

    A fully masked query row would make SDPA return NaN, and a NaN value in the cache poisons every later
    query (0 · NaN), so pad queries attend to their own slot instead.
    """
    device = pad.device
    slots = torch.arange(cache_len, device=device)  # (S,)
    causal = causal_cache_mask(0, width, cache_len, device)  # (1, 1, P, S)
    real_key = (slots[None, :] >= pad[:, None])[:, None, None, :]  # (B, 1, 1, S)
    self_slot = (slots[None, :] == torch.arange(width, device=device)[:, None])[None, None]  # (1, 1, P, S)
    return (causal & real_key) | self_slot


def _ensure_cache(model: Transformer, batch: int, length: int) -> None:
    k_cache = model.model.layers[0].self_attn.k_cache
    if k_cache is None or k_cache.shape[0] < batch or k_cache.shape[2] < length:
        model.setup_cache(batch, length)


def _limit_vocab(logits: torch.Tensor, vocab_limit: int | None) -> torch.Tensor:
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits.clone()
        logits[..., vocab_limit:] = float("-inf")
    return logits


@torch.no_grad()
def sample_batch(model: Transformer, prompts: list[list[int]], sampling: SamplingParams, limits: TrajectoryLimits,
                 eos_id: int, generator: torch.Generator | None = None, pad_id: int | None = None,
                 stop_ids: Collection[int] = ()) -> list[ARSample]:
    """Sample one continuation per prompt (repeat a prompt for several samples); stops each row at EOS or at any
    of `stop_ids` (generation_config.json's, e.g. Qwen2.5-Instruct's <|im_end|>).

    Randomness comes only from `generator` (on the model's device), so a fixed batch and seed give fixed output.
    """
    require(len(prompts) > 0 and all(len(p) > 0 for p in prompts), "sample_batch needs non-empty prompts",
            ConfigError)
    require(limits.max_new_tokens > 0, f"max_new_tokens must be > 0, got {limits.max_new_tokens}", ConfigError)
    device = model.model.embed_tokens.weight.device
    ids, lengths = _left_pad(prompts, eos_id if pad_id is None else pad_id, device)  # (B, P), (B,)
    batch, width = ids.shape
    cache_len = width + limits.max_new_tokens
    _ensure_cache(model, batch, cache_len)
    cache_len = model.cache_len
    pad = width - lengths  # (B,) pad slots of each row
    slots = torch.arange(cache_len, device=device)  # (S,)
    real_key = (slots[None, :] >= pad[:, None])[:, None, None, :]  # (B, 1, 1, S)
    positions = (torch.arange(width, device=device)[None, :] - pad[:, None]).clamp_min(0)  # (B, P)
    logits = model(ids, positions, _prefill_mask(pad, width, cache_len), torch.arange(width, device=device))
    logits = logits[:, -1].float()  # (B, V)

    stops = sorted({eos_id, *stop_ids})
    stop_t = torch.tensor(stops, device=device)  # (S_stop,)
    tokens, top_ids, top_lps = [], [], []
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(limits.max_new_tokens):
        logits = _limit_vocab(logits, limits.vocab_limit)
        token = sample_probs(sampling.probs(logits), generator)  # (B,)
        if limits.topk_logprobs:
            logprobs = torch.log_softmax(logits / limits.logprob_temperature, dim=-1)  # (B, V)
            lp, ix = logprobs.topk(limits.topk_logprobs, dim=-1)  # (B, k)
            top_ids.append(ix)
            top_lps.append(lp)
        tokens.append(token)
        done = done | torch.isin(token, stop_t)
        if bool(done.all()) or step == limits.max_new_tokens - 1:
            break
        slot = width + step
        mask = causal_cache_mask(slot, 1, cache_len, device) & real_key  # (B, 1, 1, S)
        logits = model(token[:, None], (lengths + step)[:, None], mask, torch.tensor([slot], device=device))
        logits = logits[:, -1].float()  # (B, V)
    return _collect(tokens, top_ids, top_lps, set(stops))


def _collect(tokens, top_ids, top_lps, stops: set[int]) -> list[ARSample]:
    steps = torch.stack(tokens, dim=1).cpu()  # (B, T)
    ids = torch.stack(top_ids, dim=1).cpu() if top_ids else None  # (B, T, k)
    lps = torch.stack(top_lps, dim=1).cpu() if top_lps else None  # (B, T, k)
    samples = []
    for row in range(steps.shape[0]):
        seq = steps[row].tolist()
        end = next((i for i, t in enumerate(seq) if t in stops), None)
        finished = end is not None
        length = end + 1 if finished else len(seq)
        samples.append(ARSample(
            seq[:length], finished,
            ids[row, :length].tolist() if ids is not None else None,
            lps[row, :length].tolist() if lps is not None else None,
        ))
    return samples
