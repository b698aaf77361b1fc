"""Tensor-parallel verify-step latency at real shapes with random bf16 weights.

    torchrun --nproc-per-node N -m specdiff2.bench.tp_verify --shape qwen14b [--shape qwen32b ...]
    python -m specdiff2.bench.tp_verify --shape qwen14b          # TP=1, same code path

Each rank builds only its shard (models/parallel.random_sharded_transformer), prefills 512 tokens, then times
1- and 17-token verify steps through the engine's BlockRunner (CUDA graphs; the all-reduces are captured with
the rest). The floor is what one GPU must read per step — its weight shard, the replicated embeddings/head and
its share of the live KV cache — over its measured copy bandwidth. Rank 0 prints one table; `--out` saves JSON.
"""

from __future__ import annotations

import argparse
import json
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from specdiff2.bench.real_shapes import SHAPES, copy_bandwidth, print_rows, weight_bytes
from specdiff2.models.config import ModelArgs
from specdiff2.models.parallel import init_tensor_parallel, random_sharded_transformer
from specdiff2.models.runner import BlockRunner
from specdiff2.models.timing import median_ms

KINDS = {"eager": ("eager", "eager"), "graph": ("graph", "eager"), "graph+elementwise": ("graph", "elementwise"),
         "graph+block-compiled": ("graph", "block")}


def shape_rows(shape: str, tp, prefix: int, sizes, kinds, bw: float, max_seq_len: int = 1024) -> list[dict]:
    args = ModelArgs(**SHAPES[shape])
    device = torch.device("cuda", torch.cuda.current_device())
    model = random_sharded_transformer(args, tp, torch.bfloat16, device).eval()
    model.setup_cache(1, max_seq_len)
    world = tp.world if tp else 1
    gen = torch.Generator(device=device).manual_seed(1)  # same ids on every rank
    ids = torch.randint(0, args.vocab_size, (prefix + max(sizes),), device=device, generator=gen)
    with torch.no_grad():
        model.forward_block(ids[:prefix], torch.zeros((), dtype=torch.long, device=device), prefix)
    kv_heads = model.model.layers[0].self_attn.num_kv_heads
    kv_per_token = 2 * args.num_layers * kv_heads * args.head_dim * 2  # this rank's bf16 K+V
    rows = []
    for label in kinds:
        mode, kernels = KINDS[label]
        try:
            runner = BlockRunner(model, max_seq_len, mode, kernels=kernels)
            for n in sizes:
                ms = median_ms(lambda: runner(ids[prefix: prefix + n], prefix))  # noqa: B023 (called here)
                floor_ms = (weight_bytes(model) + kv_per_token * (prefix + n)) / bw * 1e3
                rows.append({"shape": shape, "tp": world, "mode": label, "tokens": n, "ms": ms,
                             "floor_ms": floor_ms, "of_floor": floor_ms / ms,
                             "gb_per_gpu": weight_bytes(model) / 1e9})
        except Exception as err:  # noqa: BLE001 — one mode failing (e.g. compile under NCCL) must not hide the others
            if tp is None or tp.rank == 0:
                traceback.print_exc()
            rows.append({"shape": shape, "tp": world, "mode": label, "error": f"{type(err).__name__}: {err}"[:200]})
    del model
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES))
    parser.add_argument("--prefix", type=int, default=512)
    parser.add_argument("--kinds", default="eager,graph,graph+block-compiled")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    tp = init_tensor_parallel("cuda")
    rank = tp.rank if tp else 0
    bw = copy_bandwidth()
    rows = []
    for shape in args.shape or ["qwen14b"]:
        rows += shape_rows(shape, tp, args.prefix, (1, 17), args.kinds.split(","), bw)
    if tp is not None:  # a step is as slow as its slowest rank
        gathered = [None] * tp.world
        dist.all_gather_object(gathered, rows)
        for i, row in enumerate(rows):
            if "ms" in row:
                row["ms_max_rank"] = max(g[i]["ms"] for g in gathered)
    if rank == 0:
        name = torch.cuda.get_device_name()
        print(f"copy bandwidth {bw / 1e12:.2f} TB/s per GPU; {tp.world if tp else 1} x {name}")
        print_rows([r for r in rows if "ms" in r], f"verify step after {args.prefix} tokens, TP={tp.world if tp else 1}, {name}")
        for r in rows:
            if "error" in r:
                print(f"{r['shape']} {r['mode']}: {r['error']}")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"tp_verify_tp{tp.world if tp else 1}.json").write_text(
                json.dumps({"device": name, "copy_bw": bw, "rows": rows}, indent=2))
    if tp is not None:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
