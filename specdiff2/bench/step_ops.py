"""Device ops per engine phase, on CPU: python -m specdiff2.bench.step_ops [--method "decode=tree ..."]...

At pocket scale a captured step is launch-bound (issue 24's GPU run: the best-first tree's draft phase 1.0 ms/step
against the chain's 0.24 ms; self-selection's multi-draft rejection 13 ms/step at K=16), so the number of
kernel-launching ops in the draft and the verify phase is the first thing to watch. This counts them with the
profiler on the tiny random world (bench/random_world.py), eagerly on CPU: the outermost aten ops that are not
views or metadata (a proxy, not a launch count of the compiled graph), per method and temperature, in one table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.bench.random_world import build_tiny_world

# Ops that move no data on a GPU (views, metadata, allocations, host scalars): not kernel launches.
NOT_KERNELS = frozenset(f"aten::{n}" for n in (
    "as_strided", "view", "_unsafe_view", "empty", "empty_strided", "empty_like", "resolve_conj", "resolve_neg",
    "resize_", "to", "_to_copy", "scalar_tensor", "result_type", "expand", "slice", "select", "alias", "t",
    "transpose", "reshape", "_reshape_alias", "unsqueeze", "squeeze", "permute", "detach", "lift_fresh", "split",
    "unbind", "chunk", "narrow", "flatten", "contiguous"))
METHODS = ["decode=ar", "decode=specdiff", "decode=tree decode.strategy.nodes=32", "decode=tree decode.strategy.nodes=128",
           "decode=self_select decode.strategy.k=4", "decode=self_select decode.strategy.k=16"]


def _kernel(event) -> bool:
    return event.name.startswith("aten::") and event.name not in NOT_KERNELS


def device_ops(fn) -> int:
    """Outermost aten ops that are not views/metadata: `x + 1` is one op (its scalar conversion inside is not)."""
    with torch.autograd.profiler.profile() as prof:
        fn()
    count = 0
    for e in prof.function_events:
        parent, inside = e.cpu_parent, False
        while parent is not None and not inside:
            inside, parent = _kernel(parent), parent.cpu_parent
        count += _kernel(e) and not inside
    return count


def steady_step(engine, prompt: list[int]) -> int:
    """Set `engine` up on `prompt` as `generate` leaves it mid-run (state, caches, adaptive state), still live;
    returns the live-cache bucket its next step runs at."""
    engine.generate(prompt, 1)
    st = engine.state
    st.done.zero_()
    st.max_new.fill_(64)
    return engine._bucket(int(st.length) + engine.depth + 1)


def phase_ops(engine, prompt: list[int]) -> tuple[int, int]:
    """(draft ops, verify ops) of one steady-state step."""
    kv = steady_step(engine, prompt)
    held = {}
    draft = device_ops(lambda: held.setdefault("draft", engine._draft_phase(kv)))
    return draft, device_ops(lambda: engine._verify_phase(held["draft"], kv))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", action="append", help="decode.py overrides of one method (repeatable)")
    parser.add_argument("--temperatures", default="0,1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        w = build_tiny_world(Path(tmp))
        base = [f"verifier.path={w.verifier}", "verifier.pocket=false", f"drafter.path={w.drafter}",
                "drafter.pocket=false", f"ar_drafter.path={w.ar_drafter}", "ar_drafter.pocket=false",
                "max_seq_len=160", "device=cpu"]
        table = Table(title="device ops per engine step (CPU profiler, tiny random world; views/metadata excluded)")
        for col in ("method", "T", "draft ops", "verify ops", "nodes"):
            table.add_column(col, justify="right")
        for method in args.method or METHODS:
            for t in args.temperatures.split(","):
                engine = engine_from_config(compose("decode", [*base, *method.split(), f"temperature={t}"]))
                draft, verify = phase_ops(engine, [5, 17, 42, 99, 7, 3])
                table.add_row(method, t, str(draft), str(verify), str(engine.layout.nodes))
        Console(width=160).print(table)


if __name__ == "__main__":
    main()
