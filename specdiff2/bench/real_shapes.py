"""Real-size step latency with random bf16 weights: python -m specdiff2.bench.real_shapes [--shape qwen7b].

Verifier verify steps of 1, 5, 17 and 33 tokens after a 512-token prefix, against the bandwidth floor
(weight bytes + live KV bytes over the measured device-to-device copy bandwidth), for each execution mode:
eager, CUDA graph, CUDA graph + compiled elementwise kernels. Then one diffusion-drafter pass (Dream-7B shape =
Qwen2.5-7B shape, bidirectional) for γ = 16 and 32 after 512 tokens: exact (re-encode all) vs prefix cache.
Then the verify-cost-vs-N table of draft trees (issue 24): one tree pass of N nodes + the root (ancestor mask, as the
engine verifies a `tree` draft) against the 1-token step, to show where width stops being free.
Prints one table per section; the device is named in the title.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from specdiff2.decode.draft import Layout
from specdiff2.models.drafters import DiffusionDrafter
from specdiff2.models.runner import BlockRunner
from specdiff2.models.timing import median_ms
from specdiff2.models.transformer import ModelArgs, Transformer

SHAPES = {  # config.json fields of the public checkpoints
    "qwen7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                   num_kv_heads=4, head_dim=128, qkv_bias=True, rope_theta=1e6, max_position_embeddings=32768),
    "qwen14b": dict(vocab_size=152064, hidden_size=5120, intermediate_size=13824, num_layers=48, num_heads=40,
                    num_kv_heads=8, head_dim=128, qkv_bias=True, rope_theta=1e6, max_position_embeddings=32768),
    "qwen32b": dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_layers=64, num_heads=40,
                    num_kv_heads=8, head_dim=128, qkv_bias=True, rope_theta=1e6, max_position_embeddings=32768),
    "qwen72b": dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_layers=80, num_heads=64,
                    num_kv_heads=8, head_dim=128, qkv_bias=True, rope_theta=1e6, max_position_embeddings=32768),
    "pocket": dict(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_layers=12, num_heads=8,
                   num_kv_heads=2, head_dim=64, qkv_bias=True, max_position_embeddings=2048),
}


def random_model(shape: str, device="cuda", dtype=torch.bfloat16, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Transformer(ModelArgs(**SHAPES[shape]))
    model = model.to_empty(device=device).to(dtype)
    for p in model.parameters():  # random, not zeros: zeros hide wrong indexing and run faster
        p.data.normal_(0, 0.02)
    return model.eval()


def copy_bandwidth(nbytes: int = 2 << 30) -> float:
    """Measured device-to-device copy bandwidth, bytes read + written per second."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 20)
    return 2 * nbytes / (ms / 1e3)


