"""DiffuSpec's adaptive draft length (ADL, Eq. 9–11), as device state.

L^gen_t = min(s_t − 1, k_t) (s_t = 1-based first EOS of the raw drafter argmax), L^acc_t = accepted draft
tokens; L̄ ← (1 − ρ)L̄ + ρL for both; k_{t+1} = clip(⌊L̄^gen_t⌋ + δ·1[L̄^acc_t ≥ L̄^gen_t], k_min, k_max).
The paper's k is the draft length γ here: k_1 → gamma_init, k_min → gamma_min, k_max → gamma_max.

k_t (`gamma`) and the EMAs live in 0-d device tensors updated in place, so the update runs inside the engine's
captured step (no host sync) and the next step's draft reads k_{t+1} on the device.
"""

from __future__ import annotations

import torch


class ADL:
    """Adaptive draft length (Eq. 9–11); EMAs start at 0 and k_1 = gamma_init (the reproduction's Algorithm 1).

    gamma (0-d long: k_t), gen_ema and acc_ema (0-d float64, as the host reproduction's Python floats) on `device`.
    """

    def __init__(self, gamma_init: int, gamma_min: int, gamma_max: int, delta: int, rho: float, device):
        self.gamma_init, self.gamma_min, self.gamma_max = gamma_init, gamma_min, gamma_max
        self.delta, self.rho = delta, rho
        self.gamma = torch.full((), gamma_init, dtype=torch.long, device=device)
        self.gen_ema = torch.zeros((), dtype=torch.float64, device=device)
        self.acc_ema = torch.zeros((), dtype=torch.float64, device=device)

    def tensors(self) -> list[torch.Tensor]:
        return [self.gamma, self.gen_ema, self.acc_ema]

    def reset(self) -> None:
        """k_1 and empty EMAs, in place (captured steps hold these addresses)."""
        self.gamma.fill_(self.gamma_init)
        self.gen_ema.zero_()
        self.acc_ema.zero_()

    def update(self, l_gen: torch.Tensor, l_acc: torch.Tensor, live: torch.Tensor) -> None:
        """Fold in one step's L^gen and L^acc (0-d); a step of a stopped request (live False) changes nothing."""
        rho = self.rho
        gen = (1 - rho) * self.gen_ema + rho * l_gen.double()
        acc = (1 - rho) * self.acc_ema + rho * l_acc.double()
        grow = (acc >= gen).long() * self.delta
        gamma = (gen.floor().long() + grow).clamp(self.gamma_min, self.gamma_max)
        for state, new in ((self.gen_ema, gen), (self.acc_ema, acc), (self.gamma, gamma)):
            state.copy_(torch.where(live, new, state))
