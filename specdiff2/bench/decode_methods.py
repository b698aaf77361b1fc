"""Decode sweeps on one shared verifier: python -m specdiff2.bench.decode_methods [overrides] [--method ...].

Each method is a set of decode.py overrides ("decode=specdiff decode.strategy.gamma=8"). The verifier is loaded
once and shared, and so is every drafter / proxy (built once per distinct config, CUDA graphs included); every
method sees the same prompts. The grids are config: conf/sweep/<name>.yaml lists them (`--grid NAME` runs one
grid of `--sweep`), bench/reproduce.py runs them all. Each row (method, overrides, set, temperature, τ, α_j,
tok/s, time split, agreement with `ar`) is appended to a JSONL, the source of truth, so a killed sweep resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from specdiff2.bench.common import compose
from specdiff2.bench.sweep_fields import resolved_fields
from specdiff2.data.prompts import load_prompts
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_verifier
from specdiff2.decode.metrics import aggregate
from specdiff2.decode.run import pick_device
from specdiff2.errors import ConfigError, require
from specdiff2.pocket.world import ensure_pocket_world
from specdiff2.report.rundata import read_jsonl  # a line cut by a kill is skipped: that row runs again

ROW_KEYS = ("sweep", "drafter", "set", "temperature", "overrides")  # what identifies a row (resume)


def label(method: str) -> str:
    parts = dict(kv.split("=", 1) for kv in method.split())
    extra = [f"{k.split('.')[-1]}={v}" for k, v in parts.items() if k != "decode"]
    return " ".join([parts.get("decode", "?"), *extra])


def expand_grid(grid: dict) -> list[str]:
    """Override strings of one grid: `base` + each of `methods`, then `base` + every combination of `axes`."""
    base = grid.get("base", "")
    methods = [f"{base} {m}".strip() for m in grid.get("methods") or []]
    axes = grid.get("axes") or {}
    for combo in itertools.product(*axes.values()) if axes else ():
        methods.append(" ".join([base, *(f"{k}={v}" for k, v in zip(axes, combo))]).strip())
    return methods or [base]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def token_agreement(ref: list[list[int]], out: list[list[int]]) -> float:
    """Fraction of positions (over the shorter of each pair) where the tokens are equal."""
    same = total = 0
    for a, b in zip(ref, out):
        n = min(len(a), len(b))
        same += sum(x == y for x, y in zip(a[:n], b[:n]))
        total += n
    return same / max(total, 1)


class SharedModels:
    """Drafters and proxies built once per distinct (resolved) config node, reused by every engine."""

    def __init__(self, verifier, tokenizer):
        self.verifier, self.tokenizer = verifier, tokenizer
        self.ctx = engine_context(verifier, tokenizer)
        self.built: dict[str, object] = {}

    def engine(self, cfg) -> DecodeEngine:
        job = instantiate(cfg.job)
        built = {}
        for name, node in cfg.decode.models.items():
            key = OmegaConf.to_yaml(node, resolve=True)
            if key not in self.built:
                self.built[key] = job.models[name](ctx=self.ctx)
            built[name] = self.built[key]
        return job.build(self.verifier, self.tokenizer, built)


def generate_all(engine: DecodeEngine, prompts: list[tuple[str, list[int]]], max_new: int, seed: int,
                 warmup: str) -> tuple[dict, list[dict]]:
    """Aggregate metrics and per-prompt records (ids, per-step accepted/committed) of one method on one set."""
    if warmup == "all":  # every timed shape once first: graph captures and compiles stay out of the timing
        for _, ids in prompts:
            engine.generate(ids, max_new)
    elif warmup == "one":
        engine.generate(prompts[0][1], min(16, max_new))
    elif warmup == "longest":  # the longest prompt at the timed length, then every prompt's prefill shapes and
        engine.generate(max((ids for _, ids in prompts), key=len), max_new)  # every reachable bucket's step graph
        engine.prepare([ids for _, ids in prompts], max_new)
    gens = [engine.generate(ids, max_new, seed=seed + i) for i, (_, ids) in enumerate(prompts)]
    tok = engine.tokenizer
    per_prompt = [{"id": pid, "token_ids": g.token_ids, "pieces": [tok.decode([t]) for t in g.token_ids],
                   "steps": g.steps, "stop_reason": g.stop_reason, "metrics": g.metrics}
                  for (pid, _), g in zip(prompts, gens)]
    return aggregate([g.metrics for g in gens]), per_prompt


def append_jsonl(path: Path, row: dict) -> None:
    """One row per line; a line cut by a kill is closed first, so the new row starts on a line of its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.is_file() and path.stat().st_size > 0 and path.read_bytes()[-1:] != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if cut else "") + json.dumps(row) + "\n")


