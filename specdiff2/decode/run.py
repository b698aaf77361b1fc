"""Evaluation sweep over a prompt set: load, decode every prompt, write JSONL + summary, print a table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_verifier
from specdiff2.decode.metrics import aggregate
from specdiff2.decode.rules import AcceptanceRule
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.verifier import Verifier
from specdiff2.errors import ConfigError
from specdiff2.models.refs import CheckpointRef


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is visible; use device=cpu or device=auto")
    return torch.device(name)


def build_engine(verifier_ref: CheckpointRef, strategy: Callable, models: dict[str, Callable], rule: AcceptanceRule,
                 sampling: SamplingParams, device: torch.device, max_seq_len: int, seed: int = 0,
                 compile: str = "auto", kernels: str = "auto") -> DecodeEngine:
    """Load the verifier, then `engine_for` (conf: verifier, decode.strategy, decode.models, acceptance)."""
    verifier, tokenizer = load_verifier(verifier_ref, device, max_seq_len, compile, kernels)
    return engine_for(verifier, tokenizer, strategy, models, rule, sampling, seed)


def engine_for(verifier: Verifier, tokenizer, strategy: Callable, models: dict[str, Callable], rule: AcceptanceRule,
               sampling: SamplingParams, seed: int = 0) -> DecodeEngine:
    """An engine on an already loaded verifier (benches share one across methods).

    strategy: the strategy class with its knobs bound, missing only its models (Hydra `_partial_`).
    models: strategy argument name -> loader called with the EngineContext (drafters, DiffuSpec's proxy).
    """
    ctx = engine_context(verifier, tokenizer)
    built = {name: load(ctx=ctx) for name, load in models.items()}
    return DecodeEngine(verifier, tokenizer, strategy(**built), rule, sampling, seed)


def run_prompts(engine: DecodeEngine, prompts, max_new_tokens: int, out_dir: Path, method: str,
                warmup: bool = True) -> dict:
    tok = engine.tokenizer
    encoded = [(p, tok(p.text, add_special_tokens=False)["input_ids"]) for p in prompts]
    if warmup:  # untimed: first-call CUDA/allocator costs stay out of the figures
        engine.generate(encoded[0][1], min(16, max_new_tokens))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(out_dir / "generations.jsonl", "w") as f, Progress(transient=True) as progress:
        task = progress.add_task(f"decode {method}", total=len(encoded))
        for i, (prompt, ids) in enumerate(encoded):
            gen = engine.generate(ids, max_new_tokens, seed=engine.seed + i)
            row = {"id": prompt.id, "prompt": prompt.text, "text": tok.decode(gen.token_ids),
                   "token_ids": gen.token_ids, "stop_reason": gen.stop_reason, "metrics": gen.metrics}
            f.write(json.dumps(row) + "\n")
            rows.append(gen.metrics)
            progress.advance(task)
    summary = {"method": method, **aggregate(rows)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict, title: str) -> None:
    table = Table(title=title)
    keys = ["prompts", "new_tokens", "verifier_steps", "mean_accept_len", "tokens_per_s",
            "drafter_s", "verifier_s", "other_s"]
    keys += [k for k in summary if k.startswith("alpha_")][:16]
    keys += [k for k in summary if k.startswith("mean_") and k != "mean_accept_len"]
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in keys:
        v = summary[k]
        table.add_row(f"decode/{k}", f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(table)
