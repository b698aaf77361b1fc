"""Decode statistics, named as vLLM and Spec-Bench name them (REFERENCE.md, metric conventions)."""

from __future__ import annotations

import time
from collections import defaultdict

import torch


class PhaseTimer:
    """Time drafter / verifier phases without host syncs: CUDA events, read once at the end."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: dict[str, list] = defaultdict(list)
        self.host: dict[str, float] = defaultdict(float)

    def start(self, name: str):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return name, ev
        return name, time.perf_counter()

    def stop(self, token) -> None:
        name, begin = token
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events[name].append((begin, end))
        else:
            self.host[name] += time.perf_counter() - begin

    def totals(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
            return {k: sum(b.elapsed_time(e) for b, e in v) / 1e3 for k, v in self.events.items()}
        return dict(self.host)


class DecodeStats:
    """Per-prompt counters; `summary()` gives the metric dict written to JSONL."""

    def __init__(self, max_positions: int):
        self.steps = 0
        self.new_tokens = 0
        self.drafted = [0] * max_positions  # steps that drafted position j
        self.accepted = [0] * max_positions  # steps that accepted position j
        self.extra: dict[str, float] = defaultdict(float)
        self.trace: list[tuple[int, int]] = []  # (accepted, committed) per step: where drafts fail

    def record(self, draft_depth: int, n_accepted: int, n_committed: int, info: dict) -> None:
        self.steps += 1
        self.new_tokens += n_committed
        self.trace.append((n_accepted, n_committed))
        for j in range(min(draft_depth, len(self.drafted))):
            self.drafted[j] += 1
            self.accepted[j] += j < n_accepted
        for k, v in info.items():
            if isinstance(v, (int, float)):
                self.extra[k] += v

    def summary(self, wall_s: float, phases: dict[str, float]) -> dict:
        drafter_s, verifier_s = phases.get("drafter", 0.0), phases.get("verifier", 0.0)
        out = {
            "new_tokens": self.new_tokens,
            "verifier_steps": self.steps,
            "mean_accept_len": self.new_tokens / max(1, self.steps),  # τ, bonus included
            "tokens_per_s": self.new_tokens / max(wall_s, 1e-9),
            "wall_s": wall_s,
            "drafter_s": drafter_s,
            "verifier_s": verifier_s,
            "other_s": max(0.0, wall_s - drafter_s - verifier_s),
        }
        for j, (d, a) in enumerate(zip(self.drafted, self.accepted), 1):
            if d:
                out[f"alpha_{j}"] = a / d
        for k, v in self.extra.items():
            out[f"mean_{k}"] = v / max(1, self.steps)
        return out


def aggregate(rows: list[dict]) -> dict:
    """Spec-Bench convention: τ over all steps; tok/s per prompt, then averaged."""
    tokens = sum(r["new_tokens"] for r in rows)
    steps = sum(r["verifier_steps"] for r in rows)
    out = {
        "prompts": len(rows),
        "new_tokens": tokens,
        "verifier_steps": steps,
        "mean_accept_len": tokens / max(1, steps),
        "tokens_per_s": sum(r["tokens_per_s"] for r in rows) / max(1, len(rows)),
    }
    for key in ("wall_s", "drafter_s", "verifier_s", "other_s"):
        out[key] = sum(r[key] for r in rows)
    alpha_keys = sorted({k for r in rows for k in r if k.startswith("alpha_")}, key=lambda k: int(k[6:]))
    for key in alpha_keys:
        vals = [r[key] for r in rows if key in r]
        out[key] = sum(vals) / len(vals)
    for key in sorted({k for r in rows for k in r if k.startswith("mean_") and k != "mean_accept_len"}):
        out[key] = sum(r.get(key, 0.0) for r in rows) / len(rows)
    return out
