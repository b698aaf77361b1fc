"""Projection of the speed-up at real sizes from a measured acceptance profile and measured step costs.

With α_j measured as the engine reports it (the fraction of steps whose first j drafted tokens were all
accepted), the expected tokens per verifier step is τ = 1 + Σ_{j≤γ} α_j, and

    speed-up = τ · t_AR / (t_draft + t_verify(γ + 1))

where t_AR is the verifier's 1-token step and t_verify(γ+1) its (γ+1)-token verify step. Step costs come from
bench/real_shapes.py JSON (random-weight real-shape models on the engine); a target larger than the measured
shape is scaled by weight bytes (batch-1 decode is bandwidth bound: same fraction of the floor assumed). This is
a projection, not a measurement: the pocket α profile stands in for the real drafter's.
"""

from __future__ import annotations

from dataclasses import dataclass

# bf16 weight bytes of public checkpoints (parameter counts from their model cards × 2 bytes).
TARGET_BYTES = {"Qwen2.5-7B": 7.62e9 * 2, "Qwen2.5-32B": 32.76e9 * 2, "Qwen2.5-72B": 72.71e9 * 2}
# Fallback step costs when the run has no real_shapes JSON: the H100 measurements of the closing note of issue 11
# (Qwen2.5-7B shape, graph + compiled block + fused; Dream-7B-shape drafter with prefix cache), 2026-11-25.
REFERENCE_COSTS = {"source": "closing note of issue 11 (H100, not this run)", "weight_bytes": 15.23e9,
                   "verify_ms": {1: 6.37, 5: 6.61, 17: 6.72, 33: 7.05}, "draft_ms": {16: 7.2, 32: 7.6}}


@dataclass
class StepCosts:
    source: str
    weight_bytes: float
    verify_ms: dict[int, float]  # tokens per verify step -> ms
    draft_ms: dict[int, float]  # γ -> ms of one drafter pass

    def verify(self, n: int) -> float:
        """ms of an n-token verify step: the nearest measured size at or above n (else the largest)."""
        sizes = sorted(self.verify_ms)
        return self.verify_ms[next((s for s in sizes if s >= n), sizes[-1])]

    def draft(self, gamma: int) -> float:
        sizes = sorted(self.draft_ms)
        return self.draft_ms[next((s for s in sizes if s >= gamma), sizes[-1])]


def costs_from_real_shapes(data: dict) -> StepCosts:
    """StepCosts of one real_shapes_<shape>.json (the engine's compiled mode rows, fused: block, else layer)."""
    verify = next(([r for r in data["verify"] if r["mode"].startswith(m)] for m in ("graph+block", "graph+layer")
                   if any(r["mode"].startswith(m) for r in data["verify"])), data["verify"])
    verify_ms = {int(r["tokens"]): float(r["ms"]) for r in verify}
    draft_ms = {int(r["gamma"]): float(r["ms"]) for r in data.get("drafter", []) if r["cache"] == "prefix"}
    weight = verify[0]["floor_ms"] / 1e3 * data["copy_bw"] if verify else 0.0  # floor = bytes / bandwidth
    return StepCosts(f"{data.get('file', 'real_shapes')} ({data.get('device', '?')})", weight, verify_ms, draft_ms)


def reference_costs() -> StepCosts:
    c = REFERENCE_COSTS
    return StepCosts(c["source"], c["weight_bytes"], dict(c["verify_ms"]), dict(c["draft_ms"]))


def tau_from_alphas(alphas: list[float]) -> float:
    return 1.0 + sum(alphas)


def alphas_of(row: dict) -> list[float]:
    return [row[f"alpha_{j}"] for j in range(1, 65) if f"alpha_{j}" in row]


def project(alphas: list[float], costs: StepCosts, target_bytes: float, gamma: int | None = None) -> dict:
    """Expected speed-up of a drafter with profile `alphas` (γ = len) in front of a verifier of `target_bytes`."""
    gamma = gamma or len(alphas)
    scale = target_bytes / costs.weight_bytes if costs.weight_bytes else 1.0
    t_ar, t_verify = costs.verify(1) * scale, costs.verify(gamma + 1) * scale
    t_draft = costs.draft(gamma)  # the drafter keeps its measured (7B-class) size
    tau = tau_from_alphas(alphas[:gamma])
    return {"gamma": gamma, "tau": tau, "t_ar_ms": t_ar, "t_draft_ms": t_draft, "t_verify_ms": t_verify,
            "speedup": tau * t_ar / (t_draft + t_verify), "scale": scale}


def projection_table(profiles: dict[str, list[float]], costs: StepCosts) -> list[dict]:
    """One row per (profile, target verifier)."""
    return [{"profile": name, "target": target, **project(alphas, costs, nbytes)}
            for name, alphas in profiles.items() if alphas for target, nbytes in TARGET_BYTES.items()]
