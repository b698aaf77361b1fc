"""Acceptance rules as engine plug-ins: they turn (draft, verifier logits) into the accepted path.

A rule returns (path, next_token): path is the accepted node indices (a,) for trees, or for chains
the 0-d count of accepted draft tokens, left on the device so the engine syncs once per step.

The tensor math lives in `acceptance.py` (pure functions); a rule only walks the draft's shape.
Verifier logits row 0 belongs to the last committed token (it predicts depth 1); row n+1 to node n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specdiff2.decode.acceptance import (
    greedy_accept,
    multi_draft_accept,
    rejection_accept,
    sample_probs,
    warp_probs,
)
from specdiff2.decode.draft import Draft
from specdiff2.errors import ConfigError
from specdiff2.models.masks import tree_ancestors


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"bad sampling params {self}; need temperature >= 0, top_k >= 0, 0 < top_p <= 1")

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return warp_probs(logits, self.temperature, self.top_k, self.top_p)


class GreedyRule:
    """Temperature 0: keep the longest path equal to the verifier argmax, plus its next argmax."""

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        if draft.is_chain:
            n, nxt = greedy_accept(draft.tokens[None], verifier_logits[None])  # (1,), (1,)
            return n[0], nxt[0]
        argmax = verifier_logits.argmax(-1)  # (N+1,)
        node_ok = draft.tokens == argmax[draft.parents + 1]  # (N,) matches its parent's argmax
        anc = tree_ancestors(draft.parents)  # (N, N)
        path_ok = ~(anc & ~node_ok[None, :]).any(1)  # (N,) every ancestor-or-self matches
        depth = anc.sum(1)  # (N,) 1-based
        score = torch.where(path_ok, depth, 0)
        best = int(score.argmax())
        if int(score[best]) == 0:
            return torch.zeros(0, dtype=torch.long, device=argmax.device), argmax[0]
        path = anc[best].nonzero()[:, 0]  # ancestors in topological = depth order
        return path, argmax[best + 1]


class RejectionRule:
    """Lossless at any temperature: speculative sampling on chains, multi-draft sampling on trees."""

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        p_probs = sampling.probs(verifier_logits.float())  # (N+1, V)
        if draft.size == 0:
            return torch.zeros((), dtype=torch.long, device=p_probs.device), sample_probs(p_probs[0], generator)
        if draft.q_probs is None:
            raise ConfigError("rejection sampling needs the drafter's q; this strategy drafts greedily only")
        if draft.is_chain:
            n, nxt = rejection_accept(draft.tokens[None], draft.q_probs[None].float(), p_probs[None], generator)
            return n[0], nxt[0]
        return self._tree(draft, p_probs, generator)

    @staticmethod
    def _tree(draft: Draft, p_probs: torch.Tensor, generator):
        # Walk down the trie; at each node the candidates are the next tokens of the drafts that pass
        # through it, in draw order (duplicates included: multi_draft_accept needs them as rounds).
        paths = draft.paths  # (K, D)
        alive = torch.ones(paths.shape[0], dtype=torch.bool, device=paths.device)  # drafts through node
        node, accepted = -1, []
        for depth in range(paths.shape[1]):
            cand_nodes = paths[:, depth][alive & (paths[:, depth] >= 0)]  # (C,)
            if cand_nodes.numel() == 0:
                break
            idx, token = multi_draft_accept(draft.tokens[cand_nodes], draft.q_probs[cand_nodes[0]].float(),
                                            p_probs[node + 1], generator)
            if int(idx) < 0:
                return torch.tensor(accepted, dtype=torch.long, device=paths.device), token
            node = int(cand_nodes[idx])
            accepted.append(node)
            alive &= paths[:, depth] == node
        return torch.tensor(accepted, dtype=torch.long, device=paths.device), sample_probs(p_probs[node + 1], generator)


def make_rule(name: str, temperature: float):
    """`auto` picks greedy at temperature 0 and rejection sampling otherwise."""
    if name == "auto":
        name = "greedy" if temperature == 0 else "rejection"
    if name == "greedy":
        if temperature != 0:
            raise ConfigError("acceptance=greedy is only lossless at temperature 0; use acceptance=rejection")
        return GreedyRule()
    if name == "rejection":
        return RejectionRule()
    raise ConfigError(f"unknown acceptance rule {name!r}; use auto, greedy or rejection")
