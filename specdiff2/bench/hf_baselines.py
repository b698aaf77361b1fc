"""External baselines a user could pick instead of the engine: Hugging Face `generate` on the same checkpoints.

- dynamic: `generate` with the default dynamic cache (eager).
- static:  `cache_implementation="static"` (transformers compiles the decode step); every prompt is generated
           once untimed first, so each cache shape is compiled before the timed pass (no recompiles inside it).
- assisted: assisted generation with an AR drafter (`assistant_model`), for each schedule given; the best is
           what a user would pick.
Greedy, batch 1, one prompt at a time; tok/s per prompt, then averaged (Spec-Bench convention). Runs on CUDA
(timed with syncs) or on CPU (the tiny reproduction exercises the same path).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from specdiff2.errors import ConfigError


def load_hf(path: str | Path, dtype=torch.bfloat16, device="cuda"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _generate(model, ids: list[int], max_new: int, eos_id: int | None, **kw) -> tuple[list[int], float]:
    x = torch.tensor([ids], device=model.device)
    _sync(model.device)
    t0 = time.perf_counter()
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=eos_id, pad_token_id=eos_id, **kw)
    _sync(model.device)
    new = out[0, len(ids):].tolist()
    return new, len(new) / (time.perf_counter() - t0)


def run_hf(model, prompts: list[list[int]], max_new: int, eos_id: int | None, warm: bool, **kw) -> dict:
    """Mean tok/s over prompts and the generated ids; `warm` runs every prompt once untimed first."""
    if warm:  # longest first: the static cache is sized once, so later prompts do not recompile
        for ids in sorted(prompts, key=len, reverse=True):
            _generate(model, ids, max_new, eos_id, **kw)
    outs, rates = [], []
    for ids in prompts:
        new, rate = _generate(model, ids, max_new, eos_id, **kw)
        outs.append(new)
        rates.append(rate)
    return {"tokens_per_s": sum(rates) / len(rates), "outputs": outs,
            "new_tokens": sum(len(o) for o in outs)}


KINDS = ("dynamic", "static", "assisted")


def hf_rows(verifier_dir, drafter_dir, prompts, max_new: int, eos_id: int | None,
            schedules=(("heuristic", 4), ("constant", 4), ("constant", 8)), kinds=KINDS,
            device: torch.device | str = "cuda", dtype=torch.bfloat16) -> list[dict]:
    """One row per baseline kind (dynamic, static, assisted: the best schedule), each with a `kind` key."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"HF baseline kinds {unknown}: choose from {', '.join(KINDS)} (sweep.hf.methods)")
    model = load_hf(verifier_dir, dtype, device)
    rows = []
    if "dynamic" in kinds:
        rows.append({"kind": "dynamic", "method": "HF generate, dynamic cache",
                     **run_hf(model, prompts, max_new, eos_id, warm=False)})
    if "static" in kinds:
        rows.append({"kind": "static", "method": "HF generate, static cache (compiled, warmed)",
                     **run_hf(model, prompts, max_new, eos_id, warm=True, cache_implementation="static")})
    if "assisted" in kinds:
        rows.append(_assisted(model, load_hf(drafter_dir, dtype, device), prompts, max_new, eos_id, schedules))
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def _assisted(model, assistant, prompts, max_new: int, eos_id: int | None, schedules) -> dict:
    best = None
    for schedule, n in schedules:
        assistant.generation_config.num_assistant_tokens_schedule = schedule
        assistant.generation_config.num_assistant_tokens = n
        row = {"method": f"HF assisted ({schedule}, {n})",
               **run_hf(model, prompts, max_new, eos_id, warm=best is None, assistant_model=assistant)}
        if best is None or row["tokens_per_s"] > best["tokens_per_s"]:
            best = row
    return {**best, "kind": "assisted", "method": best["method"] + " [best schedule]"}
