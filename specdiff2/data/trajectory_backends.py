"""Samplers of verifier trajectories: this project's engine (batched `ar` through the row runner, tensor parallel
under torchrun) and, optionally, vLLM.

Both take prompts as token ids and return `ARSample`s in prompt-major order (n samples of prompt 0, then of
prompt 1, ...), so the store format does not depend on the backend. Randomness is a function of the seed
passed per call (one call per shard), which makes every shard reproducible on its own.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch

from specdiff2.data.ar_sampler import ARSample, sample_rows
from specdiff2.errors import ConfigError, require
from specdiff2.models.dtypes import torch_dtype
from specdiff2.models.parallel import TensorParallel
from specdiff2.models.row_runner import RowRunner
from specdiff2.models.runner import resolve_execution


def device_of(spec) -> torch.device:
    """data.generation.device with auto resolved (cuda when available)."""
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec.device)


class EngineBackend:
    """Our static-cache `Transformer` (this rank's shard under tensor parallelism), `batch_size` rows per step."""

    def __init__(self, spec, verifier_dir: Path, vocab_limit: int, eos_id: int, stop_ids: Collection[int] = (),
                 tp: TensorParallel | None = None):
        from specdiff2.models.checkpoint import load_transformer
        from specdiff2.models.parallel import load_sharded_transformer

        self.device = device_of(spec)
        dtype = torch_dtype(spec.dtype, "data.generation.dtype")
        if tp is None:
            model, _ = load_transformer(verifier_dir, dtype, self.device)
        else:
            model, _ = load_sharded_transformer(verifier_dir, tp, dtype, self.device)
        model.eval().requires_grad_(False)
        mode, kernels = resolve_execution(spec.compile, spec.kernels, self.device)
        self.runner = RowRunner(model, mode, kernels)
        self.spec, self.eos_id, self.stop_ids = spec, eos_id, tuple(stop_ids)
        self.sampling, self.limits = spec.sampling(), spec.limits(vocab_limit)

    def generate(self, prompts: list[list[int]], n: int, seed: int) -> list[ARSample]:
        rows = [p for p in prompts for _ in range(n)]
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out: list[ARSample] = []
        for lo in range(0, len(rows), self.spec.batch_size):
            out += sample_rows(self.runner, rows[lo: lo + self.spec.batch_size], self.sampling, self.limits,
                               self.eos_id, generator, stop_ids=self.stop_ids)
        return out


class VllmBackend:
    """vLLM (its own tensor-parallel workers for large verifiers); per-request seeds keep shards reproducible.

    vLLM (V1) returns log-probs of the raw model distribution (temperature 1), so stored top-k log-probs need
    data.generation.logprob_temperature=1. Each request's n samples are n child requests seeded seed + j
    (vllm/v1/engine/parallel_sampling.py), so request i gets seed + i·n: no two samples of a call share a seed.
    """

    def __init__(self, spec, verifier_dir: Path, vocab_limit: int, eos_id: int, stop_ids: Collection[int] = (),
                 tp: TensorParallel | None = None):
        require(not spec.topk_logprobs or spec.logprob_temperature == 1,
                f"data.generation.logprob_temperature={spec.logprob_temperature}: vLLM returns log-probs of the raw "
                "model distribution; set it to 1 or use data.generation.backend=engine")
        try:
            import vllm
        except ImportError:
            raise ConfigError("data.generation.backend=vllm needs vLLM on this machine: pip install vllm "
                              "(or use data.generation.backend=engine)") from None
        self.vllm, self.spec, self.eos_id = vllm, spec, eos_id
        self.stops = sorted({eos_id, *stop_ids})
        extra = {"max_logprobs": spec.topk_logprobs} if spec.topk_logprobs > 20 else {}  # vLLM's default cap: 20
        self.llm = vllm.LLM(model=str(verifier_dir), tensor_parallel_size=spec.tensor_parallel_size,
                            dtype=spec.dtype, seed=spec.seed, **extra)

    def generate(self, prompts: list[list[int]], n: int, seed: int) -> list[ARSample]:
        s = self.spec
        base = seed % (1 << 62)  # room for base + i·n + j in a uint64 generator seed
        params = [self.vllm.SamplingParams(
            n=n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else -1,
            max_tokens=s.max_new_tokens, seed=base + i * n, logprobs=s.topk_logprobs or None,
            stop_token_ids=self.stops) for i in range(len(prompts))]
        requests = [{"prompt_token_ids": p} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [self._sample(c) for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]

    def _sample(self, completion) -> ARSample:
        ids = list(completion.token_ids)
        finished = completion.finish_reason == "stop"
        if finished and (not ids or ids[-1] not in self.stops):
            # vLLM may leave the stop token out; the store always ends with the stop id that ended the row
            reason = completion.stop_reason
            ids.append(reason if isinstance(reason, int) and reason in self.stops else self.eos_id)
        if not self.spec.topk_logprobs:
            return ARSample(ids, finished)
        k = self.spec.topk_logprobs
        top_ids, top_lps = [], []
        for pos in range(len(ids)):
            entries = completion.logprobs[pos] if pos < len(completion.logprobs or []) else {}
            # the sampled token is listed too when it ranks below k: order by vocabulary rank (1 = most likely)
            ranked = sorted(entries.items(), key=lambda kv: (kv[1].rank or 0, kv[0]))[:k]
            pad = k - len(ranked)  # missing entries are padding: log-prob -inf carries no mass
            top_ids.append([t for t, _ in ranked] + [0] * pad)
            top_lps.append([lp.logprob for _, lp in ranked] + [float("-inf")] * pad)
        return ARSample(ids, finished, top_ids, top_lps)


def make_backend(spec, verifier_dir: Path, vocab_limit: int, eos_id: int, stop_ids: Collection[int] = (),
                 tp: TensorParallel | None = None):
    """stop_ids: generation_config.json's extra end ids (models.tokenizer.stop_ids), besides the tokenizer's EOS.
    tp: this rank's tensor-parallel group (engine backend under torchrun), None for the whole verifier."""
    backend = {"engine": EngineBackend, "vllm": VllmBackend}[spec.backend]
    return backend(spec, verifier_dir, vocab_limit, eos_id, stop_ids, tp)
