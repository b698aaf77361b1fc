"""Trajectory sampling tokens/s against Hugging Face `generate` with a static cache, same prompts, same device.

    python -m specdiff2.bench.trajectories_speed --shape qwen7b            # random Qwen2.5-7B-shape bf16 weights
    python -m specdiff2.bench.trajectories_speed --verifier DIR            # a checkpoint (e.g. the pocket verifier)
    torchrun --nproc-per-node 2 -m specdiff2.bench.trajectories_speed --shape qwen32b   # TP=2, engine only
    python -m specdiff2.bench.trajectories_speed --shape tiny --device cpu --batch 4 --new-tokens 8   # smoke

Both sides sample `--batch` rows of `--prompt-tokens` random prompt tokens for exactly `--new-tokens` tokens
(no stop id can end a row) with the same temperature / top-p, top-k off. The engine is the trajectory sampler
(data/ar_sampler.py through models/row_runner.py: CUDA graphs per batch x live-cache bucket on CUDA), once while
recording the top-k log-probs a store keeps and once without. HF is `generate(cache_implementation="static")`
(transformers compiles its decode step on CUDA) sharing the engine's weights. Each side runs once untimed at the
timed shapes (graph capture, compilation), then `--repeats` timed runs; the best is reported. The table names the
device; --out writes the rows as JSON; --check adds greedy graph-vs-eager token agreement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from specdiff2.bench.real_shapes import SHAPES, print_rows
from specdiff2.data.ar_sampler import TrajectoryLimits, sample_tokens
from specdiff2.decode.sampling import SamplingParams
from specdiff2.models.config import ModelArgs
from specdiff2.models.parallel import init_tensor_parallel, random_sharded_transformer
from specdiff2.models.row_runner import RowRunner
from specdiff2.models.runner import resolve_execution
from specdiff2.models.transformer import Transformer

TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
        "num_kv_heads": 2, "head_dim": 16, "qkv_bias": True, "max_position_embeddings": 1024}


def hf_config(args: ModelArgs):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                       intermediate_size=args.intermediate_size, num_hidden_layers=args.num_layers,
                       num_attention_heads=args.num_heads, num_key_value_heads=args.num_kv_heads,
                       head_dim=args.head_dim, rms_norm_eps=args.rms_norm_eps,
                       max_position_embeddings=args.max_position_embeddings,
                       tie_word_embeddings=args.tie_word_embeddings, use_sliding_window=False,
                       rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta})


def random_pair(args: ModelArgs, dtype: torch.dtype, device: torch.device, with_hf: bool):
    """(engine model, HF model or None) with the same random weights: HF's initialisation (normal, std 0.02),
    shared by the engine's `Transformer` (the parameter names are HF's), so nothing is held twice."""
    if not with_hf:
        return random_sharded_transformer(args, None, dtype, device), None
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        hf = Qwen2ForCausalLM._from_config(hf_config(args), dtype=dtype).eval()
    with torch.device("meta"):
        model = Transformer(args)
    model.load_state_dict(hf.state_dict(), assign=True)
    if args.tie_word_embeddings:
        model.tie_weights()
    hf.requires_grad_(False)  # the shared tensors: neither side records autograd
    return model.eval(), hf


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Best wall seconds of `repeats` calls after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def engine_rows(model: Transformer, prompts: torch.Tensor, a, device: torch.device) -> list[dict]:
    mode, kernels = resolve_execution(a.compile, a.kernels, device)
    runner = RowRunner(model, mode, kernels)
    sampling = SamplingParams(a.temperature, 0, a.top_p)
    rows_ids = prompts.tolist()
    out = []
    for topk in (a.topk, 0):
        limits = TrajectoryLimits(a.new_tokens, topk)
        gen = torch.Generator(device=device).manual_seed(0)
        seconds = _timed(lambda lim=limits, g=gen: sample_tokens(runner, rows_ids, sampling, lim, -1, g, pad_id=0),
                         device, a.repeats)  # eos -1: no row ever stops
        label = f"engine trajectories ({mode}/{kernels}), top-{topk} log-probs" if topk else \
            f"engine trajectories ({mode}/{kernels}), no log-probs"
        out.append({"method": label, "seconds": seconds, "tok/s": prompts.shape[0] * a.new_tokens / seconds})
    return out


def graph_check(model: Transformer, prompts: torch.Tensor, a, device: torch.device) -> str:
    """Greedy tokens of the eager runner vs the `--compile/--kernels` one, same model and prompts: how many rows
    agree over min(new_tokens, 64) tokens (bf16 may flip a near-tie argmax; fp32 should agree everywhere)."""
    limits = TrajectoryLimits(min(a.new_tokens, 64))
    rows_ids = prompts.tolist()
    eager = sample_tokens(RowRunner(model), rows_ids, SamplingParams(0.0), limits, -1, pad_id=0)[0]
    mode, kernels = resolve_execution(a.compile, a.kernels, device)
    fast = sample_tokens(RowRunner(model, mode, kernels), rows_ids, SamplingParams(0.0), limits, -1, pad_id=0)[0]
    same = (eager == fast).all(dim=1)  # (B,)
    return f"greedy {mode}/{kernels} == eager: {int(same.sum())}/{len(same)} rows over {limits.max_new_tokens} tokens"


def hf_row(hf, prompts: torch.Tensor, a, device: torch.device) -> dict:
    def run():
        out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, temperature=a.temperature,
                          top_p=a.top_p, top_k=0, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                          cache_implementation="static", pad_token_id=0, eos_token_id=None)
        assert out.shape[1] == prompts.shape[1] + a.new_tokens, out.shape
    seconds = _timed(run, device, a.repeats)
    return {"method": "HF generate, static cache (compiled on CUDA, warmed)", "seconds": seconds,
            "tok/s": prompts.shape[0] * a.new_tokens / seconds}


def main() -> None:
    main_with(None)


def main_with(argv: list[str] | None) -> list[dict]:
    a = _parser().parse_args(argv)
    device = torch.device(a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, a.dtype)
    tp = init_tensor_parallel(device.type)  # torchrun: one TP group over every process, engine only
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    if a.verifier:
        model, hf, label = _checkpoint_pair(a.verifier, dtype, device, tp)
    else:
        args = ModelArgs(**(TINY if a.shape == "tiny" else SHAPES[a.shape]))
        label = f"{a.shape} shape, random weights"
        if tp is None:
            model, hf = random_pair(args, dtype, device, not a.skip_hf)
        else:
            model, hf = random_sharded_transformer(args, tp, dtype, device), None
    prompts = torch.randint(0, model.args.vocab_size, (a.batch, a.prompt_tokens),
                            generator=torch.Generator().manual_seed(a.seed)).to(device)  # (B, P)
    rows = [hf_row(hf, prompts, a, device)] if hf is not None else []
    del hf
    rows += engine_rows(model, prompts, a, device)
    check = graph_check(model, prompts, a, device) if a.check else None
    gpus = 1 if tp is None else tp.world
    base = rows[0]["tok/s"] if rows[0]["method"].startswith("HF") else None
    for r in rows:
        r.update({"x HF static": r["tok/s"] / base if base else float("nan"), "tok/s per GPU": r["tok/s"] / gpus})
    if tp is None or tp.rank == 0:
        title = (f"trajectory sampling, {label}, {a.dtype}, batch {a.batch}, {a.prompt_tokens} prompt + "
                 f"{a.new_tokens} new tokens, T={a.temperature} top-p={a.top_p}, {name}"
                 + (f" x {gpus} (TP={gpus})" if gpus > 1 else ""))
        print_rows(rows, title)
        if check:
            print(check)
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            stem = Path(a.verifier).name if a.verifier else a.shape
            (Path(a.out) / f"trajectories_speed_{stem}_tp{gpus}.json").write_text(
                json.dumps({"device": name, "title": title, "rows": rows, "check": check}, indent=2))
    return rows


def _checkpoint_pair(path: str, dtype, device, tp):
    from specdiff2.bench.hf_baselines import load_hf
    from specdiff2.models.checkpoint import load_transformer
    from specdiff2.models.parallel import load_sharded_transformer

    if tp is not None:
        return load_sharded_transformer(path, tp, dtype, device)[0], None, path
    return load_transformer(path, dtype, device)[0], load_hf(path, dtype, device), path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="qwen7b", choices=[*sorted(SHAPES), "tiny"])
    p.add_argument("--verifier", default=None, help="a checkpoint directory instead of random weights")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.5)  # SpecDiff-2's trajectory recipe
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--topk", type=int, default=16, help="log-probs the store keeps per token")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="auto")
    p.add_argument("--kernels", default="auto")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--check", action="store_true", help="also compare greedy tokens: graph runner vs eager")
    p.add_argument("--out", default=None)
    return p


if __name__ == "__main__":
    main()