def compose_set(base: list[str], count: int, set_overrides: list[str]):
    """The decode config of one prompt set: the sweep's prompt count first, so a set may carry its own limit."""
    return compose("decode", [*base, f"data.prompts.limit={count}", *set_overrides])


def set_prompts(cfg, tok) -> list[tuple[str, list[int]]]:
    """(prompt id, verifier token ids) of a composed set's prompts."""
    return [(p.id, tok(p.text, add_special_tokens=False)["input_ids"])
            for p in load_prompts(instantiate(cfg.data.prompts))]


def row_key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in ROW_KEYS)


class Sweep:
    """Runs grids of override sets against one verifier; appends each finished row to `out` (JSONL)."""

    def __init__(self, spec: dict, base_overrides: list[str], drafter_paths: dict[str, str], out: Path,
                 log: Callable[[str], None] = print, on_row: Callable[[dict], None] | None = None):
        self.spec, self.base, self.drafter_paths, self.out = spec, base_overrides, drafter_paths, out
        self.log, self.on_row = log, on_row
        self.rows = read_jsonl(out)
        self.done = {row_key(r) for r in self.rows if "error" not in r}  # failed rows are tried again
        base = compose("decode", base_overrides)
        self.verifier, self.tok = load_verifier(instantiate(base.verifier), pick_device(base.device),
                                                base.max_seq_len, base.compile, base.kernels)
        self.models = SharedModels(self.verifier, self.tok)
        dev = self.verifier.device
        self.device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
        self.prompts = {name: set_prompts(compose_set(base_overrides, spec["prompts"], over), self.tok)
                        for name, over in spec["sets"].items()}

    def grids(self) -> list[dict]:
        reference = {"name": "reference", "drafters": ["pocket"], "methods": [self.spec["reference"]]}
        return [reference, *self.spec["grids"]]

    def run(self) -> list[dict]:
        for grid in self.grids():
            for drafter in grid.get("drafters") or ["pocket"]:
                for method in expand_grid(grid):
                    for temperature in grid.get("temperatures", self.spec["temperatures"]):
                        self._method(grid, drafter, method, float(temperature))
        return self.rows

    def _method(self, grid: dict, drafter: str, method: str, temperature: float) -> None:
        sets = [s for s in grid.get("sets", list(self.spec["sets"]))
                if row_key(self._row(grid, drafter, method, s, temperature)) not in self.done]
        if not sets:
            return
        over = [*self.base, f"temperature={temperature}", *method.split()]
        try:
            if drafter != "pocket":
                require(drafter in self.drafter_paths, f"sweep {grid['name']} names drafter {drafter!r}, not an "
                        f"arm of this run ({', '.join(self.drafter_paths) or 'none'}); add it to arms or use pocket",
                        ConfigError)
                over.append(f"drafter.path={self.drafter_paths[drafter]}")
            cfg = compose("decode", over)
            engine = self.models.engine(cfg)
        except Exception as err:  # noqa: BLE001 — a broken method must not stop the run: the row says why
            for s in sets:
                self._append(self._row(grid, drafter, method, s, temperature) | {"error": _err(err)})
            return
        # The resolved fields beside the override string: what the report reads (issue 23); one config per method.
        fields = {"config": resolved_fields(cfg), "draft_nodes": engine.layout.nodes}
        for s in sets:
            row = self._row(grid, drafter, method, s, temperature) | fields
            try:
                summary, per_prompt = generate_all(engine, self.prompts[s], self.spec["max_new_tokens"],
                                                   self.spec.get("seed", 0), self.spec.get("warmup", "one"))
            except Exception as err:  # noqa: BLE001 (recorded as an error row)
                self._append(row | {"error": _err(err)})
                continue
            self._append(self._compare(row | summary | {"per_prompt": per_prompt}))

    def _row(self, grid, drafter, method, prompt_set, temperature) -> dict:
        return {"sweep": grid["name"], "drafter": drafter, "set": prompt_set, "temperature": temperature,
                "overrides": method, "method": label(method), "device": self.device_name}

    def _compare(self, row: dict) -> dict:
        """Speed-up and token agreement against the reference (`ar`) row of the same set and temperature."""
        ref = next((r for r in self.rows if r["sweep"] == "reference" and r["set"] == row["set"]
                    and float(r["temperature"]) == row["temperature"] and "error" not in r), None)
        if ref is None:
            return row
        ref_ids = [p["token_ids"] for p in ref["per_prompt"]]
        ids = [p["token_ids"] for p in row["per_prompt"]]
        row["agree_ar"] = sum(first_divergence(a, b) is None for a, b in zip(ref_ids, ids)) / max(len(ids), 1)
        row["agree_ar_tokens"] = token_agreement(ref_ids, ids)
        row["speedup_ar"] = row["tokens_per_s"] / max(ref["tokens_per_s"], 1e-9)
        return row

    def _append(self, row: dict) -> None:
        append_jsonl(self.out, row)
        self.rows.append(row)
        if "error" not in row:
            self.done.add(row_key(row))
        brief = {k: row.get(k) for k in ("sweep", "drafter", "set", "temperature", "method", "mean_accept_len",
                                         "tokens_per_s", "error") if row.get(k) is not None}
        self.log(json.dumps(brief, default=str))
        if self.on_row is not None:
            self.on_row(row)


