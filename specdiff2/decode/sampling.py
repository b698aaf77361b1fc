"""Sampling: the one type for temperature / top-k / top-p (used by the engine, its strategies and rules, and the
batched trajectory sampler alike), the warp it defines, and drawing from a distribution without a host sync."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from specdiff2.decode.rng import exponential_like
from specdiff2.errors import ConfigError, is_int, is_real, require


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # bf16 logits lose the small probabilities that decide top-p and p/q ratios; fp64 is kept for exact tests.
    return torch.promote_types(dtype, torch.float32)


def warp_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Sampling distribution over the last dim: temperature, then top-k, then top-p, renormalised.

    temperature == 0 gives a one-hot at the argmax (ties: lowest index, like `torch.argmax`). top_k == 0 and
    top_p == 1 disable those filters. Top-p keeps the smallest set of highest-probability tokens whose mass
    reaches top_p of the top-k mass (the top token is always kept); ties in rank go to the lower index.
    The engine applies this identically to verifier and drafter logits.
    """
    require(temperature >= 0, f"temperature must be >= 0, got {temperature}; use 0 for greedy decoding")
    require(top_k >= 0, f"top_k must be >= 0, got {top_k}; use 0 to disable top-k")
    require(0 < top_p <= 1, f"top_p must be in (0, 1], got {top_p}; use 1.0 to disable top-p")
    logits = logits.to(_work_dtype(logits.dtype))
    vocab = logits.shape[-1]
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), vocab).to(logits.dtype)  # (..., V)
    probs = torch.softmax(logits / temperature, dim=-1)  # (..., V)
    use_top_k = 0 < top_k < vocab
    if not use_top_k and top_p >= 1:
        return probs
    # Stable sort so equal probabilities are ranked by index: deterministic sets, same on every device.
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)  # (..., V)
    rank = torch.arange(vocab, device=logits.device)
    keep = rank < top_k if use_top_k else torch.ones_like(sorted_probs, dtype=torch.bool)  # (..., V) or (V,)
    if top_p < 1:
        kept = sorted_probs * keep
        # Mass of strictly better-ranked tokens (exclusive cumsum): the top token always stays.
        mass_before = F.pad(kept.cumsum(dim=-1)[..., :-1], (1, 0))  # (..., V)
        keep = keep & (mass_before < top_p * kept.sum(dim=-1, keepdim=True))
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)  # (..., V)
    return filtered / filtered.sum(dim=-1, keepdim=True)


def sample_probs(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `probs` (..., V) -> (...,) long, via the exponential race argmax(p / E).

    Same distribution as torch.multinomial(probs, 1) but with no validity check that syncs with the host
    (vLLM samples the same way); zero-probability tokens can never win.
    """
    noise = exponential_like(probs, generator)  # (..., V)
    # An exact zero draw would turn 0/0 into NaN, which argmax would pick.
    return (probs / noise.clamp_min(torch.finfo(noise.dtype).tiny)).argmax(dim=-1)


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 = greedy; top_k 0 and top_p 1 switch those filters off (see `warp_probs`)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        typed = is_real(self.temperature) and is_real(self.top_p) and is_int(self.top_k)
        if not typed or self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"bad sampling params {self}; need numbers temperature >= 0, "
                              "integer top_k >= 0, 0 < top_p <= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return warp_probs(logits, self.temperature, self.top_k, self.top_p)


GREEDY = SamplingParams()  # argmax drafting whatever the verifier's temperature (deterministic proposals)
