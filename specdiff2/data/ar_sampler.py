"""Batched autoregressive sampling of verifier trajectories through `models.row_runner.RowRunner`.

Prompts of different lengths are left-padded: row b's prompt ends at slot P−1 for every row, so each step writes
all rows at the same cache slot, while positions and attention follow each row's own length (pad slots are
invisible to real tokens). Rows stop at any stop id; the loop ends when every row has stopped. On CUDA the
"every row stopped" flag is read one step late from pinned memory, so the host never waits for the step in flight
and nothing syncs per token; on CPU it is read at once (the token stream the sampler always had).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch

from specdiff2.decode.sampling import SamplingParams, sample_probs
from specdiff2.errors import ConfigError, require
from specdiff2.models.row_runner import RowRunner
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
    finished: bool  # ended with a stop id (the stop id is the last continuation id)
    topk_ids: list[list[int]] | None = None  # (C, k)
    topk_logprobs: list[list[float]] | None = None  # (C, k)


class StopFlags:
    """"Has every row stopped?", answered `lag` steps late: with lag 1 on CUDA the answer is a pinned-memory copy
    of the previous step's flag, whose event has passed by the time the next step is queued."""

    def __init__(self, device: torch.device, lag: int):
        cuda = device.type == "cuda"
        self.lag, self.step = lag, 0
        self.host = torch.zeros(lag + 1, dtype=torch.bool, pin_memory=cuda)  # (lag + 1,) ring
        self.view = self.host.numpy()  # read without a torch op: the profiler of tests/nosync.py sees none
        self.events = [torch.cuda.Event() if cuda else None for _ in range(lag + 1)]

    def __call__(self, all_stopped: torch.Tensor) -> bool:
        ring = self.lag + 1
        self.host[self.step % ring].copy_(all_stopped, non_blocking=True)
        if self.events[self.step % ring] is not None:
            self.events[self.step % ring].record()
        self.step += 1
        if self.step <= self.lag:
            return False
        old = (self.step - 1 - self.lag) % ring
        if self.events[old] is not None:
            self.events[old].synchronize()
        return bool(self.view[old])


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    width = max(len(p) for p in prompts)  # from the host lists: no device read
    rows = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    ids = torch.tensor(rows, dtype=torch.long).to(device)  # (B, P)
    pad = torch.tensor([width - len(p) for p in prompts], dtype=torch.long).to(device)  # (B,)
    return ids, pad, width


def _limit_vocab(logits: torch.Tensor, vocab_limit: int | None) -> torch.Tensor:
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits.clone()
        logits[..., vocab_limit:] = float("-inf")
    return logits


@torch.no_grad()
def sample_rows(runner: RowRunner, prompts: list[list[int]], sampling: SamplingParams, limits: TrajectoryLimits,
                eos_id: int, generator: torch.Generator | None = None, pad_id: int | None = None,
                stop_ids: Collection[int] = (), stop_lag: int | None = None) -> list[ARSample]:
    """Sample one continuation per prompt (repeat a prompt for several samples); stops each row at EOS or at any
    of `stop_ids` (generation_config.json's, e.g. Qwen2.5-Instruct's <|im_end|>).

    Randomness comes only from `generator` (on the runner's device), so a fixed batch and seed give fixed output.
    stop_lag: steps the all-stopped check trails the sampling (None: 1 on CUDA, 0 on CPU).
    """
    tokens, top_ids, top_lps, stops = sample_tokens(runner, prompts, sampling, limits, eos_id, generator, pad_id,
                                                    stop_ids, stop_lag)
    return _collect(tokens, top_ids, top_lps, stops)


@torch.no_grad()
def sample_tokens(runner: RowRunner, prompts, sampling, limits, eos_id, generator=None, pad_id=None, stop_ids=(),
                  stop_lag=None):
    """The device side of `sample_rows`: (B, T) tokens, (B, T, k) top-k ids and log-probs (or None), stop ids."""
    require(len(prompts) > 0 and all(len(p) > 0 for p in prompts), "sample_rows needs non-empty prompts",
            ConfigError)
    require(limits.max_new_tokens > 0, f"max_new_tokens must be > 0, got {limits.max_new_tokens}", ConfigError)
    device = runner.device
    ids, pad, width = _left_pad(prompts, eos_id if pad_id is None else pad_id, device)  # (B, P), (B,)
    runner.reserve(len(prompts), width + limits.max_new_tokens)
    logits = runner.prefill(ids, pad).float()  # (B, V)
    stops = sorted({eos_id, *stop_ids})
    stop_t = torch.tensor(stops, device=device)  # (S_stop,)
    flags = StopFlags(device, (1 if device.type == "cuda" else 0) if stop_lag is None else stop_lag)
    tokens, top_ids, top_lps = [], [], []
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)  # (B,)
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
        if step == limits.max_new_tokens - 1 or flags(done.all()):
            break
        logits = runner.step(token, width + step).float()  # (B, V)
    return (torch.stack(tokens, dim=1), torch.stack(top_ids, dim=1) if top_ids else None,
            torch.stack(top_lps, dim=1) if top_lps else None, set(stops))


def sample_batch(model: Transformer, prompts: list[list[int]], sampling: SamplingParams, limits: TrajectoryLimits,
                 eos_id: int, generator: torch.Generator | None = None, pad_id: int | None = None,
                 stop_ids: Collection[int] = ()) -> list[ARSample]:
    """`sample_rows` with an eager runner over `model` (tests and one-off calls)."""
    return sample_rows(RowRunner(model), prompts, sampling, limits, eos_id, generator, pad_id, stop_ids)


def _collect(tokens, top_ids, top_lps, stops: set[int]) -> list[ARSample]:
    steps = tokens.cpu()  # (B, T)
    ids = top_ids.cpu() if top_ids is not None else None  # (B, T, k)
    lps = top_lps.cpu() if top_lps is not None else None  # (B, T, k)
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
