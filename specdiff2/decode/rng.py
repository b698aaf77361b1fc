"""A counter-based random number generator whose whole state lives in one device tensor.

Why not `torch.Generator`: a decode step captured as a CUDA graph may only draw from the default CUDA generator,
and a per-request seed would then need process-global reseeding. Here a draw is a pure function of
(key, counter, index): `uniform` hashes them (SplitMix64 finaliser) and advances the counter on the device, so a
captured step replays fresh numbers every time, the same seed gives the same stream on CPU and GPU, and nothing
syncs with the host. Quality: SplitMix64 passes BigCrush; 53 bits per uniform.
"""

from __future__ import annotations

import torch

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # SplitMix64 constants as signed int64 (torch has no uint64 maths)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic: it would copy the sign bit in)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (multiplication wraps modulo 2^64, as in C)."""
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


class CounterRNG:
    """state (2,) int64 on the device: [key, counter]. `reseed` is the only host → device write."""

    def __init__(self, device: torch.device | str, seed: int = 0):
        self.device = torch.device(device)
        self.state = torch.zeros(2, dtype=torch.long, device=self.device)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        key = int(mix64(torch.tensor(int(seed) * 2 + 1, dtype=torch.long)))
        self.state.copy_(torch.tensor([key, 0], dtype=torch.long))

    def uniform(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniforms in [0, 1) of `shape`; float64 keeps all 53 bits, other dtypes round them."""
        n = 1
        for s in shape:
            n *= s
        index = self.state[1] + torch.arange(n, device=self.device)  # (n,) never reused: the counter moves on
        bits = mix64(mix64(index * _GOLDEN + self.state[0]))
        self.state[1:].add_(n)
        u = _shr(bits, 11).to(torch.float64) * (1.0 / (1 << 53))  # (n,) in [0, 1)
        return u.view(*shape).to(dtype)

    def exponential(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Exp(1) draws: −log(1 − U) (1 − U lies in (0, 1], so the log is finite)."""
        return -torch.log1p(-self.uniform(shape, torch.float64)).to(dtype)


def uniform(shape, generator, device, dtype) -> torch.Tensor:
    """Uniforms from a CounterRNG or a torch.Generator (tests and the batched sampler pass the latter)."""
    if isinstance(generator, CounterRNG):
        return generator.uniform(shape, dtype)
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def exponential_like(probs: torch.Tensor, generator) -> torch.Tensor:
    if isinstance(generator, CounterRNG):
        return generator.exponential(probs.shape, probs.dtype)
    return torch.empty_like(probs).exponential_(generator=generator)
