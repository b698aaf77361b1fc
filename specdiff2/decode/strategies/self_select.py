"""`self_select` (SpecDiff-2 self-selection): K drafts from one drafter pass, verified as one trie.

One bidirectional drafter pass gives the window marginals q_1..q_γ. K joint drafts are drawn
independently per position from the warped q (drafter temperature / top-k) and verified in one tree forward
as K chains of γ under the last committed token (`Layout.chains`: a fixed layout built once, on the device; twins
are verified twice rather than merged, which keeps every shape fixed). Near the context limit the depth cut is the
step's budget, known before any token is drawn, so multi-draft rejection stays lossless there.

Which path is accepted is the acceptance rule's job (conf/acceptance, `decode/acceptance/rules.py`); decode=self_select
selects acceptance=tree:
- tree: greedy = the longest argmax path plus its next argmax; sampled = multi-draft rejection down the
  drafts. Both lossless, for every K and drafter temperature. Records which draft won.
- streak_proxy: the paper's rule. Score each draft by Σ_m Π_{j≤m} p_j(x_j), keep the best, accept along it
  only. Lossless with greedy acceptance; refused at temperature > 0 (biased there).
"""

from __future__ import annotations

import torch

from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.sampling import sample_probs, warp_probs
from specdiff2.decode.strategies.base import EngineContext, OneDrafter, Stateless, StepInput
from specdiff2.errors import ConfigError
from specdiff2.models.drafters import DiffusionDrafter


def sample_drafts(q_probs: torch.Tensor, k: int, generator) -> torch.Tensor:
    """K joint drafts (K, γ), each position drawn independently from q_probs (γ, V).

    One exponential race over (K, γ, V): no per-draft loop and no host sync. The positions of one draft
    are independent given the pass, which is what makes the trie's sibling candidates i.i.d. from q.
    """
    return sample_probs(q_probs.unsqueeze(0).expand(k, -1, -1), generator)  # (K, γ)


def first_twins(drafts: torch.Tensor) -> torch.Tensor:
    """(K, γ): the first draft agreeing with draft k on its first d+1 tokens (k itself when none before it)."""
    same = (drafts[:, None] == drafts[None]).long().cumprod(-1)  # (K, K, γ) [j, k, d]: j, k agree through d
    return same.argmax(0)  # first maximal j


def draft_stats(drafts: torch.Tensor) -> dict[str, torch.Tensor]:
    """drafts, distinct drafts and the size of the trie they would make (distinct prefixes), on the device."""
    k = drafts.shape[0]
    new_node = first_twins(drafts) == torch.arange(k, device=drafts.device)[:, None]  # (K, γ) no earlier twin
    return {"drafts": float(k), "distinct_drafts": new_node[:, -1].sum().float(), "tree_size": new_node.sum().float()}


class SelfSelectStrategy(OneDrafter, Stateless):
    """One diffusion pass → K sampled drafts → K chains; the acceptance rule picks the accepted path."""

    name = "self_select"

    def __init__(self, drafter: DiffusionDrafter, gamma: int = 16, k: int = 8, drafter_temperature: float = 1.0,
                 drafter_top_k: int = 0):
        super().__init__(drafter, gamma)
        if k < 1:
            raise ConfigError(f"number of drafts k={k} must be >= 1; set decode.strategy.k")
        if drafter_temperature < 0 or drafter_top_k < 0:
            raise ConfigError(f"drafter_temperature={drafter_temperature} and drafter_top_k={drafter_top_k} "
                              "must be >= 0; set decode.strategy.drafter_temperature / decode.strategy.drafter_top_k")
        self.k = k
        self.drafter_temperature, self.drafter_top_k = drafter_temperature, drafter_top_k

    def prepare(self, ctx: EngineContext) -> None:
        super().prepare(ctx)
        self.layout = Layout.chains(self.k, self.gamma, ctx.device)
        self.depth_of_node = torch.arange(self.k * self.gamma, device=ctx.device) % self.gamma  # (K·γ,)

    def draft(self, step: StepInput, sampling, generator) -> Draft:
        logits = self.window_logits(step)  # (γ, V) one pass over an all-MASK window
        q_probs = self.q_probs(logits)  # (γ, V): exactly what the drafts are drawn from
        drafts = sample_drafts(q_probs, self.k, generator)  # (K, γ)
        # Greedy verification never reads q; leaving it out spares a (K·γ, V) gather per step.
        node_q = q_probs[self.depth_of_node] if sampling.temperature > 0 else None  # (K·γ, V)
        return Draft(drafts.flatten(), self.layout, node_q, self.limit(step), draft_stats(drafts))

    def q_probs(self, drafter_logits: torch.Tensor) -> torch.Tensor:
        return warp_probs(drafter_logits, self.drafter_temperature, self.drafter_top_k)
