"""`self_select` (SpecDiff-2 self-selection): K drafts from one drafter pass, verified as one trie.

One bidirectional drafter pass gives the window marginals q_1..q_γ. K joint drafts are drawn
independently per position from the warped q (drafter temperature / top-k), merged into a trie
(shared prefixes once, duplicates merged, paths in draw order) and verified in one tree forward.

Selection (the acceptance plug-in the engine gets from `rule()`):
- "tree": greedy = the longest argmax path plus its next argmax; sampled = multi-draft rejection
  along the trie. Both lossless, for every K and drafter temperature.
- "streak_proxy": the paper's rule. Score each draft by Σ_m Π_{j≤m} p_j(x_j), keep the best,
  accept along it only. Lossless with greedy acceptance; refused at temperature > 0 (biased there).
"""

from __future__ import annotations

import torch

from specdiff2.decode.acceptance import greedy_accept, sample_probs, warp_probs
from specdiff2.decode.draft import Draft
from specdiff2.decode.rules import SamplingParams, make_rule
from specdiff2.decode.strategies.base import EngineContext, check_gamma, load_diffusion_drafter
from specdiff2.errors import ConfigError
from specdiff2.models.refs import CheckpointRef

SELECTIONS = ("tree", "streak_proxy")


def sample_drafts(q_probs: torch.Tensor, k: int, generator) -> torch.Tensor:
    """K joint drafts (K, γ), each position drawn independently from q_probs (γ, V).

    One exponential race over (K, γ, V): no per-draft loop and no host sync. The positions of one draft
    are independent given the pass, which is what makes the trie's sibling candidates i.i.d. from q.
    """
    return sample_probs(q_probs.unsqueeze(0).expand(k, -1, -1), generator)  # (K, γ)


def winning_draft(draft: Draft, path: torch.Tensor) -> int:
    """Index, in draw order, of the first draft whose path holds the accepted nodes (0 if none accepted)."""
    if draft.is_chain or path.numel() == 0:
        return 0
    depth = path.numel()
    through = draft.paths[:, depth - 1] == path[-1]  # (K,) drafts passing the last accepted node
    return int(through.nonzero()[0, 0])


class RecordWinner:
    """Wraps a tree rule: records which draft won into draft.info (the engine averages numeric info)."""

    def __init__(self, rule):
        self.rule = rule

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        path, next_token = self.rule(draft, verifier_logits, sampling, generator)
        if draft.size:
            winner = winning_draft(draft, path)
            draft.info.update(winner=winner, winner_not_first=float(winner > 0))
        return path, next_token


class StreakProxyRule:
    """SpecDiff-2's selection: best draft by Σ_m Π_{j≤m} p_j(x_j), then greedy acceptance along it.

    p is the verifier's unwarped softmax from the same tree forward (at temperature 0 the warped p is
    one-hot, and the score would collapse to the greedy match length). Any single path accepted
    greedily reproduces the verifier's argmax, so the output stays the verifier greedy output; only
    the number of tokens per step depends on the choice.
    """

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        if sampling.temperature != 0:
            raise ConfigError("selection=streak_proxy is only lossless at temperature 0; use selection=tree")
        if draft.size == 0:
            return torch.zeros((), dtype=torch.long, device=verifier_logits.device), verifier_logits[0].argmax()
        paths = draft.paths  # (K, D) node ids, −1 past a draft's end
        valid = paths >= 0  # (K, D)
        nodes = paths.clamp_min(0)  # (K, D)
        log_p = verifier_logits.float().log_softmax(-1)  # (N+1, V)
        node_log_p = log_p[draft.parents + 1, draft.tokens]  # (N,) log p(node token | its ancestors)
        # where, not a product: a −inf log p times a 0 mask would be NaN.
        streak = torch.where(valid, node_log_p[nodes], 0.0).cumsum(1).exp() * valid  # (K, D) Π_{j≤m} p_j(x_j)
        best = int(streak.sum(1).argmax())  # ties: first in draw order
        chosen = nodes[best][valid[best]]  # (D_b,) node ids along the chosen draft
        rows = torch.cat([chosen.new_zeros(1), chosen + 1])  # (D_b+1,) logits rows predicting each depth
        n, next_token = greedy_accept(draft.tokens[chosen][None], verifier_logits[rows][None])  # (1,), (1,)
        draft.info.update(winner=best, winner_not_first=float(best > 0))
        if draft.is_chain:  # the engine expects the 0-d count for chains
            return n[0], next_token[0]
        return chosen[: int(n[0])], next_token[0]


class SelfSelectStrategy:
    """One diffusion pass → K sampled drafts → trie; the rule picks the accepted path (see module doc)."""

    name = "self_select"

    def __init__(self, drafter: CheckpointRef, gamma: int = 16, k: int = 8, drafter_temperature: float = 1.0,
                 drafter_top_k: int = 0, selection: str = "tree", cache: str = "exact"):
        check_gamma(gamma)
        if k < 1:
            raise ConfigError(f"number of drafts k={k} must be >= 1; set decode.strategy.k")
        if drafter_temperature < 0 or drafter_top_k < 0:
            raise ConfigError(f"drafter_temperature={drafter_temperature} and drafter_top_k={drafter_top_k} "
                              "must be >= 0; set decode.strategy.drafter_temperature / decode.strategy.drafter_top_k")
        if selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {selection!r}; use one of {', '.join(SELECTIONS)}")
        self.ref, self.gamma, self.k, self.cache = drafter, gamma, k, cache
        self.drafter_temperature, self.drafter_top_k = drafter_temperature, drafter_top_k
        self.selection = selection

    def rule(self, acceptance: str, sampling: SamplingParams):
        """The acceptance plug-in for this strategy; the engine asks before `prepare` (errors come first)."""
        if self.selection == "tree":
            return RecordWinner(make_rule(acceptance, sampling.temperature))
        if sampling.temperature != 0:
            raise ConfigError(f"selection=streak_proxy at temperature {sampling.temperature} is biased (picking a "
                              "draft by p, then min(1, p/q) on it, is not lossless); use selection=tree "
                              "or temperature=0")
        if acceptance not in ("auto", "greedy"):
            raise ConfigError(f"selection=streak_proxy accepts greedily, acceptance={acceptance!r} does not "
                              "apply; use acceptance=auto")
        return StreakProxyRule()

    def prepare(self, ctx: EngineContext) -> None:
        self.drafter = load_diffusion_drafter(self.ref, ctx, self.cache)
        self.device = ctx.device

    def reset(self) -> None:
        self.drafter.reset()

    def draft(self, seq, length, budget, sampling, generator) -> Draft:
        gamma = min(self.gamma, budget)
        if gamma <= 0:
            return Draft.empty(self.device)
        canvas = torch.full((gamma,), self.drafter.mask_token_id, dtype=torch.long, device=self.device)  # (γ,)
        logits = self.drafter.window_logits(seq, length, canvas)  # (γ, V)
        q_probs = self.q_probs(logits)  # (γ, V): exactly what the drafts are drawn from
        drafts = sample_drafts(q_probs, self.k, generator)  # (K, γ)
        # Greedy verification never reads q; leaving it out spares an (N, V) gather per step.
        return Draft.from_drafts(drafts, q_probs if sampling.temperature > 0 else None)

    def q_probs(self, drafter_logits: torch.Tensor) -> torch.Tensor:
        return warp_probs(drafter_logits, self.drafter_temperature, self.drafter_top_k)

    def observe(self, n_accepted: int) -> None:
        pass
