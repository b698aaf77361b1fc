"""Drafting strategies without a diffusion drafter: the verifier alone, and a classic AR drafter."""

from __future__ import annotations

import torch

from specdiff2.decode.draft import Draft
from specdiff2.decode.strategies.base import EngineContext, check_gamma, pick_tokens
from specdiff2.models.drafters import ARDrafter


class Autoregressive:
    """`ar`: no draft; every verifier step commits one token."""

    name = "ar"

    def prepare(self, ctx: EngineContext) -> None:
        self.device = ctx.device

    def reset(self) -> None:
        pass

    def draft(self, seq, length, budget, sampling, generator) -> Draft:
        return Draft.empty(self.device)

    def observe(self, n_accepted: int) -> None:
        pass


class ARDraftStrategy:
    """`sd_ar`: standard speculative decoding with a small AR drafter and fixed γ."""

    name = "sd_ar"

    def __init__(self, drafter: ARDrafter, gamma: int = 4):
        check_gamma(gamma)
        self.drafter, self.gamma = drafter, gamma

    def prepare(self, ctx: EngineContext) -> None:
        self.device = ctx.device

    def reset(self) -> None:
        self.drafter.reset()

    def draft(self, seq, length, budget, sampling, generator) -> Draft:
        gamma = min(self.gamma, budget)
        if gamma <= 0:
            return Draft.empty(self.device)
        logits = self.drafter.catch_up(seq, length)  # (V,)
        tokens, qs = [], []
        for i in range(gamma):
            token, q_probs = pick_tokens(logits, sampling, generator)
            tokens.append(token)
            qs.append(q_probs)
            if i + 1 < gamma:
                logits = self.drafter.step_logits(token.view(1), length + i)
        q = None if qs[0] is None else torch.stack(qs)  # (γ, V)
        return Draft.chain(torch.stack(tokens), q)

    def observe(self, n_accepted: int) -> None:
        pass