def _err(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def print_table(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    cols = ["method", "drafter", "set", "T", "τ", *[f"α{j}" for j in range(1, 9)], "tok/s", "x ar", "draft s",
            "verify s", "other s", "agree"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(r["method"], r["drafter"], r["set"], f"{r['temperature']:g}", "error", r["error"][:60])
            continue
        alphas = [f"{r[f'alpha_{j}']:.2f}" if f"alpha_{j}" in r else "" for j in range(1, 9)]
        table.add_row(r["method"], r["drafter"], r["set"], f"{r['temperature']:g}", f"{r['mean_accept_len']:.2f}",
                      *alphas, f"{r['tokens_per_s']:.1f}", f"{r.get('speedup_ar', float('nan')):.2f}x",
                      f"{r['drafter_s']:.2f}", f"{r['verifier_s']:.2f}", f"{r['other_s']:.2f}",
                      f"{r.get('agree_ar', float('nan')):.2f}")
    Console(width=220).print(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", help="decode.py overrides shared by every method")
    parser.add_argument("--method", action="append", help="decode.py overrides of one method (repeatable)")
    parser.add_argument("--sweep", default="tiny", help="conf/sweep option: sets, prompts, temperatures, grids")
    parser.add_argument("--grid", action="append", help="run only these grids of --sweep (default: all)")
    parser.add_argument("--out", default="outputs/decode_methods", help="directory of decode_rows.jsonl")
    args = parser.parse_args()
    spec = OmegaConf.to_container(compose("reproduce", [f"sweep={args.sweep}"]).sweep, resolve=True)
    if args.method:
        spec["grids"] = [{"name": "methods", "methods": args.method}]
    elif args.grid:
        spec["grids"] = [g for g in spec["grids"] if g["name"] in args.grid]
    base = compose("decode", args.overrides)
    if instantiate(base.job).uses_pocket:  # real (or test) checkpoints need no pocket world
        ensure_pocket_world(instantiate(base.pocket), base.paths.pocket_dir)
    rows = Sweep(spec, args.overrides, {}, Path(args.out) / "decode_rows.jsonl").run()
    print_table(rows, "decode methods (" + " ".join(args.overrides) + ")")


if __name__ == "__main__":
    main()
