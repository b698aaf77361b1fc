"""Acceptance rules as engine plug-ins: they turn (draft, verifier logits) into the accepted path.

A rule returns (winner, n_accepted, next_token), 0-d tensors left on the device: the engine commits the first
n_accepted nodes of draft `winner` and next_token without waiting for them (the step is captured whole).

The tensor math lives in `core.py` (pure functions); a rule only walks the draft's shape.
Verifier logits row 0 belongs to the last committed token (it predicts depth 1); row n+1 to node n.

Rules are built once, before decoding, by the `conf/acceptance/` group (auto, greedy, rejection, tree,
streak_proxy): each builder takes the decode job's one `SamplingParams` and refuses the combinations that are not
lossless, so a bad choice fails at start-up with one line instead of mid-run. A rule that is exact only at
temperature 0 carries a `biased_above_zero` line; the engine refuses it at T > 0 however it was built (`check_rule`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from specdiff2.decode.acceptance.core import greedy_accept, multi_draft_accept, rejection_accept
from specdiff2.decode.draft import Draft, take
from specdiff2.decode.sampling import SamplingParams, sample_probs
from specdiff2.errors import ConfigError


@runtime_checkable
class AcceptanceRule(Protocol):
    """(draft, verifier logits (N+1, V), sampling, generator) -> (winner, n_accepted, next_token), all 0-d long
    on the device: draft `winner` (a row of draft.paths; 0 for chains) has its first n_accepted nodes accepted,
    then next_token (correction or bonus) is committed. Pure device code: no host sync, fixed shapes.

    May write `draft.info` (0-d tensors the engine averages per step); must not touch the verifier or its cache.
    """

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams,
                 generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def _path_nodes(draft: Draft) -> tuple[torch.Tensor, torch.Tensor]:
    """nodes (K, D) clamped to valid ids, valid (K, D): a real node at a depth below the draft's limit."""
    paths = draft.paths
    depth = torch.arange(paths.shape[1], device=paths.device)
    return paths.clamp_min(0), (paths >= 0) & (depth[None] < draft.limit)


