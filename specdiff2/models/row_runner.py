"""One decode step for a batch of independent rows over a static per-row KV cache; eager, or CUDA graphs captured
per (batch bucket, live-cache bucket). The batched twin of `runner.BlockRunner` (one row, a block of tokens).

Rows are left-padded to a common prompt width P, so step t writes every row's token at the same cache slot P + t
and one slot index serves the batch; each row keeps its own positions (its prompt length + t) and sees only its
own real slots (>= its pad). Under tensor parallelism (models/parallel.py) every layer all-reduces inside the step,
so a captured step holds the collectives too.

mode: "eager" (exact batch, attention over the whole allocated cache: bit for bit `Transformer.forward`, what the
trajectory sampler always did), "padded" (the graph path's batch and live-cache bucketing run eagerly: tests it on
CPU), "graph" (CUDA graphs). Pad rows of a batch bucket see slots 0..slot of their own cache row (finite values),
write only their own row, and their logits are dropped.
"""

from __future__ import annotations

import torch

from specdiff2.errors import ConfigError
from specdiff2.models.runner import (
    KERNEL_MODES,
    MODES,
    _with_recompile_limit,
    capture_graph,
    default_buckets,
)
from specdiff2.models.transformer import Transformer, rotary_cos_sin


def decode_rows(model: Transformer, tokens: torch.Tensor, slot: torch.Tensor, pad: torch.Tensor,
                kv_len: int) -> torch.Tensor:
    """Logits (B, V) of one token per row written at cache slot `slot` (1,); row b attends to its slots
    pad[b]..slot among the first `kv_len`, at position slot − pad[b]. No host sync: capturable."""
    kv = torch.arange(kv_len, device=tokens.device)  # (S,)
    mask = ((kv[None, :] <= slot) & (kv[None, :] >= pad[:, None]))[:, None, None, :]  # (B, 1, 1, S)
    positions = (slot - pad)[:, None]  # (B, 1) prompt length + steps so far
    h = model.model.embed_tokens(tokens[:, None])  # (B, 1, hidden)
    cos, sin = rotary_cos_sin(positions, model.args.head_dim, model.args.rope_theta, h.dtype)  # (B, 1, 1, D)
    call = model.layer_fns["forward"]
    for layer in model.model.layers:
        h = call(layer, h, cos, sin, mask, slot, kv_len)
    return model.lm_head(model.model.norm(h))[:, 0]  # (B, V)


def prefill_mask(pad: torch.Tensor, width: int, cache_len: int) -> torch.Tensor:
    """(B, 1, P, S): causal over the real tokens of each row; a pad query sees only itself.

    A fully masked query row would make SDPA return NaN, and a NaN value in the cache poisons every later query
    (0 · NaN), so pad queries attend to their own slot instead.
    """
    slots = torch.arange(cache_len, device=pad.device)  # (S,)
    queries = torch.arange(width, device=pad.device)  # (P,)
    causal = (slots[None, :] <= queries[:, None])[None, None]  # (1, 1, P, S)
    real_key = (slots[None, :] >= pad[:, None])[:, None, None, :]  # (B, 1, 1, S)
    self_slot = (slots[None, :] == queries[:, None])[None, None]  # (1, 1, P, S)
    return (causal & real_key) | self_slot


