"""Evaluation sweep over a prompt set: load, decode every prompt, write JSONL + summary, print a table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from rich.progress import Progress
from rich.table import Table

from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.metrics import aggregate, format_hist
from specdiff2.errors import ConfigError, SpecDiffError
from specdiff2.models.parallel import launched_world
from specdiff2.models.tokenizer import encode_prompt
from specdiff2.tables import print_wide


def pick_device(name: str) -> torch.device:
    """`device` config value; under torchrun each rank takes the GPU of its LOCAL_RANK."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is visible; use device=cpu or device=auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and launched_world() > 1:
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return torch.device(name)


def is_main_process() -> bool:
    """Rank 0 of a tensor-parallel run (or the only process): the one that writes files and prints."""
    return not dist.is_initialized() or dist.get_rank() == 0


def check_ranks_agree(token_ids: list[int]) -> None:
    """Every rank runs the same loop on the same all-reduced logits; a divergence would be silent, so refuse it."""
    if not dist.is_initialized():
        return
    digest = torch.tensor([hash(tuple(token_ids)) & 0x7FFFFFFFFFFF, len(token_ids)], dtype=torch.long)
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, digest)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise ConfigError("tensor-parallel ranks produced different tokens (non-deterministic drafter kernels?); "
                          "rerun with compile=eager or report this run")


def run_prompts(engine: DecodeEngine, prompts, max_new_tokens: int, out_dir: Path, method: str,
                warmup: bool = True) -> dict:
    tok = engine.tokenizer
    encoded = [(p, encode_prompt(tok, p.text, getattr(p, "chat", False))) for p in prompts]
    if warmup:  # untimed: first-call CUDA/allocator costs and every graph capture stay out of the figures
        engine.generate(encoded[0][1], min(16, max_new_tokens))
        engine.prepare([ids for _, ids in encoded], max_new_tokens)
    main = is_main_process()  # other tensor-parallel ranks decode in lockstep and write nothing
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(out_dir / "generations.jsonl" if main else os.devnull, "w") as f, \
            Progress(transient=True, disable=not main) as progress:
        task = progress.add_task(f"decode {method}", total=len(encoded))
        try:
            for i, (prompt, ids) in enumerate(encoded):
                gen = engine.generate(ids, max_new_tokens, seed=engine.seed + i)
                check_ranks_agree(gen.token_ids)
                row = {"id": prompt.id, "prompt": prompt.text, "text": tok.decode(gen.token_ids),
                       "token_ids": gen.token_ids, "stop_reason": gen.stop_reason, "metrics": gen.metrics}
                f.write(json.dumps(row) + "\n")
                f.flush()
                rows.append(gen.metrics)
                progress.advance(task)
        except KeyboardInterrupt:  # keep what finished: its rows are on disk, its summary is written below
            interrupted = True
        else:
            interrupted = False
    summary = {"method": method, **aggregate(rows), "interrupted": interrupted, "prompts_requested": len(encoded)}
    if main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if interrupted:
        raise Interrupted(f"interrupted after {len(rows)} of {len(encoded)} prompts; their rows and summary.json "
                          f"are in {out_dir}")
    return summary


class Interrupted(SpecDiffError):
    """Ctrl-C during decoding: the finished prompts are kept (one line, exit status 2)."""


def print_summary(summary: dict, title: str) -> None:
    if not is_main_process():
        return
    table = Table(title=title)
    keys = ["prompts", "new_tokens", "verifier_steps", "mean_accept_len", "tokens_per_s",
            "drafter_s", "verifier_s", "other_s"]
    keys += ["draft_acceptance_rate", *[k for k in summary if k.startswith("alpha_") and "cond" not in k][:16]]
    keys += [k for k in summary if k.startswith("mean_") and k != "mean_accept_len"]
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in keys:
        if k not in summary:
            continue
        v = summary[k]
        table.add_row(f"decode/{k}", f"{v:.3f}" if isinstance(v, float) else str(v))
    table.add_row("decode/accept_hist", format_hist(summary.get("accept_hist", [])) + "  (accepted drafts: steps)")
    print_wide(table)  # the title's output directory on one line