def greedy_tree(draft: Draft, argmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The longest path whose every node is its parent's verifier token (argmax (N+1,), or one draw per row),
    ties: first in draw order. Every path is a prefix chain of the tree, so the longest match is the walk."""
    nodes, valid = _path_nodes(draft)
    ok = (draft.tokens[nodes] == argmax[draft.parents[nodes] + 1]) & valid  # (K, D)
    n_k = ok.long().cumprod(1).sum(1)  # (K,)
    winner = n_k.argmax()  # first maximal index
    n = take(n_k, winner)
    last_row = torch.where(n > 0, take(take(nodes, winner), (n - 1).clamp_min(0)) + 1, 0)  # row after the path
    return winner, n, take(argmax, last_row)


class GreedyRule:
    """Temperature 0: keep the longest path equal to the verifier argmax, plus its next argmax."""

    biased_above_zero = "acceptance=greedy at temperature {t} is biased; use acceptance=rejection (or auto) or " \
                        "temperature=0"

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        zero = draft.limit.new_zeros(())
        if draft.is_chain:
            n, nxt = greedy_accept(draft.tokens[None], verifier_logits[None], draft.limit)  # (1,), (1,)
            return zero, n[0], nxt[0]
        return greedy_tree(draft, verifier_logits.argmax(-1))


def sampled_match(draft: Draft, p_probs: torch.Tensor, generator):
    """Deterministic candidates (fixed before p is seen): draw one token from p at every node, then walk down the
    children that match it; the first draw with no matching child (or past the limit) is the correction, and a
    fully matched path takes its last node's draw as the bonus.

    Why it is exact: along the walk each committed token is a fresh draw from p given the tokens before it (rows
    off the walk are never read). It is the same law as trying the children in order, accepting child c with
    probability p_work(c) and removing it from p_work on rejection (sampling p without replacement), and the same as
    rejection sampling with a one-hot q on a chain. Pure device code at fixed shapes.
    """
    return greedy_tree(draft, sample_probs(p_probs, generator))  # (N+1,) one draw per verified row


class RejectionRule:
    """Lossless at any temperature: speculative sampling on chains, multi-draft sampling on trees of i.i.d. drafts,
    `sampled_match` on deterministic candidates (`draft.fixed`)."""

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        p_probs = sampling.probs(verifier_logits.float())  # (N+1, V)
        zero = draft.limit.new_zeros(())
        if draft.size == 0:
            return zero, zero, sample_probs(p_probs[0], generator)
        if draft.fixed:
            return sampled_match(draft, p_probs, generator)
        if draft.q_probs is None:
            raise ConfigError("rejection sampling needs the drafter's q; this strategy drafts greedily only")
        if draft.is_chain:
            n, nxt = rejection_accept(draft.tokens[None], draft.q_probs[None].float(), p_probs[None], generator,
                                      draft.limit)
            return zero, n[0], nxt[0]
        return multi_draft_tree(draft, p_probs, generator)


def multi_draft_tree(draft: Draft, p_probs: torch.Tensor, generator):
    """Multi-draft rejection down the tree, one fixed round per depth (no host sync).

    At depth d the candidates are the depth-d tokens of the drafts still agreeing with the accepted path, in
    draw order, duplicates as separate rounds (`multi_draft_accept`), against p at the accepted node; a draft
    stays alive when its token equals the accepted one (in a trie that is the same node, in K chains a twin).
    Rounds after the first rejection draw numbers that are never used: the law is that of the stopped walk.
    """
    nodes, valid = _path_nodes(draft)  # (K, D)
    tokens = draft.tokens[nodes]  # (K, D)
    dev = tokens.device
    alive = torch.ones(nodes.shape[0], dtype=torch.bool, device=dev)  # (K,)
    row = torch.zeros((), dtype=torch.long, device=dev)  # logits row of the accepted node (0: the root)
    n = torch.zeros((), dtype=torch.long, device=dev)
    stopped = torch.zeros((), dtype=torch.bool, device=dev)
    out = torch.zeros((), dtype=torch.long, device=dev)
    for d in range(nodes.shape[1]):
        live = alive & valid[:, d] & ~stopped  # (K,) candidates of this round
        first = live.long().argmax()  # any live draft: they share the accepted prefix, hence q and p
        q = take(draft.q_probs, take(nodes[:, d], first)).float()  # (V,)
        idx, token = multi_draft_accept(tokens[:, d], q, take(p_probs, row), generator, live)
        hit = (idx >= 0) & ~stopped
        out = torch.where(~stopped & ~hit, token, out)  # no candidate left counts as a rejection: token ~ p
        alive = torch.where(hit, live & (tokens[:, d] == token), alive)
        row = torch.where(hit, take(nodes[:, d], idx.clamp_min(0)) + 1, row)
        n = n + hit.long()
        stopped = stopped | ~hit
    out = torch.where(stopped, out, sample_probs(take(p_probs, row), generator))  # every depth accepted: the bonus
    return alive.long().argmax(), n, out


class TreeRule:
    """Multi-draft acceptance along the drafts: the longest greedy path at temperature 0, multi-draft rejection
    sampling otherwise (lossless for every K). Records which draft won in draft.info (winner, winner_not_first).
    """

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        rule = GreedyRule() if sampling.greedy else RejectionRule()  # sampling is fixed per engine: a static choice
        winner, n, next_token = rule(draft, verifier_logits, sampling, generator)
        if draft.size:
            draft.info.update(winner=winner.float(), winner_not_first=(winner > 0).float())
        return winner, n, next_token


class StreakProxyRule:
    """SpecDiff-2's selection: best draft by Σ_m Π_{j≤m} p_j(x_j), then greedy acceptance along it.

    p is the verifier's unwarped softmax from the same tree forward (at temperature 0 the warped p is
    one-hot, and the score would collapse to the greedy match length). Any single path accepted
    greedily reproduces the verifier's argmax, so the output stays the verifier greedy output; only
    the number of tokens per step depends on the choice. Biased at temperature > 0 (picking a draft by p,
    then min(1, p/q) on it, is not lossless): refused there.
    """

    biased_above_zero = "acceptance=streak_proxy at temperature {t} is biased (picking a draft by p, then min(1, p/q) " \
                        "on it, is not lossless); use acceptance=tree or temperature=0"

    def __call__(self, draft: Draft, verifier_logits: torch.Tensor, sampling: SamplingParams, generator):
        zero = draft.limit.new_zeros(())
        if draft.size == 0:
            return zero, zero, verifier_logits[0].argmax()
        nodes, valid = _path_nodes(draft)  # (K, D)
        log_p = verifier_logits.float().log_softmax(-1)  # (N+1, V)
        node_log_p = log_p[draft.parents + 1, draft.tokens]  # (N,) log p(node token | its ancestors)
        # where, not a product: a −inf log p times a 0 mask would be NaN.
        streak = torch.where(valid, node_log_p[nodes], 0.0).cumsum(1).exp() * valid  # (K, D) Π_{j≤m} p_j(x_j)
        best = streak.sum(1).argmax()  # ties: first in draw order
        chosen = take(nodes, best)  # (D,)
        rows = torch.cat([chosen.new_zeros(1), chosen + 1])  # (D+1,) logits rows predicting each depth
        n, next_token = greedy_accept(draft.tokens[chosen][None], verifier_logits[rows][None],
                                      take(valid, best).sum())  # (1,), (1,)
        draft.info.update(winner=best.float(), winner_not_first=(best > 0).float())
        return best, n[0], next_token[0]


# --- builders (conf/acceptance/*.yaml): each gets the decode job's SamplingParams ------------------------


def check_rule(rule: AcceptanceRule, sampling: SamplingParams) -> None:
    """One line for a rule that is not lossless at this temperature (the engine calls it for hand-built pairs)."""
    refusal = getattr(rule, "biased_above_zero", None)  # set by the rules that are exact at temperature 0 only
    if refusal and not sampling.greedy:
        raise ConfigError(refusal.format(t=sampling.temperature))


def _checked(rule: AcceptanceRule, sampling: SamplingParams) -> AcceptanceRule:
    check_rule(rule, sampling)
    return rule


def greedy_rule(sampling: SamplingParams) -> GreedyRule:
    return _checked(GreedyRule(), sampling)


def rejection_rule(sampling: SamplingParams) -> RejectionRule:
    return RejectionRule()  # lossless at every temperature


def auto_rule(sampling: SamplingParams) -> GreedyRule | RejectionRule:
    """Greedy acceptance at temperature 0, rejection sampling otherwise."""
    return GreedyRule() if sampling.greedy else RejectionRule()


def tree_rule(sampling: SamplingParams) -> TreeRule:
    return TreeRule()


def streak_proxy_rule(sampling: SamplingParams) -> StreakProxyRule:
    return _checked(StreakProxyRule(), sampling)
