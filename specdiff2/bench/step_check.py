"""GPU check of the captured decode step against its eager twin: python -m specdiff2.bench.step_check [overrides].

For every method, the same engine config runs with `compile=graph` (two CUDA graphs per step, stop flags read a
step late) and `compile=eager` (the same device code, launched op by op) on the same prompts:
- greedy tokens, fp32: must be identical (the graphs replay the eager kernels);
- greedy tokens, bf16: agreement rate (graphs of eager kernels here; `kernels=block` adds compiled kernels,
  whose rounding differs: engine_speed reports their agreement with HF);
- temperature 1, fp32, same seeds: identical too (the counter-based RNG gives the same stream in both);
and near the context limit (`max_seq_len` a few tokens past the prompt) the graph run equals the eager run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.bench.decode_methods import token_agreement
from specdiff2.data.prompts import load_prompts
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.pocket.world import ensure_pocket_world

METHODS = ["decode=ar", "decode=sd_ar decode.strategy.gamma=4", "decode=specdiff decode.strategy.gamma=16",
           "decode=specdiff decode.strategy.gamma=8 decode.strategy.steps=2",
           "decode=self_select decode.strategy.gamma=16 decode.strategy.k=4", "decode=diffuspec"]


SMOKE_TEXTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self",
               "for i in range(10):\n"]


def outputs(overrides: list[str], prompts: list[list[int]], max_new: int) -> list[list[int]]:
    engine = engine_from_config(compose("decode", overrides))
    engine.prepare(prompts, max_new)  # as the timed sweeps do: graphs captured from the prepare pass's states
    return [engine.generate(p, max_new, seed=i).token_ids for i, p in enumerate(prompts)]


def compare(base: list[str], method: str, extra: list[str], prompts, max_new: int, kernels: str = "eager") -> float:
    run = [*base, *method.split(), *extra]
    graph = outputs([*run, "compile=graph", f"kernels={kernels}"], prompts, max_new)
    eager = outputs([*run, "compile=eager", "kernels=eager"], prompts, max_new)
    return token_agreement(eager, graph)


def random_world(root: str) -> list[str]:
    """Overrides for the tests' random-init tiny checkpoints (seconds to build): a smoke test of the capture."""
    from specdiff2.bench.random_world import build_tiny_world

    w = build_tiny_world(Path(root))
    return [f"verifier.path={w.verifier}", "verifier.pocket=false", f"drafter.path={w.causal_drafter}",
            "drafter.pocket=false", f"ar_drafter.path={w.ar_drafter}", "ar_drafter.pocket=false", "max_seq_len=512"]


def proxy_overrides(root: str) -> list[str]:
    return ["decode/proxy@decode.models.proxy=ngram", f"decode.models.proxy.source={root}/tokens",
            f"decode.models.proxy.cache_path={root}/ngram.safetensors"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", default=["pocket=gpu"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--random-world", default=None, help="build the tests' tiny random checkpoints here")
    parser.add_argument("--methods", default=None, help="comma-separated indices into METHODS")
    parser.add_argument("--kernels", default="eager", help="the graph runs' kernels (eager: bitwise twins in fp32; "
                        "elementwise / block / layer: compiled, rounding may differ)")
    args = parser.parse_args()
    if args.random_world:
        args.overrides = [*args.overrides, *random_world(args.random_world)]
    cfg = compose("decode", [*args.overrides, f"data.prompts.limit={args.prompts}"])
    if not args.random_world:
        ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir)
    tok = load_tokenizer(instantiate(cfg.verifier).resolve())
    texts = SMOKE_TEXTS if args.random_world else [p.text for p in load_prompts(instantiate(cfg.data.prompts))]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    limit = max(len(p) for p in prompts) + 5
    print(f"device: {torch.cuda.get_device_name()}; {len(prompts)} prompts × {args.max_new_tokens} new tokens; "
          f"graph runs kernels={args.kernels}")
    print("method | fp32 greedy | bf16 greedy | fp32 T=1 same seeds | fp32 greedy at max_seq_len=prompt+5")
    dt = ("verifier.dtype=float32", "drafter.dtype=float32", "ar_drafter.dtype=float32")
    bf16 = ("verifier.dtype=bfloat16", "drafter.dtype=bfloat16", "ar_drafter.dtype=bfloat16")
    methods = METHODS if args.methods is None else [METHODS[int(i)] for i in args.methods.split(",")]
    for method in methods:
        if args.random_world and "diffuspec" in method:
            method = " ".join([method, *proxy_overrides(args.random_world)])
        k = args.kernels
        cells = [compare(args.overrides, method, [*dt, "temperature=0"], prompts, args.max_new_tokens, k),
                 compare(args.overrides, method, [*bf16, "temperature=0"], prompts, args.max_new_tokens, k),
                 compare(args.overrides, method, [*dt, "temperature=1"], prompts, args.max_new_tokens, k),
                 compare(args.overrides, method, [*dt, "temperature=0", f"max_seq_len={limit}"], prompts, 64, k)]
        print(f"{method} | " + " | ".join(f"{c:.3f}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
