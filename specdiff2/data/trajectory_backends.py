"""Samplers of verifier trajectories: this project's engine (batched `ar`) and, optionally, vLLM.

Both take prompts as token ids and return `ARSample`s in prompt-major order (n samples of prompt 0, then of
prompt 1, ...), so the store format does not depend on the backend. Randomness is a function of the seed
passed per call (one call per shard), which makes every shard reproducible on its own.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch

from specdiff2.decode.ar_batch import ARSample, sample_batch
from specdiff2.errors import ConfigError
from specdiff2.models.dtypes import torch_dtype


class EngineBackend:
    """Our static-cache `Transformer`, sampling `batch_size` rows per forward."""

    def __init__(self, spec, verifier_dir: Path, vocab_limit: int, eos_id: int, stop_ids: Collection[int] = ()):
        from specdiff2.models.checkpoint import load_transformer

        device = spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = torch_dtype(spec.dtype, "data.generation.dtype")
        self.model, _ = load_transformer(verifier_dir, dtype, self.device)
        self.model.eval().requires_grad_(False)
        self.spec, self.eos_id, self.stop_ids = spec, eos_id, tuple(stop_ids)
        self.sampling, self.limits = spec.sampling(), spec.limits(vocab_limit)

    def generate(self, prompts: list[list[int]], n: int, seed: int) -> list[ARSample]:
        rows = [p for p in prompts for _ in range(n)]
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out: list[ARSample] = []
        for lo in range(0, len(rows), self.spec.batch_size):
            out += sample_batch(self.model, rows[lo: lo + self.spec.batch_size], self.sampling, self.limits,
                                self.eos_id, generator, stop_ids=self.stop_ids)
        return out


class VllmBackend:
    """vLLM (tensor parallel for large verifiers); per-request seeds keep shards reproducible.

    Stored log-probs are vLLM's (by default the raw model distribution, i.e. logprob_temperature 1).
    """

    def __init__(self, spec, verifier_dir: Path, vocab_limit: int, eos_id: int, stop_ids: Collection[int] = ()):
        try:
            import vllm
        except ImportError:
            raise ConfigError("data.generation.backend=vllm needs vLLM on this machine: pip install vllm "
                              "(or use data.generation.backend=engine)") from None
        self.vllm, self.spec, self.eos_id = vllm, spec, eos_id
        self.stops = sorted({eos_id, *stop_ids})
        self.llm = vllm.LLM(model=str(verifier_dir), tensor_parallel_size=spec.tensor_parallel_size,
                            dtype=spec.dtype, seed=spec.seed)

    def generate(self, prompts: list[list[int]], n: int, seed: int) -> list[ARSample]:
        s = self.spec
        params = [self.vllm.SamplingParams(
            n=n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else -1,
            max_tokens=s.max_new_tokens, seed=seed + i, logprobs=s.topk_logprobs or None,
            stop_token_ids=self.stops) for i in range(len(prompts))]
        requests = [{"prompt_token_ids": p} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [self._sample(c) for out in outputs for c in out.outputs]

    def _sample(self, completion) -> ARSample:
        ids = list(completion.token_ids)
        finished = completion.finish_reason == "stop"
        if finished and (not ids or ids[-1] not in self.stops):
            ids.append(self.eos_id)  # vLLM may leave the stop token out; the store always ends with a stop id
        if not self.spec.topk_logprobs:
            return ARSample(ids, finished)
        k = self.spec.topk_logprobs
        top_ids, top_lps = [], []
        for pos in range(len(ids)):
            entries = completion.logprobs[pos] if pos < len(completion.logprobs or []) else {}
            ranked = sorted(entries.items(), key=lambda kv: (kv[1].rank or 0, kv[0]))[:k]
            pad = k - len(ranked)  # missing entries are padding: log-prob -inf carries no mass
            top_ids.append([t for t, _ in ranked] + [0] * pad)
            top_lps.append([lp.logprob for _, lp in ranked] + [float("-inf")] * pad)
        return ARSample(ids, finished, top_ids, top_lps)


def make_backend(spec, verifier_dir: Path, vocab_limit: int, eos_id: int, stop_ids: Collection[int] = ()):
    """stop_ids: generation_config.json's extra end ids (models.tokenizer.stop_ids), besides the tokenizer's EOS."""
    backend = {"engine": EngineBackend, "vllm": VllmBackend}[spec.backend]
    return backend(spec, verifier_dir, vocab_limit, eos_id, stop_ids)
