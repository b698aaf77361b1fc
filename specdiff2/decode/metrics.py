"""Decode statistics, named as vLLM and Spec-Bench name them (REFERENCE.md, metric conventions).

Per request (one generation row) and per prompt set:
- mean_accept_len (τ): committed tokens per verifier step, the bonus / correction token included (1.00 for `ar`).
- accept_hist: accept_hist[n] = verifier steps that accepted exactly n draft tokens (bonus not counted).
- draft_acceptance_rate: accepted draft tokens / draft tokens offered (positions below each step's limit).
- alpha_j: per-position acceptance, accepted at position j / steps whose draft reached position j (vLLM's a_j).
- alpha_cond_j: conditional, accepted at j / steps that drafted j and accepted all of 1..j−1 (alpha_cond_1 =
  alpha_1): where streaks break.
- verifier_steps: the number of speculative steps.
"""

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
    """Per-prompt counters kept on the device (updated inside the captured step), read once by `summary()`."""

    def __init__(self, max_positions: int, max_steps: int, device: torch.device):
        self.device, self.max_steps = device, max_steps
        z = lambda *shape: torch.zeros(shape, dtype=torch.long, device=device)  # noqa: E731
        self.steps, self.new_tokens = z(), z()
        self.drafted, self.accepted = z(max_positions), z(max_positions)  # steps that drafted / accepted position j
        self.reached = z(max_positions)  # steps that drafted position j after accepting every earlier one
        self.trace = z(max_steps, 2)  # (accepted, committed) per step: where drafts fail
        self.extra: dict[str, torch.Tensor] = {}  # per-step info sums (float64)

    def tensors(self) -> list[torch.Tensor]:
        return [self.steps, self.new_tokens, self.drafted, self.accepted, self.reached, self.trace,
                *self.extra.values()]

    def reset(self) -> None:
        for t in self.tensors():
            t.zero_()

    def record(self, depth: torch.Tensor, n_accepted: torch.Tensor, n_committed: torch.Tensor, info: dict,
               live: torch.Tensor) -> None:
        """All 0-d device tensors (info values may be Python numbers); nothing counts once the request stopped."""
        live_l = live.long()
        j = torch.arange(self.drafted.shape[0], device=self.device)
        self.drafted.add_((j < depth).long() * live_l)
        self.accepted.add_((j < n_accepted).long() * live_l)
        self.reached.add_(((j < depth) & (j <= n_accepted)).long() * live_l)
        row = self.steps.clamp_max(self.max_steps - 1)
        self.trace.index_copy_(0, row.view(1), torch.where(live, torch.stack([n_accepted, n_committed]),
                                                         self.trace.index_select(0, row.view(1))[0]).view(1, 2))
        self.steps.add_(live_l)
        self.new_tokens.add_(n_committed * live_l)
        for k, v in info.items():
            if k not in self.extra:
                self.extra[k] = torch.zeros((), dtype=torch.float64, device=self.device)
            # A Python number stays a kernel argument: torch.as_tensor would copy it from host memory.
            self.extra[k].add_(live.double() * (v if isinstance(v, (int, float)) else v.double()))

    def summary(self, wall_s: float, phases: dict[str, float]) -> dict:
        drafter_s, verifier_s = phases.get("drafter", 0.0), phases.get("verifier", 0.0)
        steps, new_tokens = int(self.steps), int(self.new_tokens)
        out = {
            "new_tokens": new_tokens,
            "verifier_steps": steps,
            "mean_accept_len": new_tokens / max(1, steps),  # τ, bonus included
            "tokens_per_s": new_tokens / max(wall_s, 1e-9),
            "wall_s": wall_s,
            "drafter_s": drafter_s,
            "verifier_s": verifier_s,
            "other_s": max(0.0, wall_s - drafter_s - verifier_s),
        }
        drafted, accepted, reached = self.drafted.tolist(), self.accepted.tolist(), self.reached.tolist()
        out["draft_acceptance_rate"] = sum(accepted) / max(1, sum(drafted))
        for j, (d, a) in enumerate(zip(drafted, accepted), 1):
            if d:
                out[f"alpha_{j}"] = a / d
            if reached[j - 1]:
                out[f"alpha_cond_{j}"] = a / reached[j - 1]
        out["accept_hist"] = self.accept_hist()
        for k, v in self.extra.items():
            out[f"mean_{k}"] = float(v) / max(1, steps)
        return out

    def _recorded(self) -> torch.Tensor:
        return self.trace[: min(int(self.steps), self.max_steps)]  # (steps, 2)

    def accept_hist(self) -> list[int]:
        return torch.bincount(self._recorded()[:, 0], minlength=1).tolist()

    @property
    def steps_trace(self) -> list[tuple[int, int]]:
        return [tuple(r) for r in self._recorded().tolist()]


def merge_hists(hists: list[list[int]]) -> list[int]:
    out = [0] * max((len(h) for h in hists), default=0)
    for h in hists:
        for n, c in enumerate(h):
            out[n] += c
    return out


def format_hist(hist: list[int]) -> str:
    """'0:12 1:5 2:3 ...' (accepted draft tokens: steps), for one-line tables."""
    return " ".join(f"{n}:{c}" for n, c in enumerate(hist) if c)


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
    alpha_keys = sorted({k for r in rows for k in r if k.startswith("alpha_")}, key=lambda k: int(k.split("_")[-1]))
    for key in alpha_keys:
        vals = [r[key] for r in rows if key in r]
        out[key] = sum(vals) / len(vals)
    out["accept_hist"] = merge_hists([r.get("accept_hist", []) for r in rows])
    rates = [r["draft_acceptance_rate"] for r in rows if "draft_acceptance_rate" in r]
    if rates:
        out["draft_acceptance_rate"] = sum(rates) / len(rates)
    for key in sorted({k for r in rows for k in r if k.startswith("mean_") and k != "mean_accept_len"}):
        out[key] = sum(r.get(key, 0.0) for r in rows) / len(rows)
    return out
