"""Acceptance rules as engine plug-ins: they turn (draft, verifier logits) into the accepted path.

A rule returns (path, next_token): path is the accepted node indices (a,) for trees, or for chains
the 0-d count of accepted draft tokens, left on the device so the engine syncs once per step.

The tensor math lives in `acceptance.py` (pure functions); a rule only walks the draft's shape.
Verifier logits row 0 belongs to the last committed token (it predicts depth 1); row n+1 to node n.

Rules are built once, before decoding, by the `conf/acceptance/` group (auto, greedy, rejection, tree,
streak_proxy). The builders take the verifier temperature and refuse the combinations that are not lossless,
so a bad choice fails at start-up with one line instead of mid-run.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from specdiff2.decode.acceptance import greedy_accept, multi_draft_accept, rejection_accept, sample_probs
from specdiff2.decode.draft import Draft
from specdiff2.decode.sampling import SamplingParams
from specdiff2.errors import ConfigError
from specdiff2.models.masks import tree_ancestors


@runtime_checkable
class AcceptanceRule(Protocol):
    """(draft, verifier logits (N+1, V), sampling, generator) -> (path, next_token); see the module docstring.

    May write `draft.info` (per-step statistics the engine averages); must not touch the verifier or its cache.
    """

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams,
                 generator) -> tuple[torch.Tensor, torch.Tensor]: ...


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


def winning_draft(draft: Draft, path: torch.Tensor) -> int:
    """Index, in draw order, of the first draft whose path holds the accepted nodes (0 if none accepted)."""
    if draft.is_chain or path.numel() == 0:
        return 0
    depth = path.numel()
    through = draft.paths[:, depth - 1] == path[-1]  # (K,) drafts passing the last accepted node
    return int(through.nonzero()[0, 0])


class TreeRule:
    """Multi-draft acceptance along a trie: the longest greedy path at temperature 0, multi-draft rejection
    sampling otherwise (lossless for every K). Records which draft won in draft.info (winner, winner_not_first).
    """

    def __init__(self, temperature: float):
        self.rule = auto_rule(temperature)

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
    the number of tokens per step depends on the choice. Biased at temperature > 0 (picking a draft by p,
    then min(1, p/q) on it, is not lossless): refused there.
    """

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        if sampling.temperature != 0:
            raise ConfigError("acceptance=streak_proxy is only lossless at temperature 0; use acceptance=tree")
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


# --- builders (conf/acceptance/*.yaml) ---------------------------------------------------------------------


def greedy_rule(temperature: float) -> GreedyRule:
    if temperature != 0:
        raise ConfigError("acceptance=greedy is only lossless at temperature 0; use acceptance=rejection")
    return GreedyRule()


def auto_rule(temperature: float) -> GreedyRule | RejectionRule:
    """Greedy acceptance at temperature 0, rejection sampling otherwise."""
    return GreedyRule() if temperature == 0 else RejectionRule()


def streak_proxy_rule(temperature: float) -> StreakProxyRule:
    if temperature != 0:
        raise ConfigError(f"acceptance=streak_proxy at temperature {temperature} is biased (picking a draft by p, "
                          "then min(1, p/q) on it, is not lossless); use acceptance=tree or temperature=0")
    return StreakProxyRule()
