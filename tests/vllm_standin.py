"""A stand-in for the slice of vLLM's offline API that `data.trajectory_backends.VllmBackend` uses, installed as
`sys.modules["vllm"]` by the tests (vLLM itself cannot be installed here).

The API and its semantics follow vLLM V1 as documented (checked against docs.vllm.ai and the vLLM sources):
- `LLM(model, tensor_parallel_size, dtype, seed, max_logprobs=20, ...)`; `LLM.generate(prompts, sampling_params,
  use_tqdm)` with prompts as `{"prompt_token_ids": [...]}` dicts and one `SamplingParams` per prompt (or one for
  all); returns one `RequestOutput` per prompt whose `outputs` are `CompletionOutput`s (index, text, token_ids,
  cumulative_logprob, logprobs, finish_reason "stop" | "length", stop_reason).
- `SamplingParams(n, temperature, top_p, top_k (0 or -1 = off), max_tokens, seed, logprobs, stop_token_ids)`;
  an unknown keyword is a TypeError, logprobs above the engine's max_logprobs is refused.
- A request with n > 1 runs as n child requests; with a seed, child j is seeded seed + j
  (vllm/v1/engine/parallel_sampling.py `_get_child_sampling_params`).
- `logprobs[pos]` is a dict token id -> `Logprob(logprob, rank, decoded_token)` holding the top-k of the raw model
  distribution (V1's default logprobs_mode: before temperature / top-k / top-p), plus the sampled token with its
  vocabulary rank (1 = most likely) when it is not among them.
- A stop token (EOS or stop_token_ids) ends the row with finish_reason "stop" and stays in token_ids;
  `stop_reason` is the stop token id for stop_token_ids, None for EOS.

Sampling itself runs this project's model on CPU (full re-encode per token; tiny models only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from specdiff2.decode.sampling import sample_probs, warp_probs
from specdiff2.models.checkpoint import load_transformer


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True


class SamplingParams:
    def __init__(self, n: int = 1, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 max_tokens: int | None = 16, seed: int | None = None, logprobs: int | None = None,
                 stop_token_ids: list[int] | None = None):
        if top_k < -1:
            raise ValueError(f"top_k must be -1 (disable), 0 (disable) or at least 1, got {top_k}")
        self.n, self.temperature, self.top_p, self.top_k = n, temperature, top_p, top_k
        self.max_tokens, self.seed, self.logprobs = max_tokens, seed, logprobs
        self.stop_token_ids = list(stop_token_ids or [])


class LLM:
    instances: ClassVar[list[LLM]] = []  # every LLM made, for the tests to inspect
    keep_stop_token = True  # False: imitate a version that leaves the stop token out of token_ids

    def __init__(self, model: str, tensor_parallel_size: int = 1, dtype: str = "auto", seed: int = 0,
                 max_logprobs: int = 20):
        self.kwargs = {"model": model, "tensor_parallel_size": tensor_parallel_size, "dtype": dtype, "seed": seed,
                       "max_logprobs": max_logprobs}
        self.model, config = load_transformer(model)
        self.eos = config.get("eos_token_id")
        self.child_seeds: list[int] = []  # seeds of every child request, in order
        self.params: list[SamplingParams] = []
        LLM.instances.append(self)

    def generate(self, prompts, sampling_params=None, use_tqdm: bool = True) -> list[RequestOutput]:
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts), "one SamplingParams per prompt"
        out = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            if p.logprobs is not None and p.logprobs > self.kwargs["max_logprobs"]:
                raise ValueError(f"Requested sample logprobs of {p.logprobs}, which is greater than max allowed: "
                                 f"{self.kwargs['max_logprobs']}")
            self.params.append(p)
            ids = list(prompt["prompt_token_ids"])
            outputs = [self._child(ids, p, j) for j in range(p.n)]
            out.append(RequestOutput(str(i), None, ids, outputs))
        return out

    @torch.no_grad()
    def _child(self, prompt: list[int], p: SamplingParams, index: int) -> CompletionOutput:
        seed = None if p.seed is None else p.seed + index
        self.child_seeds.append(seed)
        gen = torch.Generator().manual_seed(seed if seed is not None else 0)
        stops = {*p.stop_token_ids, *([self.eos] if isinstance(self.eos, int) else [])}
        seq, logprobs, reason, stop_reason = list(prompt), [], "length", None
        for _ in range(p.max_tokens):
            logits = self.model(torch.tensor([seq]), torch.arange(len(seq))[None])[0, -1].float()  # (V,)
            raw = torch.log_softmax(logits, dim=-1)  # (V,) before any sampling setting
            probs = warp_probs(logits, p.temperature, max(p.top_k, 0), p.top_p)
            token = int(sample_probs(probs, gen))
            seq.append(token)
            if p.logprobs:
                logprobs.append(self._entries(raw, token, p.logprobs))
            if token in stops:
                reason, stop_reason = "stop", (token if token in p.stop_token_ids else None)
                break
        ids = seq[len(prompt):]
        if reason == "stop" and not self.keep_stop_token:
            ids, logprobs = ids[:-1], logprobs[:-1] if logprobs else logprobs
        return CompletionOutput(index, "", ids, None, logprobs if p.logprobs else None, reason, stop_reason)

    @staticmethod
    def _entries(raw: torch.Tensor, token: int, k: int) -> dict[int, Logprob]:
        values, ids = raw.topk(k)
        entries = {int(t): Logprob(float(v), r + 1, f"<{int(t)}>") for r, (v, t) in enumerate(zip(values, ids))}
        if token not in entries:
            entries[token] = Logprob(float(raw[token]), int((raw > raw[token]).sum()) + 1, f"<{token}>")
        return dict(reversed(entries.items()))  # a dict's order is not the rank order: the reader must sort
