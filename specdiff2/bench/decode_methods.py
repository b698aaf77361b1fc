"""Compare decode methods on one verifier in one process: python -m specdiff2.bench.decode_methods.

Each --method is a set of decode.py overrides ("decode=specdiff decode.strategy.gamma=8"). The
verifier is loaded once and shared; every method sees the same prompts. Prints one table: τ,
α_1..α_8, tok/s, speed-up over `ar`, time split, and agreement with `ar` token for token.
"""

from __future__ import annotations

import argparse
import json
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

DEFAULT_METHODS = [
    "decode=ar",
    "decode=sd_ar decode.strategy.gamma=4",
    "decode=sd_ar decode.strategy.gamma=8",
    *[f"decode=specdiff decode.strategy.gamma={g} decode.strategy.steps={t}" for g in (8, 16, 32) for t in (1, 2, 4)],
]
# Issue 5's grid (SpecDiff-2 self-selection): K × drafter temperature at γ=16, after the ar baseline and the
# one-pass greedy specdiff chain it improves on. Selected with --preset self_select.
SELF_SELECT_METHODS = [
    "decode=ar",
    "decode=specdiff decode.strategy.gamma=16 decode.strategy.steps=1",
    *[f"decode=self_select decode.strategy.gamma=16 decode.strategy.k={k} decode.strategy.drafter_temperature={t}"
      for k in (1, 2, 4, 8, 16) for t in (0.1, 0.5, 1.0, 1.5, 2.0)],
]
# Issue 6's DiffuSpec ablation (conf/decode/diffuspec.yaml sizes k for the pocket drafter): fixed-k argmax,
# +CPS, +ADL, +both (n-gram proxy), +both with the AR-drafter proxy, and one-pass specdiff at three γ.
# Selected with --preset diffuspec.
_DIFFUSPEC = "decode=diffuspec decode.strategy.cps={} decode.strategy.adl={}"
DIFFUSPEC_METHODS = [
    "decode=ar",
    *[_DIFFUSPEC.format(cps, adl) for cps, adl in (("false", "false"), ("true", "false"), ("false", "true"),
                                                     ("true", "true"))],
    _DIFFUSPEC.format("true", "true") + " decode/proxy@decode.models.proxy=ar",
    *[f"decode=specdiff decode.strategy.gamma={g} decode.strategy.steps=1" for g in (8, 16, 32)],
]
PRESETS = {"default": DEFAULT_METHODS, "self_select": SELF_SELECT_METHODS, "diffuspec": DIFFUSPEC_METHODS}


def label(method: str) -> str:
    parts = dict(kv.split("=", 1) for kv in method.split())
    extra = [f"{k.split('.')[-1]}={v}" for k, v in parts.items() if k != "decode"]
    return " ".join([parts.get("decode", "?"), *extra])


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def run(args) -> list[dict]:
    base = compose("decode", args.overrides)
    ensure_pocket_world(instantiate(base.pocket), base.paths.pocket_dir)
    verifier, tok = load_verifier(instantiate(base.verifier), pick_device(base.device), base.max_seq_len,
                                  base.compile, base.kernels)
    prompts = load_prompts(instantiate(base.data.prompts))
    encoded = [tok(p.text, add_special_tokens=False)["input_ids"] for p in prompts]
    results, reference = [], None
    for method in args.method or PRESETS[getattr(args, "preset", "default")]:
        cfg = compose("decode", [*args.overrides, *method.split()])
        engine = engine_from_config(cfg, verifier, tok)
        engine.generate(encoded[0], 16)  # warm-up, untimed
        gens = [engine.generate(ids, base.max_new_tokens, seed=base.seed + i) for i, ids in enumerate(encoded)]
        row = {"method": label(method), **aggregate([g.metrics for g in gens])}
        outputs = [g.token_ids for g in gens]
        if reference is None:
            reference = outputs
        div = [first_divergence(a, b) for a, b in zip(reference, outputs)]
        row["agree"] = sum(d is None for d in div) / len(div)
        row["first_divergences"] = [d for d in div if d is not None][:5]
        results.append(row)
        print(json.dumps({k: row[k] for k in ("method", "mean_accept_len", "tokens_per_s", "agree")}), flush=True)
    return results


def print_table(results: list[dict], title: str) -> None:
    table = Table(title=title)
    cols = ["method", "τ", *[f"α{j}" for j in range(1, 9)], "tok/s", "speedup", "draft s", "verify s", "other s",
            "agree"]
    for c in cols:
        table.add_column(c, justify="right")
    base_tps = results[0]["tokens_per_s"]
    for r in results:
        alphas = [f"{r[f'alpha_{j}']:.2f}" if f"alpha_{j}" in r else "" for j in range(1, 9)]
        table.add_row(r["method"], f"{r['mean_accept_len']:.2f}", *alphas, f"{r['tokens_per_s']:.1f}",
                      f"{r['tokens_per_s'] / base_tps:.2f}x", f"{r['drafter_s']:.2f}", f"{r['verifier_s']:.2f}",
                      f"{r['other_s']:.2f}", f"{r['agree']:.2f}")
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", help="decode.py overrides shared by every method")
    parser.add_argument("--method", action="append", help="decode.py overrides of one method (repeatable)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="methods run when no --method is given (self_select: K × drafter temperature)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = run(args)
    print_table(results, "decode methods (" + " ".join(args.overrides) + ")")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "decode_methods.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