class RowRunner:
    """Prefill, then one token per row per `step`, over `model`'s static cache (grown by `reserve`)."""

    def __init__(self, model: Transformer, mode: str = "eager", kernels: str = "eager", kv_step: int = 256):
        if mode not in MODES:
            raise ConfigError(f"compile={mode!r} is unknown; use one of {MODES}")
        if kernels not in KERNEL_MODES:
            raise ConfigError(f"kernels={kernels!r} is unknown; use one of {KERNEL_MODES}")
        self.device = model.lm_head.weight.device
        if mode == "graph" and self.device.type != "cuda":
            raise ConfigError("CUDA graphs need a CUDA device; use compile=eager on CPU")
        self.model, self.mode, self.kv_step = model, mode, kv_step
        if mode == "graph" and model.model.layers[0].self_attn.qkv_weight is None:
            model.fuse()  # one weight read for q/k/v and for gate/up (a TP shard is fused after sharding)
        model.use_kernels(kernels if kernels in ("elementwise", "layer") else "eager")

        def step(tokens, slot, pad, kv_len):
            return decode_rows(model, tokens, slot, pad, kv_len)

        self.forward = step
        if kernels == "block":
            self.forward = _with_recompile_limit(torch.compile(step, dynamic=True, fullgraph=True))
        elif kernels == "layer":
            self.forward = _with_recompile_limit(step)  # the shared compiled layer recompiles per model/shape kind
        self.graphs: dict[tuple[int, int], _RowGraph] = {}
        self.pool = torch.cuda.graph_pool_handle() if mode == "graph" else None
        self.batch_buckets: list[int] = []
        self._inputs(0)

    def _inputs(self, rows: int) -> None:
        """Static inputs every captured step reads (slices of them): graphs replay them at fixed addresses."""
        long = {"dtype": torch.long, "device": self.device}
        self.tokens, self.pad = torch.zeros(rows, **long), torch.zeros(rows, **long)  # (B_max,) each
        self.slot = torch.zeros(1, **long)

    def reserve(self, batch: int, length: int) -> None:
        """A cache for `batch` rows of `length` slots. Eager keeps the sampler's old rule (reallocate when either
        is short, exact sizes); bucketed modes round up so later batches reuse the cache and its graphs."""
        cache = self.model.model.layers[0].self_attn.k_cache
        if cache is not None and cache.shape[0] >= batch and cache.shape[2] >= length:
            if self.pad.shape[0] < cache.shape[0]:  # a cache set up before this runner existed
                self.graphs.clear()
                self.batch_buckets = default_buckets(cache.shape[0])
                self._inputs(cache.shape[0])
            return
        if self.mode != "eager":
            batch = max(batch, 0 if cache is None else cache.shape[0])
            length = max(-(-length // self.kv_step) * self.kv_step, 0 if cache is None else cache.shape[2])
        self.graphs.clear()  # they captured the old cache's addresses
        self.model.setup_cache(batch, length)
        self.batch_buckets = default_buckets(batch)
        self._inputs(batch)

    @property
    def cache_len(self) -> int:
        return self.model.cache_len

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Write the left-padded prompts ids (B, P) (pad (B,) slots each) at slots 0..P−1; logits (B, V) of the
        last slot. Eager at exact shapes: once per batch."""
        batch, width = ids.shape
        positions = (torch.arange(width, device=ids.device)[None, :] - pad[:, None]).clamp_min(0)  # (B, P)
        logits = self.model(ids, positions, prefill_mask(pad, width, self.cache_len),
                            torch.arange(width, device=ids.device))  # (B, P, V)
        self.pad.zero_()  # pad rows of a bucket: slots 0..slot of their own row
        self.pad[:batch].copy_(pad)
        return logits[:, -1]  # (B, V)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, slot: int) -> torch.Tensor:
        """Logits (B, V) after writing tokens (B,) at cache slot `slot` (the rows of the last `prefill`)."""
        batch = tokens.shape[0]
        if self.mode == "eager":
            slot_t = torch.tensor([slot], device=self.device)
            return self.forward(tokens, slot_t, self.pad[:batch], self.cache_len)
        rows = next(b for b in self.batch_buckets if b >= batch)
        kv_len = min(self.cache_len, -(-(slot + 1) // self.kv_step) * self.kv_step)
        self.tokens[:batch].copy_(tokens)
        self.slot.fill_(slot)
        if self.mode == "padded":
            out = self.forward(self.tokens[:rows], self.slot, self.pad[:rows], kv_len)
        else:
            graph = self.graphs.get((rows, kv_len))
            if graph is None:
                graph = self.graphs[rows, kv_len] = _RowGraph(self, rows, kv_len)
            out = graph.replay()
        return out[:batch]


class _RowGraph:
    """One captured step at (rows, kv_len), reading the runner's static inputs; `out` is overwritten per replay."""

    def __init__(self, runner: RowRunner, rows: int, kv_len: int):
        r = runner

        def call():
            return r.forward(r.tokens[:rows], r.slot, r.pad[:rows], kv_len)

        self.graph, self.out = capture_graph(call, r.pool)  # out (rows, V)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.out
