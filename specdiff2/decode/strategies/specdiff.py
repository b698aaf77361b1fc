"""`specdiff`: a masked-diffusion drafter fills γ masks over T denoising steps (T=1: one pass)."""

from __future__ import annotations

import math

import torch

from specdiff2.decode.draft import Draft
from specdiff2.decode.sampling import GREEDY
from specdiff2.decode.strategies.base import OneDrafter, Stateless, StepInput, check_proposal, pick_tokens
from specdiff2.errors import ConfigError
from specdiff2.models.drafters import DiffusionDrafter


class SpecDiffStrategy(OneDrafter, Stateless):
    """Each step unmasks ceil(remaining / steps left) positions.

    Temperature 0 unmasks the most confident positions first (SpecDiff). Temperature > 0 with sampled proposals
    unmasks left to right: rejection sampling needs each q_j to condition on tokens left of j only; a token
    drawn after (and conditioned on) a later position would make the chain lossy.
    proposal="argmax" (T > 0): the greedy draft (confidence order) as deterministic candidates, verified by
    `rules.sampled_match` (lossless for any draft fixed before p is seen; no q needed).
    """

    name = "specdiff"

    def __init__(self, drafter: DiffusionDrafter, gamma: int = 16, steps: int = 1, proposal: str = "sample"):
        super().__init__(drafter, gamma)
        if steps < 1 or steps > gamma:
            raise ConfigError(f"denoising steps={steps} must be in [1, gamma={gamma}]; set decode.strategy.steps")
        check_proposal(proposal)
        self.steps, self.proposal = steps, proposal

    def draft(self, step: StepInput, sampling, generator) -> Draft:
        gamma = self.gamma
        canvas = self.mask_canvas()  # (γ,)
        masked = torch.ones(gamma, dtype=torch.bool, device=self.device)  # (γ,)
        q_out = None
        remaining = gamma
        fixed = sampling.temperature > 0 and self.proposal == "argmax"
        drawing = GREEDY if fixed else sampling
        for t in range(self.steps):
            logits = self.window_logits(step, canvas)  # (γ, V)
            tokens, q_probs = pick_tokens(logits, drawing, generator)  # (γ,), (γ, V) | None
            k = math.ceil(remaining / (self.steps - t))
            remaining -= k
            chosen = self._choose(logits, masked, k, greedy=q_probs is None)  # (γ,) bool
            canvas = torch.where(chosen, tokens, canvas)
            if q_probs is not None:
                q_out = torch.where(chosen[:, None], q_probs, q_out if q_out is not None else q_probs)
            masked &= ~chosen
        return Draft.chain(canvas, q_out, self.limit(step), {"steps": self.steps}, fixed=fixed)

    @staticmethod
    def _choose(logits: torch.Tensor, masked: torch.Tensor, k: int, greedy: bool) -> torch.Tensor:
        gamma = masked.shape[0]
        if greedy:
            score = logits.float().log_softmax(-1).amax(-1)  # (γ,) confidence of the argmax
        else:
            score = -torch.arange(gamma, device=masked.device, dtype=torch.float)  # leftmost first
        score = score.masked_fill(~masked, float("-inf"))
        top = score.topk(min(k, gamma)).indices  # (k,)
        return torch.zeros_like(masked).index_fill(0, top, True) & masked  # no host → device copy: capturable
