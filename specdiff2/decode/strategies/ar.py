"""Drafting strategies without a diffusion drafter: the verifier alone, and a classic AR drafter."""

from __future__ import annotations

import torch

from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.strategies.base import EngineContext, OneDrafter, Stateless, StepInput, pick_tokens
from specdiff2.models.drafters import ARDrafter


class Autoregressive(Stateless):
    """`ar`: no draft; every verifier step commits one token."""

    name = "ar"

    def prepare(self, ctx: EngineContext) -> None:
        self.layout = Layout.chain(0, ctx.device)

    def reset(self, prompt: torch.Tensor) -> None:
        pass

    def draft(self, step: StepInput, sampling, generator) -> Draft:
        return Draft.empty(step.length)


class ARDraftStrategy(OneDrafter, Stateless):
    """`sd_ar`: standard speculative decoding with a small AR drafter and fixed γ."""

    name = "sd_ar"

    def __init__(self, drafter: ARDrafter, gamma: int = 4):
        super().__init__(drafter, gamma)

    def draft(self, step: StepInput, sampling, generator) -> Draft:
        logits = self.drafter.catch_up(step.seq, step.length, step.kv_len, self.gamma + 1)  # (V,)
        tokens, qs = [], []
        for i in range(self.gamma):
            token, q_probs = pick_tokens(logits, sampling, generator)
            tokens.append(token)
            qs.append(q_probs)
            if i + 1 < self.gamma:
                logits = self.drafter.step_logits(token, step.length + i, step.kv_len)
        q = None if qs[0] is None else torch.stack(qs)  # (γ, V)
        return Draft.chain(torch.stack(tokens), q, self.limit(step))
