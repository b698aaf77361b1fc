"""DiffuSpec's causal-consistency path search (CPS): the token lattice of Eq. 7 and the beam search of Eq. 8.

Lattice: per position the smallest top set whose drafter mass reaches τ, at most M_max tokens; EOS is an
ordinary candidate. Path score S(π) = Σ_i [λ log q_i(π_i) + (1 − λ) log p_proxy(π_i | x ∘ π_<i)], searched left
to right with beam width B (`proxies.py` supplies p_proxy). See `strategy.py` for how the strategy uses them.

Everything here is device code at fixed shapes (it runs inside the engine's captured step): the lattice always
has the window's L positions, the search always keeps B beams, and the lattice end n is a 0-d tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Lattice:
    ids: torch.Tensor  # (L, M) long: candidate tokens per position, most probable first
    logq: torch.Tensor  # (L, M): log q_i of each candidate
    valid: torch.Tensor  # (L, M) bool: inside the position's τ set (rank 0 always)


def lattice_end(logits: torch.Tensor, stop_ids: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the drafter ends the text, as 0-d long tensors (no host sync): (n, L^gen).

    logits (L, V) of a window whose first k (0-d) rows are the draft; stop_ids (E,). With s the first position
    < k whose argmax is a stop id: n = s + 1 (the lattice keeps that EOS) and L^gen = s (Eq. 9's min(s − 1, k)
    with s 1-based); without one, n = L^gen = k.
    """
    j = torch.arange(logits.shape[0], device=logits.device)  # (L,)
    stop = torch.isin(logits.argmax(-1), stop_ids) & (j < k)  # (L,)
    first = stop.long().argmax()  # argmax returns the first maximal index
    hit = stop.any()
    return torch.where(hit, first + 1, k), torch.where(hit, first, k)


def build_lattice(logits: torch.Tensor, tau: float, m_max: int) -> Lattice:
    """Candidate sets of Eq. 7 from drafter logits (L, V): ranks whose better-ranked mass is < τ, capped at M_max.

    Tokens with q = 0 (ids the drafter may not propose) are never candidates, even when τ = 1.
    """
    logq = logits.float().log_softmax(-1)  # (L, V)
    top_logq, top_ids = logq.topk(min(m_max, logq.shape[-1]), dim=-1)  # (L, M) best first
    top_q = top_logq.exp()
    mass_before = F.pad(top_q.cumsum(-1)[:, :-1], (1, 0))  # (L, M) exclusive: the top token always stays
    return Lattice(top_ids, top_logq, (mass_before < tau) & (top_q > 0))


def beam_search(lattice: Lattice, proxy_fn, lam: float, beam: int, n: torch.Tensor | None = None):
    """The best path of `beam_paths`: tokens (L,), candidate indices (L,), score (0-d)."""
    idx, score = beam_paths(lattice, proxy_fn, lam, beam, n)
    best = idx[0]  # (L,)
    return lattice.ids.gather(1, best[:, None])[:, 0], best, score[0]


def beam_paths(lattice: Lattice, proxy_fn, lam: float, beam: int, n: torch.Tensor | None = None):
    """Left-to-right beam search for max_π Σ_{i<n} λ log q_i(π_i) + (1 − λ) log p_proxy(π_i | ·), at fixed shapes.

    proxy_fn(i, beam_idx (B, i), beam_tokens (B, i)) → (B, M) log-probs of lattice.ids[i] after each beam
    (unused when λ = 1; rows of dead beams may hold anything finite). B beams from position 0: the ones not
    reached yet are dead, at score −inf, and never beat a live one (scores are only added, never subtracted, so
    no −inf − −inf). n (0-d, optional; default L): positions ≥ n leave the beams untouched and take candidate 0,
    so they cannot change the path < n, which is the search over lattice[:n]. Exact when `beam` ≥ the number of
    paths. Ties (an n-gram gives unseen tokens equal scores) go to the lower (beam, candidate) index.
    Returns the B beams' candidate indices (B, L) and scores (B,), best first (a beam that never became live: −inf;
    its indices are then any candidates). Tokens: `lattice.ids.T.gather(0, idx)` (B, L).
    """
    L, M = lattice.ids.shape
    dev = lattice.ids.device
    # Masked before scaling: λ = 0 must not turn 0·(−inf) into NaN.
    q_term = torch.where(lattice.valid, lam * lattice.logq.masked_fill(~lattice.valid, 0.0), float("-inf"))  # (L, M)
    col = torch.arange(L, device=dev)  # (L,)
    rank = torch.arange(beam, device=dev)  # (B,)
    idx = torch.zeros(beam, L, dtype=torch.long, device=dev)  # (B, L) candidate index per position (0 not reached)
    score = torch.where(rank == 0, 0.0, float("-inf"))  # (B,) one live beam: the empty path
    for i in range(L):
        step = q_term[i][None].expand(beam, M)  # (B, M)
        if lam < 1:
            past = idx[:, :i]  # (B, i)
            step = step + (1 - lam) * proxy_fn(i, past, lattice.ids[col[None, :i], past])
        # A stable sort, not topk: ties go to the better beam, then the better-ranked candidate, on every device.
        values, order = (score[:, None] + step).flatten().sort(descending=True, stable=True)  # (B·M,)
        values, order = values[:beam], order[:beam]  # (B,) beam 0 is the best
        parent, child = order // M, order % M  # (B,) each
        new_idx = torch.where(col[None] == i, child[:, None], idx[parent])  # (B, L)
        if n is None:
            idx, score = new_idx, values
        else:  # past the lattice end: keep the beams (column i stays candidate 0)
            live = n > i  # 0-d bool
            idx, score = torch.where(live, new_idx, idx), torch.where(live, values, score)
    return idx, score