def weight_bytes(model: Transformer) -> int:
    seen = {}
    for p in model.parameters():
        seen[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    return sum(seen.values())


MODES = {  # label -> (BlockRunner mode, kernels)
    "eager": ("eager", "eager"),
    "graph": ("graph", "eager"),
    "graph+elementwise": ("graph", "elementwise"),
    "graph+block-compiled": ("graph", "block"),
    "graph+layer-compiled": ("graph", "layer"),  # one compiled layer shared by all: compile time flat in depth
}
COMPILED = ("graph+block-compiled", "graph+layer-compiled")  # the engine's compiled modes (no unfused rows)


def floor_ms(model: Transformer, bw: float, live_tokens: int) -> float:
    """Bandwidth floor of one forward: every weight byte and the live bf16 K+V read once, at the copy bandwidth."""
    kv_per_token = 2 * model.args.num_layers * model.args.num_kv_heads * model.args.head_dim * 2
    return (weight_bytes(model) + kv_per_token * live_tokens) / bw * 1e3


def verify_rows(model: Transformer, prefix: int, sizes, modes, bw: float, max_seq_len: int = 1024) -> list[dict]:
    model.setup_cache(1, max_seq_len)
    dev = model.lm_head.weight.device
    ids = torch.randint(0, model.args.vocab_size, (prefix + max(sizes),), device=dev)
    model.forward_block(ids[:prefix], torch.zeros((), dtype=torch.long, device=dev), prefix)
    rows = []
    for label in modes:
        mode, kernels = MODES[label]
        runner = BlockRunner(model, max_seq_len, mode, kernels=kernels)
        for n in sizes:
            ms = median_ms(lambda: runner(ids[prefix: prefix + n], prefix))
            floor = floor_ms(model, bw, prefix + n)
            rows.append({"mode": label, "tokens": n, "ms": ms, "floor_ms": floor, "of_floor": floor / ms})
    return rows


def full_tree(nodes: int, branch: int, device) -> Layout:
    """The engine's layout (decode/draft.Layout.tree) of a full `branch`-ary tree of `nodes` nodes under the root,
    in topological order: the shape a best-first budget fills first."""
    parents = [i // branch - 1 for i in range(nodes)]  # −1: a child of the root
    depth = []
    for p in parents:
        depth.append(0 if p < 0 else depth[p] + 1)
    return Layout.tree(torch.tensor(parents, device=device), torch.tensor(depth, device=device), max(depth) + 1)


def tree_rows(model: Transformer, prefix: int, nodes, bw: float, branch: int = 4,
              max_seq_len: int = 1024, kernels: str = "block") -> list[dict]:
    """A tree verify pass of N nodes + root after `prefix` tokens (graph + compiled kernels), vs 1 token,
    with the ancestor mask and depths the engine's tree path passes (Verifier.verify)."""
    model.setup_cache(1, max_seq_len)
    dev = model.lm_head.weight.device
    ids = torch.randint(0, model.args.vocab_size, (prefix + max(nodes) + 1,), device=dev)
    runner = BlockRunner(model, max_seq_len, "graph", kernels=kernels)
    one = median_ms(lambda: runner(ids[prefix: prefix + 1], prefix))
    rows = [{"nodes": 0, "tokens": 1, "ms": one, "x_1_token": 1.0, "floor_ms": floor_ms(model, bw, prefix + 1)}]
    for n in nodes:
        layout = full_tree(n, branch, dev)
        block = ids[prefix: prefix + n + 1]
        ms = median_ms(lambda block=block, layout=layout: runner(block, prefix, prefix + layout.depth, layout.intra))
        rows.append({"nodes": n, "tokens": n + 1, "ms": ms, "x_1_token": ms / one,
                     "floor_ms": floor_ms(model, bw, prefix + n + 1)})
    return rows


def drafter_rows(model: Transformer, prefix: int, gammas, kernels: str, max_seq_len: int = 1024) -> list[dict]:
    """One diffusion-drafter pass as the engine's captured step runs it: γ masks after `prefix` committed tokens
    (prefix cache: the last γ+1 committed tokens re-encoded; exact: the whole live cache)."""
    dev = model.lm_head.weight.device
    proposable = torch.ones(model.args.vocab_size, dtype=torch.bool, device=dev)
    seq = torch.randint(0, model.args.vocab_size - 2, (max_seq_len + 256,), device=dev)
    length = torch.tensor(prefix, device=dev)
    rows = []
    for cache in ("exact", "prefix"):
        drafter = DiffusionDrafter(model, model.args.vocab_size - 1, True, proposable, max_seq_len, cache,
                                   "bidirectional", "graph", kernels)
        drafter.prefill(seq[:prefix])
        for gamma in gammas:
            canvas = torch.full((gamma,), model.args.vocab_size - 1, device=dev)
            kv_len = min(drafter.cache_len, -(-(prefix + 2 * gamma + 2) // 128) * 128)
            ms = median_ms(lambda: drafter.window_logits_at(seq, length, canvas, kv_len, gamma + 1), capture=True)
            rows.append({"cache": cache, "gamma": gamma, "prefix": prefix, "ms": ms})
    return rows


def print_rows(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="right")
    for r in rows:
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()])
    Console(width=160).print(table)


def main() -> None:
    main_with(None)


def main_with(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="qwen7b", choices=sorted(SHAPES))
    parser.add_argument("--prefix", type=int, default=512)
    parser.add_argument("--modes", default="eager,graph,graph+elementwise,graph+block-compiled")
    parser.add_argument("--tree-nodes", default="8,16,32,64,128,256", help="draft-tree node budgets N ('' skips)")
    parser.add_argument("--sections", default="verify,drafter,tree")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    name = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    model = random_model(args.shape)
    print(f"{args.shape}: {weight_bytes(model) / 1e9:.2f} GB of weights; copy bandwidth {bw / 1e12:.2f} TB/s")
    modes = args.modes.split(",")
    rows, drafts, trees = [], [], []
    if "verify" in sections:
        rows = verify_rows(model, args.prefix, (1, 5, 17, 33), [m for m in modes if m not in COMPILED], bw)
    model.fuse()
    if "verify" in sections:
        rows += [{**r, "mode": r["mode"] + " +fused-qkv/mlp"}
                 for r in verify_rows(model, args.prefix, (1, 5, 17, 33), [m for m in modes if m != "eager"], bw)]
        print_rows(rows, f"{args.shape} verify step after {args.prefix} tokens, {name}")
    compiled = next((MODES[m][1] for m in COMPILED if m in modes), "block")  # the first compiled mode asked for
    if "tree" in sections and args.tree_nodes:
        trees = tree_rows(model, args.prefix, [int(n) for n in args.tree_nodes.split(",")], bw, kernels=compiled)
        print_rows(trees, f"{args.shape} tree verify pass of N nodes + root after {args.prefix} tokens "
                          f"(graph + {compiled}-compiled, fused), {name}")
    if "drafter" in sections:
        drafts = drafter_rows(model, args.prefix, (16, 32), "layer" if compiled == "layer" else "elementwise")
        print_rows(drafts, f"{args.shape}-shape diffusion drafter pass (bidirectional), {name}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"real_shapes_{args.shape}.json").write_text(json.dumps(
            {"device": name, "copy_bw": bw, "verify": rows, "drafter": drafts, "tree": trees}, indent=2))


if __name__ == "__main__":
    main()
