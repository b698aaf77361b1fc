"""`tree`: a best-first draft tree from one diffusion pass (DDTree, arXiv 2604.12989), verified in one tree pass.

One pass gives the window marginals q_1..q_γ. A draft node is a prefix (x_1..x_d) scored by its path log-probability
Σ_{j≤d} log q_j(x_j); the tree holds the `nodes` best prefixes, which is what best-first expansion under a node
budget reaches (a child never scores above its parent, so the set is prefix-closed; ties go to the shallower node).
It is built on the device at fixed shapes: per depth the `nodes` best prefixes from the previous depth's best times
each position's top-`branch` tokens, then the global best `nodes` over all depths.

source="samples": the tree is instead self-selection's K draws from the (warped) marginals merged into one trie
(twins share their nodes; the K·γ slots are verified whatever the overlap, so shapes stay fixed).

Either way the candidates are fixed before the verifier's p is seen, so temperature > 0 verifies them by
`rules.sampled_match` (draw from p at each node, follow the matching child): lossless, no q, for any candidate set.
Temperature 0 takes the longest greedy path. The node budget and depth are fixed before anything is drawn, also near
the context limit.
"""

from __future__ import annotations

import torch

from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.sampling import warp_probs
from specdiff2.decode.strategies.base import EngineContext, OneDrafter, Stateless, StepInput
from specdiff2.decode.strategies.self_select import draft_stats, first_twins, sample_drafts
from specdiff2.errors import ConfigError
from specdiff2.models.drafters import DiffusionDrafter


def best_first_tree(logq: torch.Tensor, nodes: int, branch: int):
    """The `nodes` best prefixes of the window (logq (γ, V) log-marginals), in topological order.

    Returns tokens (N,), parents (N,) (−1 = child of the root), depth (N,) 0-based, score (N,) path log-prob.
    """
    gamma, vocab = logq.shape
    branch = min(branch, vocab)
    top_lq, top_id = logq.topk(branch, dim=-1)  # (γ, b) best first
    pad = logq.new_full((max(0, nodes - branch),), float("-inf"))
    first = torch.cat([top_lq[0], pad])[:nodes]  # (N,) depth-0 prefixes, padded with impossible ones
    scores, tokens, parents = [first], [torch.cat([top_id[0], top_id.new_zeros(pad.shape)])[:nodes]], []
    parents.append(torch.full((nodes,), -1, dtype=torch.long, device=logq.device))
    for d in range(1, gamma):
        cand = scores[-1][:, None] + top_lq[d][None]  # (N, b) every kept prefix times this depth's best tokens
        best = cand.flatten().topk(nodes)  # N best prefixes of length d+1
        scores.append(best.values)
        parents.append(best.indices // branch)
        tokens.append(top_id[d][best.indices % branch])
    pool = torch.stack(scores).flatten()  # (γ·N,) depth-major
    # Stable sort: among equal scores the shallower (earlier in the pool) wins, so a parent precedes its child.
    chosen = pool.sort(descending=True, stable=True).indices[:nodes].sort().values  # (N,) topological
    depth = chosen // nodes  # (N,)
    where = torch.full((gamma * nodes,), -1, dtype=torch.long, device=logq.device)
    where = where.scatter(0, chosen, torch.arange(nodes, device=logq.device))  # pool index -> node index
    parent_pool = (depth - 1).clamp_min(0) * nodes + torch.stack(parents).flatten()[chosen]  # (N,)
    parent = torch.where(depth > 0, where[parent_pool], -1)
    return torch.stack(tokens).flatten()[chosen], parent, depth, pool[chosen]


def sample_trie(drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K drafts (K, γ) as one trie over K·γ slots (node k·γ + d): a node's canonical twin is the same depth of the
    first draft sharing its prefix. Returns parents (K·γ,), depth (K·γ,), paths (K, γ) through canonical nodes."""
    k, gamma = drafts.shape
    d = torch.arange(gamma, device=drafts.device)
    paths = first_twins(drafts) * gamma + d[None]  # (K, γ) canonical node of each draft's depth-d token
    parents = torch.where(d[None] > 0, torch.roll(paths, 1, dims=1), -1).flatten()  # (K·γ,) canonical parents
    return parents, d.repeat(k), paths


SOURCES = ("best_first", "samples")


class TreeStrategy(OneDrafter, Stateless):
    """One diffusion pass → the `nodes` most probable prefixes → one tree verify (see the module docstring)."""

    name = "tree"

    def __init__(self, drafter: DiffusionDrafter, gamma: int = 16, nodes: int = 32, branch: int = 4,
                 source: str = "best_first", k: int = 4, drafter_temperature: float = 1.0, drafter_top_k: int = 0):
        super().__init__(drafter, gamma)
        if nodes < 1 or branch < 1 or k < 1:
            raise ConfigError(f"nodes={nodes}, branch={branch} and k={k} must be >= 1; set decode.strategy.nodes / "
                              "decode.strategy.branch / decode.strategy.k")
        if source not in SOURCES:
            raise ConfigError(f"decode.strategy.source={source!r} is unknown; use one of {SOURCES}")
        self.branch, self.source = branch, source
        self.nodes = nodes if source == "best_first" else k * gamma
        self.k, self.drafter_temperature, self.drafter_top_k = k, drafter_temperature, drafter_top_k

    def prepare(self, ctx: EngineContext) -> None:
        super().prepare(ctx)
        # The engine reads the sizes (nodes, depth) once; every step brings its own tree.
        self.layout = Layout.tree(torch.full((self.nodes,), -1, dtype=torch.long, device=ctx.device),
                                  torch.zeros(self.nodes, dtype=torch.long, device=ctx.device), self.gamma)

    def draft(self, step: StepInput, sampling, generator) -> Draft:
        logits = self.window_logits(step)  # (γ, V) one pass over an all-MASK window
        limit = self.limit(step)
        if self.source == "samples":
            q_probs = warp_probs(logits, self.drafter_temperature, self.drafter_top_k)  # (γ, V)
            drafts = sample_drafts(q_probs, self.k, generator)  # (K, γ)
            parents, depth, paths = sample_trie(drafts)
            return Draft(drafts.flatten(), Layout.tree(parents, depth, self.gamma, paths), None, limit,
                         draft_stats(drafts), fixed=True)
        tokens, parents, depth, score = best_first_tree(logits.float().log_softmax(-1), self.nodes, self.branch)
        layout = Layout.tree(parents, depth, self.gamma)
        info = {"tree_depth": depth.max().float() + 1, "tree_path_mass": score.exp().sum()}  # Σ over nodes of Π q
        return Draft(tokens, layout, None, limit, info, fixed=True)
