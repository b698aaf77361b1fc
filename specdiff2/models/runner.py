"""Runs `Transformer.forward_block` eagerly, or as CUDA graphs captured per (block bucket, live-cache bucket).

A decode step is a few hundred tiny kernels; on a GPU their launch costs more than their work. The runner
pads a block of n tokens to a bucket n_b, picks the live-cache bucket kv_b ≥ start + n_b, and replays the
graph captured for (n_b, kv_b) with the inputs copied into that graph's static buffers. Padding is inert by
construction: a pad row sees only itself and the prefix, no real row sees a pad slot (its `intra` column is
False), and pad rows write K/V only past the real block, slots no later step reads before rewriting.

mode: "eager" (exact n, what CPU and tests use), "padded" (eager with the graph path's bucketing: tests the
padding on CPU), "graph" (CUDA graphs). Capture is lazy: the first call at a new (n_b, kv_b) runs eagerly
twice on a side stream (warm-up, then capture), which rewrites the same K/V values, so it is harmless.
"""

from __future__ import annotations

import torch

from specdiff2.errors import ConfigError
from specdiff2.models.transformer import Transformer

MODES = ("eager", "padded", "graph")
# Cache slots past max_seq_len in every decode model: a step always runs its full draft layout (fixed shapes for
# the captured step), so near the context limit the draft nodes past the room land here. They are never committed.
# 288 fits a 256-node tree of depth 16 (+ root and bonus); the engine refuses a layout that does not fit, in one line.
DRAFT_SLOTS = 288
KERNEL_MODES = ("eager", "elementwise", "block", "layer")


def resolve_execution(compile: str, kernels: str, device: torch.device) -> tuple[str, str]:
    """`decode.compile` / `decode.kernels` with `auto` resolved: CUDA graphs + a compiled block on CUDA, eager on CPU."""
    cuda = torch.device(device).type == "cuda"
    if compile not in ("auto", *MODES):
        raise ConfigError(f"compile={compile!r} is unknown; use auto, eager or graph")
    if kernels not in ("auto", *KERNEL_MODES):
        raise ConfigError(f"kernels={kernels!r} is unknown; use auto, {', '.join(KERNEL_MODES)}")
    mode = ("graph" if cuda else "eager") if compile == "auto" else compile
    return mode, ("block" if cuda and mode == "graph" else "eager") if kernels == "auto" else kernels


def default_buckets(limit: int) -> list[int]:
    """1, 2, 4, ... below `limit`, then `limit`."""
    out, b = [], 1
    while b < limit:
        out.append(b)
        b *= 2
    return [*out, limit]


