"""Median wall time of a forward, as the benches and the pocket world's cost ratio measure it.

On CUDA the call is timed with CUDA events (GPU-busy time of what it launches); with `capture=True` it is first
captured as one CUDA graph (warmed on a side stream, so lazy cuBLAS / compile work stays out of the capture) and
the replays are timed: the cost of the forward as the engine's captured step pays it, without Python or launch
overhead. On CPU the eager call is timed with perf_counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from specdiff2.models.runner import capture_graph


def median_ms(fn: Callable[[], object], iters: int = 30, warmup: int = 3, *,
              device: torch.device | str = "cuda", capture: bool = False) -> float:
    """Median ms of `iters` calls of fn() after `warmup` untimed ones (see the module docstring)."""
    cuda = torch.device(device).type == "cuda"
    if cuda and capture:
        fn = capture_graph(fn, warmup=warmup)[0].replay
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]
