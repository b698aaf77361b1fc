"""Issue-4 comparison in one process: python -m specdiff2.bench.distill_arms [overrides] [--out DIR].

Trains each arm (unaligned = export only, AR-distilled = per-position CE, streak-distilled) with
train.py's pipeline (`run_distillation` of the config's `job`) on the same trajectories and step budget,
then decodes HumanEval prompts with
`specdiff` (γ, T=1, temperature 0) using each exported drafter. Also times packed vs one-window-per-
forward training. Prints: τ, α_1..α_γ, tok/s per arm, whether val E[streak] flattened (report/stats.plateau);
windows/s per packing; wall times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.data.prompts import load_prompts
from specdiff2.decode.loading import load_verifier
from specdiff2.decode.metrics import aggregate
from specdiff2.decode.run import pick_device
from specdiff2.pocket.world import ensure_pocket_world
from specdiff2.report.stats import plateau
from specdiff2.training.pipeline import run_distillation


def train_arm(overrides: list[str]) -> dict:
    """One arm, wired as train.py wires it (the job, then the pocket world when a ref needs it). `overrides`
    name the experiment and paths.output_dir (bench/reproduce.py builds them from conf/reproduce.yaml)."""
    cfg = compose("train", ["logger=csv", "progress_bar=false", *overrides])
    t0 = time.perf_counter()
    job = instantiate(cfg.job)
    if job.verifier.pocket or job.drafter.pocket:
        ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir)
    summary = run_distillation(job)
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def evaluate(drafters: dict[str, str], overrides: list[str], gamma: int, n_prompts: int, max_new: int) -> dict:
    """specdiff (γ, one pass, greedy) with each arm's exported drafter, built from the decode config as decode.py
    builds it (its job), on one shared verifier."""
    base = [*overrides, "decode=specdiff", f"decode.strategy.gamma={gamma}", "decode.strategy.steps=1",
            "temperature=0"]
    cfg = compose("decode", base)
    verifier, tok = load_verifier(instantiate(cfg.verifier), pick_device(cfg.device), cfg.max_seq_len, cfg.compile,
                                  cfg.kernels)
    prompts = load_prompts(instantiate(cfg.data.prompts))[:n_prompts]
    encoded = [tok(p.text, add_special_tokens=False)["input_ids"] for p in prompts]
    results = {}
    for arm, path in drafters.items():
        engine = engine_from_config(compose("decode", [*base, f"drafter.path={path}"]), verifier, tok)
        engine.generate(encoded[0], 16)
        results[arm] = aggregate([engine.generate(ids, max_new).metrics for ids in encoded])
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", help="overrides for both train.py and decode.py configs")
    parser.add_argument("--train-overrides", nargs="*", default=[])
    parser.add_argument("--arms", default="unaligned,distill_ce,distill_streak")
    parser.add_argument("--prefix", default="gpu_", help="experiment name prefix (gpu_ or empty for CPU)")
    parser.add_argument("--gamma", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--sets", default="humaneval,heldout", help="prompt sets (conf/data options) to decode")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--packing-steps", type=int, default=0, help=">0: also time packing exact vs none")
    parser.add_argument("--out", default="outputs/distill_arms")
    args = parser.parse_args()
    out = Path(args.out)
    runs, drafters = {}, {}
    for arm in args.arms.split(","):
        summary = train_arm([f"experiment={args.prefix + arm}", f"paths.output_dir={out / arm}", *args.overrides,
                             *args.train_overrides])
        runs[arm] = summary
        drafters[arm] = summary["sections"]["export"]["drafter"]
        print(json.dumps({"arm": arm, "wall_s": summary["wall_s"],
                          "train": summary["sections"]["training"]}, default=str), flush=True)
    packing = {}
    for mode in ("exact", "none") if args.packing_steps else ():
        s = train_arm([f"experiment={args.prefix}distill_streak", f"paths.output_dir={out / f'packing_{mode}'}",
                       *args.overrides, *args.train_overrides, f"data.windows.packing={mode}",
                       f"trainer.max_steps={args.packing_steps}"])
        packing[mode] = s["sections"]["training"]
    decode_over = [o for o in args.overrides if not o.startswith(("trainer", "loss", "optim", "peft"))]
    results = {}
    for name in args.sets.split(","):
        results[name] = evaluate(drafters, [*decode_over, f"data={name}"], args.gamma, args.prompts,
                                 args.max_new_tokens)
        print_tables(runs, results[name], packing, args.gamma, name)
    (out / "distill_arms.json").write_text(json.dumps({"runs": runs, "decode": results, "packing": packing},
                                                      indent=2, default=str))


def print_tables(runs: dict, results: dict, packing: dict, gamma: int, prompt_set: str) -> None:
    console = Console(width=220)
    table = Table(title=f"specdiff γ={gamma}, T=1, temperature 0 on {prompt_set}, per drafter")
    for col in ["arm", "train wall s", "val E[streak]", "flat", "τ", "tok/s", *[f"α{j}" for j in range(1, gamma + 1)]]:
        table.add_column(col, justify="right")
    for arm, r in results.items():
        after = runs[arm].get("val_after") or runs[arm].get("val_before", {})
        curve = [h["expected_streak"] for h in runs[arm].get("val_history") or [] if "expected_streak" in h]
        flat, why = plateau(curve)
        table.add_row(arm, f"{runs[arm]['wall_s']:.0f}", f"{after.get('expected_streak', float('nan')):.3f}",
                      f"{'yes' if flat else 'no'} ({why})",
                      f"{r['mean_accept_len']:.3f}", f"{r['tokens_per_s']:.1f}",
                      *[f"{r.get(f'alpha_{j}', 0):.2f}" for j in range(1, gamma + 1)])
    console.print(table)
    if packing:
        t2 = Table(title="training throughput, same drafter and GPU")
        for col in ("packing", "windows/s", "tokens/s"):
            t2.add_column(col, justify="right")
        for mode, tr in packing.items():
            t2.add_row(mode, f"{tr['windows/s (train steps)']:.0f}", f"{tr['tokens/s (packed)']:.0f}")
        console.print(t2)


if __name__ == "__main__":
    main()
