"""What a drafting strategy hands to the engine: a token tree (a chain is the one-branch case)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


_EMPTY: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


@dataclass
class Draft:
    """Draft nodes in topological order, verified in one verifier forward.

    tokens (N,): node tokens. parents (N,): parent node, −1 = child of the last committed token.
    q_probs (N, V) | None: the drafter distribution each node's token was drawn from (verifier
        vocabulary), needed by rejection sampling; None for greedy-only drafters.
    paths (K, D): node index of draft k at depth d (−1 past its end). The order of drafts in `paths`
        is the order in which multi-draft rejection tries siblings (i.i.d. draws, kept in draw order).
    """

    tokens: torch.Tensor
    parents: torch.Tensor
    q_probs: torch.Tensor | None
    paths: torch.Tensor
    is_chain: bool
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    @classmethod
    def empty(cls, device) -> "Draft":
        # Cached per device: `ar` asks for one every step, and a fresh tensor is a launch on a slow host.
        key = str(device)
        if key not in _EMPTY:
            none = torch.zeros(0, dtype=torch.long, device=device)
            _EMPTY[key] = (none, none.view(1, 0))
        none, paths = _EMPTY[key]
        return cls(none, none, None, paths, True)

    @classmethod
    def chain(cls, tokens: torch.Tensor, q_probs: torch.Tensor | None = None, info: dict | None = None) -> "Draft":
        n = tokens.shape[0]
        idx = torch.arange(n, device=tokens.device)  # (γ,)
        return cls(tokens, idx - 1, q_probs, idx.view(1, n), True, info or {})

    @classmethod
    def from_drafts(cls, drafts: torch.Tensor, q_probs: torch.Tensor | None = None,
                    info: dict | None = None) -> "Draft":
        """Merge K drafts (K, γ) into a trie: shared prefixes stored once, duplicate drafts merged.

        q_probs (γ, V): the per-position distribution every draft was sampled from (one drafter pass).
        Built on the host: K·γ ≤ a few hundred entries, and the tree shape decides the verifier mask.
        """
        k, gamma = drafts.shape
        rows = drafts.tolist()
        index: dict[tuple, int] = {}
        tokens, parents, depths = [], [], []
        paths = [[-1] * gamma for _ in range(k)]
        for d_i, row in enumerate(rows):
            parent = -1
            for depth in range(gamma):
                key = tuple(row[: depth + 1])
                if key not in index:
                    index[key] = len(tokens)
                    tokens.append(row[depth])
                    parents.append(parent)
                    depths.append(depth)
                parent = index[key]
                paths[d_i][depth] = parent
        dev = drafts.device
        node_q = None if q_probs is None else q_probs[torch.tensor(depths, device=dev)]  # (N, V)
        stats = {"drafts": k, "distinct_drafts": len({tuple(r) for r in rows}), "tree_size": len(tokens)}
        return cls(torch.tensor(tokens, device=dev), torch.tensor(parents, device=dev), node_q,
                   torch.tensor(paths, device=dev), k == 1, {**stats, **(info or {})})

    def truncated(self, depth: int) -> "Draft":
        """The same drafts cut to their first `depth` tokens (nodes re-indexed, topological order kept).

        Cutting every draft at one depth chosen before looking at the tokens keeps multi-draft rejection
        lossless; dropping single nodes by index would not (which nodes exist depends on shared prefixes).
        """
        if depth >= self.paths.shape[1]:
            return self
        if depth == 0:
            return Draft.empty(self.tokens.device)
        keep = torch.zeros(self.size, dtype=torch.bool, device=self.tokens.device)  # (N,)
        kept_paths = self.paths[:, :depth]  # (K, d)
        keep[kept_paths[kept_paths >= 0]] = True
        new_index = keep.long().cumsum(0) - 1  # (N,) old node -> new node
        parents = self.parents[keep]
        parents = torch.where(parents >= 0, new_index[parents.clamp_min(0)], parents)
        paths = torch.where(kept_paths >= 0, new_index[kept_paths.clamp_min(0)], kept_paths)
        q = None if self.q_probs is None else self.q_probs[keep]
        return Draft(self.tokens[keep], parents, q, paths, self.is_chain, {**self.info, "truncated_to": depth})
