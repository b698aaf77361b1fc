"""Engine speed against the fastest external baseline: python -m specdiff2.bench.engine_speed [overrides] [--real-shapes].

One process, one GPU, the GPU pocket world. Per prompt set (HumanEval and the held-out code set): HF `generate`
with a dynamic cache, with a static cache (compiled by transformers, warmed at the timed shapes), and assisted
generation with the pocket AR drafter (best schedule); then the engine's methods. One table per prompt set:
τ, tok/s, ratio to HF static, the time split (drafter / verifier / other) and agreement with HF static's greedy
tokens. Then a profiler breakdown of one generation for `ar` and `specdiff`, and with --real-shapes the
Qwen2.5-7B-shape tables of `real_shapes`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.bench.decode_methods import token_agreement
from specdiff2.bench.hf_baselines import hf_rows
from specdiff2.data.prompts import load_prompts
from specdiff2.decode.loading import load_verifier
from specdiff2.decode.metrics import aggregate
from specdiff2.decode.run import pick_device
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.pocket.world import ensure_pocket_world

METHODS = [
    "decode=ar",
    "decode=sd_ar decode.strategy.gamma=4",
    "decode=sd_ar decode.strategy.gamma=8",
    "decode=specdiff decode.strategy.gamma=16",
    "decode=specdiff decode.strategy.gamma=16 decode.models.drafter.cache=exact",
    "decode=specdiff decode.strategy.gamma=32",
    "decode=self_select decode.strategy.gamma=16 decode.strategy.k=4",
    "decode=self_select decode.strategy.gamma=16 decode.strategy.k=1 decode.strategy.drafter_temperature=0.1",
    "decode=self_select decode.strategy.gamma=16 decode.strategy.k=4 decode.strategy.drafter_temperature=0.1",
    "decode=diffuspec",
    "decode=tree decode.strategy.nodes=16",
    "decode=tree decode.strategy.nodes=32",
    "decode=tree decode.strategy.nodes=64",
]


def engine_rows(base_overrides: list[str], methods: list[str], prompts: list[list[int]], max_new: int) -> list[dict]:
    """One verifier (and its captured graphs) shared by every method; each method brings its own drafters."""
    rows = []
    base = compose("decode", base_overrides)
    verifier, tok = load_verifier(instantiate(base.verifier), pick_device(base.device), base.max_seq_len,
                                  base.compile, base.kernels)
    for method in methods:
        cfg = compose("decode", [*base_overrides, *method.split()])
        try:
            engine = engine_from_config(cfg, verifier, tok)
        except Exception as err:  # one broken method must not cost the whole GPU run: report it in the table
            rows.append({"method": method, "error": f"{type(err).__name__}: {err}"})
            continue
        for ids in prompts:  # warm-up at the timed shapes: every graph captured, every kernel compiled
            engine.generate(ids, max_new)
        gens = [engine.generate(ids, max_new, seed=cfg.seed + i) for i, ids in enumerate(prompts)]
        rows.append({"method": method, **aggregate([g.metrics for g in gens]),
                     "outputs": [g.token_ids for g in gens]})
        print(json.dumps({k: rows[-1][k] for k in ("method", "mean_accept_len", "tokens_per_s")}), flush=True)
        del engine
    return rows


def profile_one(base_overrides: list[str], method: str, ids: list[int], max_new: int) -> str:
    """Top operators by GPU time for one warmed generation, and GPU-busy (kernel time) against wall per step."""
    from torch.profiler import ProfilerActivity, profile

    engine = engine_from_config(compose("decode", [*base_overrides, *method.split()]))
    engine.generate(ids, max_new)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        gen = engine.generate(ids, max_new)
    steps = gen.metrics["verifier_steps"]
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    table = events.table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=50)
    return (f"--- {method}: {steps} steps, wall {gen.metrics['wall_s'] * 1e3 / steps:.3f} ms/step (profiled), "
            f"kernels {kernel_us / 1e3 / steps:.3f} ms/step ---\n{table}")


def per_step(r: dict, key: str) -> float:
    return 1e3 * r.get(key, 0.0) / max(1, r.get("verifier_steps", 1))


def print_rows(rows: list[dict], title: str, static_tps: float, ref_outputs) -> None:
    """Wall and GPU-busy per step side by side: GPU-busy is the drafter + verifier phases timed with CUDA events
    around their graph replays (the host runs ahead, so the events bracket GPU work); wall / GPU-busy is the
    host's share of the step."""
    table = Table(title=title)
    for col in ("method", "τ", "tok/s", "x HF static", "wall ms/step", "GPU ms/step", "wall/GPU", "draft ms",
                "verify ms", "other %", "agree"):
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["method"], "error", r["error"][:80], *[""] * 8)
            continue
        wall, busy = per_step(r, "wall_s"), per_step(r, "drafter_s") + per_step(r, "verifier_s")
        engine_row = "drafter_s" in r
        table.add_row(r["method"], f"{r.get('mean_accept_len', 1.0):.2f}", f"{r['tokens_per_s']:.0f}",
                      f"{r['tokens_per_s'] / static_tps:.2f}x", f"{wall:.3f}" if engine_row else "",
                      f"{busy:.3f}" if engine_row else "", f"{wall / busy:.2f}" if engine_row and busy else "",
                      f"{per_step(r, 'drafter_s'):.3f}" if engine_row else "",
                      f"{per_step(r, 'verifier_s'):.3f}" if engine_row else "",
                      f"{100 * (1 - busy / wall):.0f}%" if engine_row and wall else "",
                      f"{token_agreement(ref_outputs, r['outputs']):.3f}")
    Console(width=220).print(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", default=["pocket=gpu"])
    parser.add_argument("--sets", default="humaneval,heldout", help="prompt sets (conf/data options)")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--method", action="append", help="engine method overrides (default: METHODS)")
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--real-shapes", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    base = compose("decode", args.overrides)
    world = ensure_pocket_world(instantiate(base.pocket), base.paths.pocket_dir)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else str(pick_device("auto"))
    results = {"device": device, "sets": {}}
    for name in args.sets.split(","):
        cfg = compose("decode", [*args.overrides, f"data={name}", f"data.prompts.limit={args.prompts}"])
        tok = load_tokenizer(instantiate(cfg.verifier).resolve())  # engine_rows loads the verifier itself
        prompts = [tok(p.text, add_special_tokens=False)["input_ids"] for p in load_prompts(instantiate(cfg.data.prompts))]
        hf = [] if args.no_hf else hf_rows(world.verifier, world.ar_drafter, prompts, args.max_new_tokens,
                                           tok.eos_token_id)
        rows = engine_rows([*args.overrides, f"data={name}"], args.method or METHODS, prompts, args.max_new_tokens)
        static = next((r for r in hf if "static" in r["method"]), None)
        ref = static["outputs"] if static else next(r["outputs"] for r in rows if "outputs" in r)
        print_rows(hf + rows, f"{name}: {len(prompts)} prompts × {args.max_new_tokens} new tokens, greedy, bf16, "
                   f"{device}", static["tokens_per_s"] if static else rows[0]["tokens_per_s"], ref)
        results["sets"][name] = [{k: v for k, v in r.items() if k != "outputs"} for r in hf + rows]
    if args.profile:
        for method in ("decode=ar", "decode=specdiff decode.strategy.gamma=16",
                       "decode=self_select decode.strategy.gamma=16 decode.strategy.k=4", "decode=diffuspec"):
            try:  # a broken method must not cost the rest of the GPU run
                print(profile_one(args.overrides, method, prompts[0], 64))
            except Exception as err:  # noqa: BLE001
                print(f"--- {method}: profile failed: {type(err).__name__}: {err}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "engine_speed.json").write_text(json.dumps(results, indent=2))
    if args.real_shapes:
        from specdiff2.bench import real_shapes

        real_shapes.main_with(["--out", args.out] if args.out else [])


if __name__ == "__main__":
    main()
