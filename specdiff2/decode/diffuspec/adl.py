"""DiffuSpec's adaptive draft length (ADL, Eq. 9–11).

L^gen_t = min(s_t − 1, k_t) (s_t = 1-based first EOS of the raw drafter argmax), L^acc_t = accepted draft
tokens; L̄ ← (1 − ρ)L̄ + ρL for both; k_{t+1} = clip(⌊L̄^gen_t⌋ + δ·1[L̄^acc_t ≥ L̄^gen_t], k_min, k_max).
"""

from __future__ import annotations

import math


class ADLController:
    """Adaptive draft length (Eq. 9–11); EMAs start at 0 and k_1 = k_init (the reproduction's Algorithm 1)."""

    def __init__(self, k_init: int, k_min: int, k_max: int, delta: int, rho: float):
        self.k_init, self.k_min, self.k_max, self.delta, self.rho = k_init, k_min, k_max, delta, rho
        self.reset()

    def reset(self) -> None:
        self.k, self.gen_ema, self.acc_ema = self.k_init, 0.0, 0.0

    def update(self, l_gen: int, l_acc: int) -> int:
        """Fold in one step's L^gen and L^acc; returns k_{t+1}."""
        self.gen_ema = (1 - self.rho) * self.gen_ema + self.rho * l_gen
        self.acc_ema = (1 - self.rho) * self.acc_ema + self.rho * l_acc
        grow = self.delta if self.acc_ema >= self.gen_ema else 0
        self.k = min(self.k_max, max(self.k_min, math.floor(self.gen_ema) + grow))
        return self.k