class BlockRunner:
    """kernels: "eager" (PyTorch ops), "elementwise" (norms, RoPE, SiLU·up compiled: fewer kernels per layer),
    "block" (the whole forward_block compiled with dynamic shapes: one compilation for every bucket, but its
    compile time grows with depth), "layer" (one decoder layer compiled and shared by every layer: compile time
    independent of depth; mask, embedding, final norm and head stay eager)."""

    def __init__(self, model: Transformer, max_seq_len: int, mode: str = "eager", kv_step: int = 256,
                 block_buckets: list[int] | None = None, kernels: str = "eager"):
        if mode not in MODES:
            raise ConfigError(f"compile={mode!r} is unknown; use one of {MODES}")
        if kernels not in KERNEL_MODES:
            raise ConfigError(f"kernels={kernels!r} is unknown; use one of {KERNEL_MODES}")
        if mode == "graph" and model.lm_head.weight.device.type != "cuda":
            raise ConfigError("CUDA graphs need a CUDA device; use compile=eager on CPU")
        self.model, self.max_seq_len, self.mode, self.kernels = model, max_seq_len, mode, kernels
        self.kv_step = kv_step
        self.block_buckets = block_buckets or default_buckets(max_seq_len)
        self.device = model.lm_head.weight.device
        self.graphs: dict[tuple[int, int, bool], _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle() if mode == "graph" else None
        if mode == "graph" and model.model.layers[0].self_attn.qkv_weight is None:
            model.fuse()  # one weight read for q/k/v and for gate/up: 7.30 → 6.70 ms on a 7B verify step (H100)
        model.use_kernels(kernels if kernels in ("elementwise", "layer") else "eager")  # this model only
        self.forward = model.forward_block
        if kernels == "layer":
            self.forward = _with_recompile_limit(model.forward_block)
        if kernels == "block":
            self.forward = _with_recompile_limit(torch.compile(model.forward_block, dynamic=True, fullgraph=True))

    @torch.no_grad()
    def direct(self, ids: torch.Tensor, start: torch.Tensor, kv_len: int, positions: torch.Tensor | None = None,
               intra: torch.Tensor | None = None) -> torch.Tensor:
        """forward_block (compiled per `kernels`) at a device `start` and a static live-cache length, no graph of
        its own: the decode engine captures whole steps (decode/engine.py), this is their building block."""
        return self.forward(ids, start, kv_len, positions, intra)

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, start: int, positions: torch.Tensor | None = None,
                 intra: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, V) for ids (n,) at slots start..start+n−1; positions/intra None = a chain."""
        n = ids.shape[0]
        if self.mode == "eager":
            start_t = torch.tensor(start, device=self.device)
            return self.forward(ids, start_t, start + n, positions, intra)
        n_b = next((b for b in self.block_buckets if b >= n), n)
        if start + n_b > self.max_seq_len:  # no room to pad near the context limit: exact size
            n_b = n
        kv_b = min(self.max_seq_len, -(-(start + n_b) // self.kv_step) * self.kv_step)
        ids_p, pos_p, intra_p = _pad(ids, positions, intra, n_b)
        if self.mode == "padded":
            start_t = torch.tensor(start, device=self.device)
            return self.forward(ids_p, start_t, kv_b, pos_p, intra_p)[:n]
        key = (n_b, kv_b, intra is None)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = _Graph(self.forward, n_b, kv_b, intra is None, self.pool, self.device)
        return graph.run(ids_p, pos_p, start, intra_p)[:n]


def capture_graph(fn, pool=None, warmup: int = 1):
    """fn captured as one CUDA graph (in `pool`) after `warmup` calls on a side stream, so lazy cuBLAS / compile
    work never happens inside the capture; returns (graph, fn's output, which each replay overwrites)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, 1)):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    return graph, out


def _with_recompile_limit(compiled, limit: int = 64):
    """Compile under a raised recompile limit, scoped to these calls (compilation happens at call time): one
    compilation per (model, chain or not, n == 1) is a handful per engine, over dynamo's default of 8."""
    def call(*args):
        with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit, limit)):
            return compiled(*args)
    return call


def _pad(ids, positions, intra, n_b):
    n = ids.shape[0]
    if n_b == n:
        return ids, positions, intra
    pad = n_b - n
    ids_p = torch.cat([ids, ids.new_zeros(pad)])  # (n_b,)
    if intra is None:  # a chain stays a chain: pad rows follow it and no real row sees them
        return ids_p, None, None
    pos_p = torch.cat([positions, positions[-1:].expand(pad)])  # (n_b,) any valid position
    intra_p = torch.eye(n_b, dtype=torch.bool, device=ids.device)  # (n_b, n_b) pad rows: themselves only
    intra_p[:n, :n] = intra
    return ids_p, pos_p, intra_p


class _Graph:
    """One captured forward_block at a fixed (n_b, kv_b, chain or not), with its static inputs and output."""

    def __init__(self, forward, n_b: int, kv_b: int, chain: bool, pool, device):
        self.forward, self.kv_b = forward, kv_b
        self.ids = torch.zeros(n_b, dtype=torch.long, device=device)
        self.start = torch.zeros((), dtype=torch.long, device=device)
        self.positions = None if chain else torch.zeros(n_b, dtype=torch.long, device=device)
        self.intra = None if chain else torch.zeros(n_b, n_b, dtype=torch.bool, device=device)
        self.pool, self.graph, self.out = pool, None, None

    def run(self, ids, positions, start: int, intra) -> torch.Tensor:
        self.ids.copy_(ids)
        self.start.fill_(start)
        if self.intra is not None:
            self.positions.copy_(positions)
            self.intra.copy_(intra)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.out

    def _call(self):
        return self.forward(self.ids, self.start, self.kv_b, self.positions, self.intra)

    def _capture(self) -> None:
        self.graph, self.out = capture_graph(self._call, self.pool)
