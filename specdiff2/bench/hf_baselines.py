"""External baselines a user could pick instead of the engine: Hugging Face `generate` on the same checkpoints.

- dynamic: `generate` with the default dynamic cache (eager).
- static:  `cache_implementation="static"` (transformers compiles the decode step); every prompt is generated
           once untimed first, so each cache shape is compiled before the timed pass (no recompiles inside it).
- assisted: assisted generation with an AR drafter (`assistant_model`), for each schedule given; the best is
           what a user would pick.
Greedy, batch 1, one prompt at a time; tok/s per prompt, then averaged (Spec-Bench convention).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def load_hf(path: str | Path, dtype=torch.bfloat16, device="cuda"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()


def _generate(model, ids: list[int], max_new: int, eos_id: int | None, **kw) -> tuple[list[int], float]:
    x = torch.tensor([ids], device=model.device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=eos_id, pad_token_id=eos_id, **kw)
    torch.cuda.synchronize()
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


def hf_rows(verifier_dir, drafter_dir, prompts, max_new: int, eos_id: int | None,
            schedules=(("heuristic", 4), ("constant", 4), ("constant", 8))) -> list[dict]:
    model = load_hf(verifier_dir)
    rows = [{"method": "HF generate, dynamic cache", **run_hf(model, prompts, max_new, eos_id, warm=False)}]
    rows.append({"method": "HF generate, static cache (compiled, warmed)",
                 **run_hf(model, prompts, max_new, eos_id, warm=True, cache_implementation="static")})
    assistant = load_hf(drafter_dir)
    best = None
    for schedule, n in schedules:
        assistant.generation_config.num_assistant_tokens_schedule = schedule
        assistant.generation_config.num_assistant_tokens = n
        row = {"method": f"HF assisted ({schedule}, {n})",
               **run_hf(model, prompts, max_new, eos_id, warm=best is None, assistant_model=assistant)}
        if best is None or row["tokens_per_s"] > best["tokens_per_s"]:
            best = row
    rows.append({**best, "method": best["method"] + " [best schedule]"})
    del model, assistant
    torch.cuda.empty_cache()
    return rows
