"""The verify:draft cost ratio of a built pocket world, measured on its build device (issue 25).

c = t_verify(1 token) / t_draft(one γ-window pass with the prefix cache), both after a `prefix` of committed tokens,
with the engine's own forwards (`Transformer.forward_block`, the drafter's `window_logits_at`). On CUDA each
forward is captured as a CUDA graph and its replays are timed with CUDA events, so the numbers are GPU-busy time
(what the device-resident decode step costs), not Python or launch overhead; on CPU the eager forward is timed with
perf_counter. Also t_verify(γ+1), the verify step of a γ-token draft. The papers' headline pairs (7B drafters for
32B-72B verifiers) have c ≈ 5-10; a 7B:7B pair has c ≈ 1.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.drafters import DiffusionDrafter
from specdiff2.models.runner import BlockRunner
from specdiff2.models.timing import median_ms
from specdiff2.pocket.spec import CostSpec, PocketSpec, PocketWorld


def _load(path: Path, device: torch.device, dtype: torch.dtype):
    model, config = load_transformer(path, dtype=dtype, device=device)
    model.eval()
    if device.type == "cuda":
        model.fuse()  # as the engine's graph mode runs it: one weight read for q/k/v and for gate/up
    return model, config


def _bucket(n: int, step: int = 128) -> int:
    return -(-n // step) * step


@torch.no_grad()
def measure_costs(world: PocketWorld, gamma: int, cost: CostSpec, device: torch.device,
                  dtype: torch.dtype) -> dict:
    """ms of the verifier's 1- and (γ+1)-token steps and of one drafter γ-window pass, and their ratios."""
    gen = torch.Generator().manual_seed(0)  # the global RNG is left alone: later stages seed themselves
    kernels = cost.kernels if cost.kernels != "auto" else ("layer" if device.type == "cuda" else "eager")
    prefix, max_len = cost.prefix, _bucket(cost.prefix + 2 * gamma + 2)
    verifier, vcfg = _load(world.verifier, device, dtype)
    ids = torch.randint(0, vcfg["vocab_size"] - 2, (max_len,), generator=gen).to(device)
    verifier.setup_cache(1, max_len)
    runner = BlockRunner(verifier, max_len, "eager", kernels=kernels)  # we capture the forwards ourselves
    start = torch.tensor(prefix, device=device)
    runner.direct(ids[:prefix], torch.zeros_like(start), prefix)  # the committed prefix in the cache
    verify_ms = {str(n): median_ms(lambda n=n: runner.direct(ids[prefix:prefix + n], start, _bucket(prefix + n)),
                                   cost.iters, cost.warmup, device=device, capture=True) for n in (1, gamma + 1)}
    model, dcfg = _load(world.drafter, device, dtype)
    proposable = torch.ones(dcfg["vocab_size"], dtype=torch.bool, device=device)
    drafter = DiffusionDrafter(model, int(dcfg["mask_token_id"]), True, proposable, max_len, "prefix",
                               dcfg.get("prefix_attention", "causal"), "eager", kernels)
    drafter.prefill(ids[:prefix])
    canvas = torch.full((gamma,), int(dcfg["mask_token_id"]), device=device)
    kv_len = min(drafter.cache_len, _bucket(prefix + 2 * gamma + 2))
    draft_ms = median_ms(lambda: drafter.window_logits_at(ids, start, canvas, kv_len, gamma + 1), cost.iters,
                         cost.warmup, device=device, capture=True)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype).removeprefix("torch."), "timer": "CUDA graph + events" if device.type == "cuda"
            else "perf_counter, eager", "kernels": kernels, "prefix": prefix, "gamma": gamma,
            "verify_ms": verify_ms, "draft_ms": draft_ms, "ratio": verify_ms["1"] / draft_ms,
            "ratio_verify_window": verify_ms[str(gamma + 1)] / draft_ms}


def build_device(spec: PocketSpec) -> torch.device | None:
    """The device the world was built on (pocket.accelerator), None when it is not here (a GPU world on CPU)."""
    if spec.accelerator == "cpu":
        return torch.device("cpu")
    return torch.device("cuda") if torch.cuda.is_available() else None


def measure_world(spec: PocketSpec, world: PocketWorld, log=print) -> dict | None:
    """The world's cost entry (world.json `cost`), printed in one line; None when the build device is absent."""
    device = build_device(spec)
    if device is None:  # a GPU world read on a CPU machine: measured where it is built or next used on a GPU
        return None
    dtype = torch.bfloat16 if spec.precision.startswith("bf16") else torch.float32
    t0 = time.perf_counter()
    info = measure_costs(world, spec.drafter.window, spec.cost, device, dtype)
    info["wall_s"] = round(time.perf_counter() - t0, 2)
    low = info["ratio"] < spec.cost.min_ratio
    log(f"[pocket:{spec.name}] verify:draft cost ratio c = {info['ratio']:.2f} (verify 1 token "
        f"{info['verify_ms']['1']:.3f} ms, {spec.drafter.window + 1} tokens "
        f"{info['verify_ms'][str(spec.drafter.window + 1)]:.3f} ms; drafter γ={spec.drafter.window} pass "
        f"{info['draft_ms']:.3f} ms; {info['device']}, {info['timer']})"
        + (f"; below pocket.cost.min_ratio {spec.cost.min_ratio}: deepen pocket.verifier" if low else ""))
    return info
