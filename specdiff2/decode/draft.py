"""What a drafting strategy hands to the engine: draft tokens in a fixed layout (a chain is the one-path case).

Every shape here is fixed for a strategy (γ, K·γ, k_max): the engine captures draft → verify → accept → commit as
CUDA graphs, so nothing may depend on drawn tokens. What varies per step lives in device tensors: the tokens, q,
and `limit`, the depth past which no draft token may be accepted (the step's budget, an adaptive length).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] along dim 0 for a 0-d device index. Plain `x[index]` calls .item() on it: a host sync, which a
    captured step must never do."""
    return x.index_select(0, index.view(1)).squeeze(0)


@dataclass(frozen=True)
class Layout:
    """The verify layout of N draft nodes under the root (the last committed token), fixed per strategy.

    parents (N,): parent node, −1 = child of the root. paths (K, D): node of draft k at depth d (−1 past its
    end); the order of drafts is the order in which multi-draft rejection tries siblings (draw order).
    intra (N+1, N+1) bool: row i sees column j (root = row 0, node n = row n+1): ancestors and itself.
    depth (N+1,) long: 0 for the root; a node's position is the root's + its depth.
    """

    parents: torch.Tensor
    paths: torch.Tensor
    intra: torch.Tensor | None
    depth: torch.Tensor

    @property
    def nodes(self) -> int:
        return self.parents.shape[0]

    @property
    def is_chain(self) -> bool:
        return self.intra is None

    @property
    def max_depth(self) -> int:
        return self.paths.shape[1]

    @classmethod
    def chain(cls, gamma: int, device) -> "Layout":
        idx = torch.arange(gamma, device=device)  # (γ,)
        return cls(idx - 1, idx.view(1, gamma), None, torch.arange(gamma + 1, device=device))

    @classmethod
    def chains(cls, k: int, gamma: int, device) -> "Layout":
        """K independent chains of γ (node k·γ + d), one tree: a node sees the root and its chain's earlier nodes."""
        if k == 1:
            return cls.chain(gamma, device)
        d = torch.arange(gamma, device=device)
        parents = torch.where(d > 0, d - 1, -1)[None] + torch.arange(k, device=device)[:, None] * gamma  # (K, γ)
        parents = torch.where(d[None] > 0, parents, -1).flatten()  # (K·γ,)
        paths = torch.arange(k * gamma, device=device).view(k, gamma)  # (K, γ)
        return cls.tree(parents, d.repeat(k), gamma, paths)

    @classmethod
    def tree(cls, parents: torch.Tensor, depth: torch.Tensor, max_depth: int,
             paths: torch.Tensor | None = None) -> "Layout":
        """A tree in topological order (parents (N,), depth (N,) 0-based), built without a host sync, so a captured
        step may build its own: ancestors by pointer doubling (ceil(log2 max_depth) squarings of the reach matrix,
        a few kernels instead of a max_depth-step walk); `paths` (K, D) the root-to-node paths the rules walk
        (default: one per node)."""
        given, n, dev = paths, parents.shape[0], parents.device
        node = torch.arange(n, device=dev)
        # Small integers in fp32 (n <= a few hundred): exact, also under TF32 matmuls (10-bit mantissa, < 2048).
        # (one_hot would check its ids on the host; −1, a child of the root, matches no column)
        reach = torch.eye(n, device=dev) + (parents[:, None] == node[None, :]).float()  # (N, N) self + parent
        for _ in range(max(max_depth - 1, 1).bit_length()):  # reach distance 1 -> 2 -> 4 ... >= max_depth - 1
            reach = ((reach @ reach) > 0).float()  # (N, N) [k, j]: j is k or an ancestor of k
        anc = reach > 0
        at_depth = (depth[None, :] == torch.arange(max_depth, device=dev)[:, None]).float()  # (D, N)
        # Each node has at most one ancestor-or-self per depth: the sum picks its index (+1; 0 = none).
        paths = ((reach * (node + 1).float()[None]) @ at_depth.T).long() - 1  # (N, D)
        root = torch.ones(n + 1, 1, dtype=torch.bool, device=dev)  # every row sees the root
        intra = torch.cat([root, torch.cat([torch.zeros(1, n, dtype=torch.bool, device=dev), anc])], 1)  # (N+1, N+1)
        return cls(parents, paths if given is None else given, intra, torch.cat([depth.new_zeros(1), depth + 1]))


@dataclass
class Draft:
    """tokens (N,) in `layout` order; q_probs (N, V) | None: the law each token was drawn from (rejection
    sampling needs it; None for greedy-only drafts); limit 0-d long: only depths < limit may be accepted.
    fixed: the tokens are deterministic candidates (argmax proposals, a best-first tree), chosen before the
    verifier's p is seen; at temperature > 0 they are verified by sampling p and following the matching child,
    which needs no q. info: per-step statistics as 0-d device tensors (the engine averages them over steps)."""

    tokens: torch.Tensor
    layout: Layout
    q_probs: torch.Tensor | None
    limit: torch.Tensor
    info: dict = field(default_factory=dict)
    fixed: bool = False

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    @property
    def is_chain(self) -> bool:
        return self.layout.is_chain

    @property
    def paths(self) -> torch.Tensor:
        return self.layout.paths

    @property
    def parents(self) -> torch.Tensor:
        return self.layout.parents

    @classmethod
    def empty(cls, limit: torch.Tensor) -> "Draft":
        tokens = torch.zeros(0, dtype=torch.long, device=limit.device)
        return cls(tokens, Layout.chain(0, limit.device), None, torch.zeros_like(limit))

    @classmethod
    def chain(cls, tokens: torch.Tensor, q_probs: torch.Tensor | None, limit: torch.Tensor,
              info: dict | None = None, fixed: bool = False) -> "Draft":
        return cls(tokens, Layout.chain(tokens.shape[0], tokens.device), q_probs, limit, info or {}, fixed)
