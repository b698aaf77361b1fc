"""Boolean attention masks for the static, slot-indexed KV cache (True = may attend).

All helpers are pure tensor functions: `start` may be a Python int or a 0-d tensor, and nothing
calls `.item()`, so they can run inside a compiled / CUDA-graph-captured decode step.
"""

from __future__ import annotations

import math

import torch


def _as_tensor(start: int | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    return torch.as_tensor(start, dtype=torch.long, device=device)


def causal_cache_mask(
    start: int | torch.Tensor, length: int, max_seq_len: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Mask for `length` new tokens written at slots start..start+length-1.

    Each new token sees every slot < start (the committed prefix) and the block causally. Slots past
    the block may hold stale entries from a rejected draft; they are masked out, which is what makes
    rollback free. Returns (1, 1, length, max_seq_len) bool.
    """
    start = _as_tensor(start, device)
    slots = torch.arange(max_seq_len, device=start.device)  # (S,)
    rows = start + torch.arange(length, device=start.device)  # (L,) slot of each new token
    return (slots[None, :] <= rows[:, None])[None, None]  # (1, 1, L, S)


def tree_ancestors(parents: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: [n, m] is True when node m is node n itself or one of its ancestors.

    `parents[n]` is the parent's index (< n, topological order) or -1 for a node attached to the
    prefix. Computed as the transitive closure of the parent relation by repeated squaring, so it
    takes ceil(log2 N) small matmuls instead of an N-step walk.
    """
    n = parents.shape[0]
    device = parents.device
    idx = torch.arange(n, device=device)  # (N,)
    # Column n is a dump slot for root-attached nodes, dropped below.
    step = torch.zeros(n, n + 1, device=device, dtype=torch.float32)  # (N, N+1)
    step[idx, torch.where(parents >= 0, parents, n)] = 1.0
    reach = step[:, :n] + torch.eye(n, device=device)  # (N, N) parent-or-self
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        reach = ((reach @ reach) > 0).float()  # paths of twice the length
    return reach > 0


def tree_depths(parents: torch.Tensor) -> torch.Tensor:
    """(N,) long depth of each node; root-attached nodes have depth 0, so position = start + depth."""
    return tree_ancestors(parents).sum(dim=1) - 1


def tree_cache_mask(
    start: int | torch.Tensor, parents: torch.Tensor, max_seq_len: int
) -> torch.Tensor:
    """Mask for N tree nodes written at slots start..start+N-1 (nodes in topological order).

    Node n sees every slot < start (the committed prefix), its ancestors and itself; siblings and
    other branches stay invisible. Returns (1, 1, N, max_seq_len) bool.
    """
    n = parents.shape[0]
    start = _as_tensor(start, parents.device)
    anc = tree_ancestors(parents)  # (N, N)
    slots = torch.arange(max_seq_len, device=parents.device)  # (S,)
    offset = slots - start  # (S,) node index stored at each slot, if any
    in_tree = (offset >= 0) & (offset < n)  # (S,)
    tree_part = anc[:, offset.clamp(0, n - 1)] & in_tree[None, :]  # (N, S)
    prefix_part = (slots < start)[None, :]  # (1, S)
    return (tree_part | prefix_part)[None, None]  # (1, 1, N, S)
