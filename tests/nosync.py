"""Host-sync detection on CPU: a captured CUDA step must never read a device value on the host.

`.item()`, `int(t)`, `x[t]` with a 0-d tensor index and boolean-mask indexing all go through
`aten::_local_scalar_dense` or `aten::nonzero`; the profiler sees them on CPU too, so a CPU test can prove a step
capturable without a GPU.
"""

from __future__ import annotations

import torch

from specdiff2.bench.step_ops import steady_step

SYNC_OPS = ("aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::is_nonzero")


def host_syncs(fn) -> list[str]:
    """Names of the host-syncing ops `fn()` runs (empty list: none)."""
    with torch.autograd.profiler.profile() as prof:
        fn()
    return [e.name for e in prof.function_events if e.name in SYNC_OPS]


def engine_step_syncs(engine, prompt: list[int], kv_len: int | None = None) -> list[str]:
    """Set up `engine` on `prompt` like `generate`, run one step (draft + verify phases) and list its syncs."""
    bucket = steady_step(engine, prompt)  # state, caches and adaptive state as after a real start
    kv = kv_len or bucket
    return host_syncs(lambda: engine._verify_phase(engine._draft_phase(kv), kv))
