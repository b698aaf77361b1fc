"""Acceptance rules for speculative decoding: pure, batch-first tensor functions.

Conventions (REFERENCE.md, "Acceptance and metrics conventions"): `p` = verifier probabilities,
`q` = drafter probabilities. Everything here is a pure function of its tensor inputs: no Python loops
over the batch, no `.item()`, no host syncs, so the decode engine can capture it in a CUDA graph.
Randomness comes only from the `generator` argument (a `rng.CounterRNG`, graph-safe, or a torch.Generator), which
makes runs reproducible on any device.

Probabilities are computed in at least fp32 (bf16/fp16 logits are upcast; fp64 stays fp64 so the tests can
check losslessness exactly).
"""

from __future__ import annotations

import torch

from specdiff2.decode.rng import uniform
from specdiff2.decode.sampling import sample_probs


def greedy_accept(
    draft_ids: torch.Tensor, verifier_logits: torch.Tensor, limit: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification: the longest draft prefix equal to the verifier argmax.

    draft_ids (B, γ) long, verifier_logits (B, γ+1, V). Returns n_accepted (B,) in [0, γ] and next_token (B,):
    the verifier argmax at position n_accepted (a correction on mismatch, the bonus token if all γ match).
    limit (B,) or 0-d, optional: drafts past it never count (a draft cut to `limit` tokens, at a fixed shape).
    """
    gamma = draft_ids.shape[1]
    verifier_ids = verifier_logits.argmax(dim=-1)  # (B, γ+1)
    matches = (draft_ids == verifier_ids[:, :gamma]).long()  # (B, γ)
    if limit is not None:
        matches = matches * (torch.arange(gamma, device=matches.device)[None] < limit.view(-1, 1))
    n_accepted = matches.cumprod(dim=1).sum(dim=1)  # (B,)
    next_token = verifier_ids.gather(1, n_accepted[:, None]).squeeze(1)  # (B,)
    return n_accepted, next_token


def accept_probs(draft_ids: torch.Tensor, q_probs: torch.Tensor, p_probs: torch.Tensor) -> torch.Tensor:
    """min(1, p(x) / q(x)) for each drafted token x; any leading shape.

    draft_ids (...,) long, q_probs and p_probs (..., V). A token the drafter gave q(x) = 0 is accepted when
    the verifier allows it (p(x) > 0) and rejected when it does not: 0/0 never becomes NaN.
    """
    index = draft_ids.unsqueeze(-1)  # (..., 1)
    p_x = p_probs.gather(-1, index).squeeze(-1)  # (...,)
    q_x = q_probs.gather(-1, index).squeeze(-1)  # (...,)
    return (p_x / q_x.clamp_min(torch.finfo(q_x.dtype).tiny)).clamp(max=1.0)


def residual_probs(p_probs: torch.Tensor, q_probs: torch.Tensor) -> torch.Tensor:
    """norm(max(p − q, 0)) over the last dim: the distribution to sample after a rejection.

    Where the residual is all zero (p == q: a rejection then happens only by rounding, never in exact
    arithmetic) fall back to p rather than divide by zero. With q ≡ 0 this is p itself, which the bonus
    position uses.
    """
    residual = (p_probs - q_probs).clamp_min(0.0)  # (..., V)
    mass = residual.sum(dim=-1, keepdim=True)  # (..., 1)
    return torch.where(mass > 0, residual / mass.clamp_min(torch.finfo(mass.dtype).tiny), p_probs)


def rejection_accept(
    draft_ids: torch.Tensor,
    q_probs: torch.Tensor,
    p_probs: torch.Tensor,
    generator=None,
    limit: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lossless speculative sampling (Leviathan et al. 2023, Chen et al. 2023), vectorised over B and γ.

    draft_ids (B, γ) long, drawn from q_probs (B, γ, V); p_probs (B, γ+1, V) are the verifier probabilities
    at the γ draft positions plus the bonus position. Draft token j is accepted while u_j < min(1, p_j/q_j);
    at the first rejection the next token comes from norm(max(p_j − q_j, 0)), and after γ acceptances it is
    a bonus token from p_{γ+1}. Returns n_accepted (B,) in [0, γ] and next_token (B,). The committed tokens,
    draft_ids[:, :n] then next_token, are distributed exactly as the verifier would sample them, for any q.
    limit (B,) or 0-d long, optional: only the first `limit` drafts count (the rest are never accepted and the
    token after them is the bonus from p): the same law as a draft cut to `limit` tokens, at a fixed shape.
    """
    batch, gamma = draft_ids.shape
    vocab = p_probs.shape[-1]
    accept = accept_probs(draft_ids, q_probs, p_probs[:, :gamma])  # (B, γ)
    limit = torch.full((batch,), gamma, device=accept.device) if limit is None else limit.expand(batch)  # (B,)
    accept = accept * (torch.arange(gamma, device=accept.device)[None] < limit[:, None])
    u = uniform(accept.shape, generator, accept.device, accept.dtype)  # (B, γ)
    # Uniforms past the first rejection are drawn but ignored: the cumprod stops the streak there.
    n_accepted = (u < accept).long().cumprod(dim=1).sum(dim=1)  # (B,)
    rows = n_accepted[:, None, None].expand(batch, 1, vocab)  # (B, 1, V)
    p_next = p_probs.gather(1, rows).squeeze(1)  # (B, V)
    q_next = q_probs.gather(1, rows.clamp(max=gamma - 1)).squeeze(1)  # (B, V)
    # q ≡ 0 at the bonus position turns the residual into p_{γ+1}: one sampling path, no branch.
    q_next = q_next * (n_accepted < limit)[:, None]
    next_token = sample_probs(residual_probs(p_next, q_next), generator)  # (B,)
    return n_accepted, next_token


# --- Multi-draft (sibling) acceptance at one tree node ------------------------------------------------------
#
# K drafts sampled i.i.d. from q and merged into a trie give each node a list of candidate next tokens, one
# per draft passing through it, i.i.d. from the drafter's q at that node. Recursive rejection sampling
# (SpecInfer, Miao et al. 2024; SpecTr) tries them in order against a shrinking residual p_work and is
# lossless for such i.i.d. candidates. DUPLICATES MUST STAY SEPARATE ROUNDS: a rejected duplicate is rejected
# again with certainty (p_work(x) is already 0), but its round still applies
# p_work <- norm(max(p_work − q, 0)).
# Skipping it leaves p_work one update short and biases the output (tests/test_acceptance.py shows it). Only
# the draw can be skipped for such a duplicate, never the update.


def _broadcast_node(candidate_ids, q_probs, p_probs):
    # Lets one q/p be shared by a batch of nodes; expand is a view, not a copy.
    shape = (*candidate_ids.shape[:-1], p_probs.shape[-1])
    return q_probs.expand(shape), p_probs.expand(shape)  # (..., V) each


def multi_draft_round(
    candidate_ids: torch.Tensor, q_probs: torch.Tensor, p_work: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sibling round: (probability the candidate is accepted, p_work to use if it is rejected)."""
    return accept_probs(candidate_ids, q_probs, p_work), residual_probs(p_work, q_probs)


def multi_draft_output_probs(
    candidate_ids: torch.Tensor,
    q_probs: torch.Tensor,
    p_probs: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact distribution (..., V) of the token `multi_draft_accept` emits for these fixed candidates.

    candidate_ids (..., C) long, q_probs and p_probs (..., V) or (V,). `valid` (..., C) bool marks real
    candidates (padding slots are not rounds). Averaging over i.i.d. candidates from q gives p exactly.
    """
    q_probs, p_work = _broadcast_node(candidate_ids, q_probs, p_probs)
    output = torch.zeros_like(p_work)  # (..., V)
    reach = torch.ones_like(p_work[..., 0])  # (...,) probability that every earlier round rejected
    for i in range(candidate_ids.shape[-1]):
        token = candidate_ids[..., i].clamp_min(0)  # (...,) padding ids may be negative
        accept, p_next = multi_draft_round(token, q_probs, p_work)
        if valid is not None:
            accept = accept * valid[..., i]
            p_next = torch.where(valid[..., i, None], p_next, p_work)
        output = output.scatter_add(-1, token[..., None], (reach * accept)[..., None])
        reach = reach * (1 - accept)
        p_work = p_next
    return output + reach[..., None] * p_work


def multi_draft_accept(
    candidate_ids: torch.Tensor,
    q_probs: torch.Tensor,
    p_probs: torch.Tensor,
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recursive rejection sampling over sibling candidates at one tree node (or a batch of nodes).

    candidate_ids (C,) or (..., C) long, i.i.d. draws from q_probs; q_probs and p_probs (V,) or (..., V);
    `valid` (..., C) bool marks real candidates when nodes are padded to a common C. Candidate i is accepted
    with min(1, p_work(x_i)/q(x_i)); each rejection sets p_work <- norm(max(p_work − q, 0)); if all fail,
    the token is sampled from p_work (it then differs from every candidate). Returns accepted_index (...,)
    long (−1 if none accepted) and token (...,) long; with (C,) input both are 0-d.
    """
    q_probs, p_work = _broadcast_node(candidate_ids, q_probs, p_probs)
    batch_shape = candidate_ids.shape[:-1]
    # One uniform per round drawn up front: the draw count never depends on data, so no host sync.
    u = uniform(candidate_ids.shape, generator, p_work.device, p_work.dtype)  # (..., C)
    accepted_index = torch.full(batch_shape, -1, dtype=torch.long, device=p_work.device)  # (...,)
    token = torch.zeros(batch_shape, dtype=torch.long, device=p_work.device)  # (...,)
    done = torch.zeros(batch_shape, dtype=torch.bool, device=p_work.device)  # (...,)
    for i in range(candidate_ids.shape[-1]):
        candidate = candidate_ids[..., i].clamp_min(0)  # (...,)
        accept, p_next = multi_draft_round(candidate, q_probs, p_work)
        live = ~done if valid is None else ~done & valid[..., i]
        hit = live & (u[..., i] < accept)
        accepted_index = torch.where(hit, i, accepted_index)
        token = torch.where(hit, candidate, token)
        done = done | hit
        # Rejected rounds, duplicates included, must update p_work (see the block comment above).
        p_work = torch.where((live & ~hit)[..., None], p_next, p_work)
    token = torch.where(done, token, sample_probs(p_work, generator))
    return accepted_index, token
