"""Sampling parameters: the one type for temperature / top-k / top-p, used by the engine, its strategies and
rules, and the batched trajectory sampler alike."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdiff2.decode.acceptance import warp_probs
from specdiff2.errors import ConfigError


def _number(value, types=(int, float)) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 = greedy; top_k 0 and top_p 1 switch those filters off (see `acceptance.warp_probs`)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        typed = _number(self.temperature) and _number(self.top_p) and _number(self.top_k, int)
        if not typed or self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"bad sampling params {self}; need numbers temperature >= 0, "
                              "integer top_k >= 0, 0 < top_p <= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return warp_probs(logits, self.temperature, self.top_k, self.top_p)


GREEDY = SamplingParams()  # argmax drafting whatever the verifier's temperature (deterministic proposals)
