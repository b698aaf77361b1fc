"""DiffuSpec's causal-consistency path search (CPS): the token lattice of Eq. 7 and the beam search of Eq. 8.

Lattice: per position the smallest top set whose drafter mass reaches τ, at most M_max tokens; EOS is an
ordinary candidate. Path score S(π) = Σ_i [λ log q_i(π_i) + (1 − λ) log p_proxy(π_i | x ∘ π_<i)], searched left
to right with beam width B (`proxies.py` supplies p_proxy). See `strategy.py` for how the strategy uses them.
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


def first_eos(logits: torch.Tensor, eos_id: int | torch.Tensor) -> int | None:
    """0-based index of the first position (logits (k, V)) whose top token is an EOS id (one id, or a tensor of the
    verifier's stop ids), or None. One host sync."""
    eos = torch.as_tensor(eos_id, device=logits.device).flatten()  # (E,)
    hit = torch.isin(logits.argmax(-1), eos)  # (k,)
    index = int(torch.where(hit.any(), hit.int().argmax(), -1))  # argmax returns the first maximal index
    return None if index < 0 else index


def build_lattice(logits: torch.Tensor, tau: float, m_max: int) -> Lattice:
    """Candidate sets of Eq. 7 from drafter logits (L, V): ranks whose better-ranked mass is < τ, capped at M_max.

    Tokens with q = 0 (ids the drafter may not propose) are never candidates, even when τ = 1.
    """
    logq = logits.float().log_softmax(-1)  # (L, V)
    top_logq, top_ids = logq.topk(min(m_max, logq.shape[-1]), dim=-1)  # (L, M) best first
    top_q = top_logq.exp()
    mass_before = F.pad(top_q.cumsum(-1)[:, :-1], (1, 0))  # (L, M) exclusive: the top token always stays
    return Lattice(top_ids, top_logq, (mass_before < tau) & (top_q > 0))


def beam_search(lattice: Lattice, proxy_fn, lam: float, beam: int):
    """Left-to-right beam search for max_π Σ_i λ log q_i(π_i) + (1 − λ) log p_proxy(π_i | ·).

    proxy_fn(i, beam_idx (W, i), beam_tokens (W, i)) → (W, M) log-probs of lattice.ids[i] after each beam
    (unused when λ = 1). Each position is one batched step over W beams × M candidates, with no host sync.
    Exact when `beam` ≥ the number of paths. Returns tokens (L,), candidate indices (L,), score (0-d).
    """
    L, M = lattice.ids.shape
    dev = lattice.ids.device
    # Masked before scaling: λ = 0 must not turn 0·(−inf) into NaN.
    q_term = torch.where(lattice.valid, lam * lattice.logq.masked_fill(~lattice.valid, 0.0), float("-inf"))  # (L, M)
    idx = torch.zeros(1, 0, dtype=torch.long, device=dev)  # (W, i) candidate index per position
    tokens = torch.zeros(1, 0, dtype=torch.long, device=dev)  # (W, i)
    score = torch.zeros(1, device=dev)  # (W,)
    for i in range(L):
        step = q_term[i][None]  # (1, M)
        if lam < 1:
            step = step + (1 - lam) * proxy_fn(i, idx, tokens)  # (W, M)
        total = (score[:, None] + step).flatten()  # (W·M,)
        top = total.topk(min(beam, total.numel()))  # sorted: beam 0 is the best
        parent, child = top.indices // M, top.indices % M  # (W',)
        idx = torch.cat([idx[parent], child[:, None]], 1)
        tokens = torch.cat([tokens[parent], lattice.ids[i][child][:, None]], 1)
        score = top.values
    return tokens[0], idx[0], score[0]
