"""Tests for specdiff2.decode.acceptance: exact (enumerated) losslessness plus seeded Monte Carlo checks."""

import itertools
import math
from functools import lru_cache

import pytest
import torch

from specdiff2.decode.acceptance.core import (
    accept_probs,
    greedy_accept,
    multi_draft_accept,
    multi_draft_output_probs,
    rejection_accept,
    residual_probs,
)
from specdiff2.decode.sampling import warp_probs
from specdiff2.errors import ConfigError
from tests.stats import chi2_fits, chi2_stat

F64 = torch.float64


def assert_chi_square_fits(tokens: torch.Tensor, probs: torch.Tensor) -> None:
    """Token draws ~ probs: χ² over every cell of positive probability (tests/stats.py), none drawn outside."""
    counts = torch.bincount(tokens.flatten(), minlength=probs.numel()).to(F64)
    stat, dof = chi2_stat(counts, probs, min_expected=0)
    assert chi2_fits(counts, probs, min_expected=0), f"chi-square {stat:.2f} (dof {dof}): {counts} vs {probs}"


# --- warp_probs ---------------------------------------------------------------------------------------------

PROBS_4 = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=F64)  # ranks: 1, 3, 2, 0


def test_warp_temperature_zero_is_one_hot_lowest_index_on_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [0.0, -1.0, 2.0, 2.0]], dtype=torch.bfloat16)
    probs = warp_probs(logits, temperature=0.0, top_k=2, top_p=0.5)
    assert probs.dtype == torch.float32
    assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))


def test_warp_temperature_only_is_softmax():
    logits = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    expected = torch.softmax(logits / 0.7, dim=-1)
    torch.testing.assert_close(warp_probs(logits, 0.7), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("top_k", "top_p", "kept"),
    [
        (2, 1.0, [1, 3]),
        (3, 1.0, [1, 3, 2]),
        (9, 1.0, [0, 1, 2, 3]),  # top_k >= V is a no-op
        (0, 0.3, [1]),  # the top token alone already reaches 0.3
        (0, 0.6, [1, 3]),
        (0, 0.75, [1, 3, 2]),
        (0, 1e-6, [1]),  # the top token is always kept
        (3, 0.5, [1, 3]),
        # top-p runs on the renormalised top-k mass: 0.4 / 0.7 >= 0.55 stops after one token
        # (on the unfiltered mass 0.4 < 0.55 would keep two).
        (2, 0.55, [1]),
    ],
)
def test_warp_top_k_top_p_keep_the_right_set(top_k, top_p, kept):
    probs = warp_probs(PROBS_4.log(), temperature=1.0, top_k=top_k, top_p=top_p)
    expected = torch.zeros_like(PROBS_4)
    expected[kept] = PROBS_4[kept] / PROBS_4[kept].sum()
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-12)


def test_warp_sums_to_one_and_keeps_shape():
    logits = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(1))
    settings = [(1.0, 0, 1.0), (0.5, 10, 1.0), (1.3, 0, 0.8), (0.7, 5, 0.9), (0.0, 0, 1.0)]
    for temperature, top_k, top_p in settings:
        probs = warp_probs(logits, temperature, top_k, top_p)
        assert probs.shape == logits.shape and probs.dtype == torch.float32
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3), rtol=0, atol=1e-5)
        assert (probs >= 0).all()


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(-1.0, 0, 1.0), (1.0, -1, 1.0), (1.0, 0, 0.0)])
def test_warp_rejects_bad_settings(temperature, top_k, top_p):
    with pytest.raises(ConfigError):
        warp_probs(torch.zeros(4), temperature, top_k, top_p)


# --- greedy_accept ------------------------------------------------------------------------------------------


def test_greedy_accept_hand_cases():
    draft_ids = torch.tensor([[1, 2, 3], [1, 2, 3], [2, 2, 3]])
    verifier_ids = torch.tensor([[1, 2, 3, 0], [1, 0, 3, 2], [1, 2, 3, 3]])  # mismatch: none / at 1 / at 0
    verifier_logits = torch.nn.functional.one_hot(verifier_ids, 4).float() * 5  # (B, γ+1, V)
    n_accepted, next_token = greedy_accept(draft_ids, verifier_logits)
    assert n_accepted.tolist() == [3, 1, 0]
    assert next_token.tolist() == [0, 0, 1]  # bonus, correction, correction


# --- exact losslessness of rejection sampling (no sampling) -------------------------------------------------

GAMMA = 2


def toy_row(prefix: tuple, salt: int, kind: str, vocab: int) -> torch.Tensor:
    """A deterministic distribution (vocab,) for a context, so verifier and drafter are fixed functions."""
    code = sum((t + 1) * (vocab + 1) ** i for i, t in enumerate(prefix))
    gen = torch.Generator().manual_seed(7919 * salt + code)
    logits = 1.5 * torch.randn(vocab, generator=gen, dtype=F64)
    if kind == "warped":
        return warp_probs(logits, temperature=0.7, top_k=3, top_p=0.9)
    if kind == "greedy":
        return warp_probs(logits, temperature=0.0)
    probs = torch.softmax(logits, dim=-1)
    if kind == "zeros":  # knock out a random subset, never the whole row
        drop = torch.rand(vocab, generator=gen) < 0.4
        drop[logits.argmax()] = False
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum()
    return probs


class ToyPair:
    """Verifier p(· | prefix) and a diffusion-like drafter with independent marginals q_1..q_γ per prefix."""

    def __init__(self, vocab: int, p_kind: str, q_kind: str):
        self.vocab, self.p_kind, self.q_kind = vocab, p_kind, q_kind

    def p(self, prefix: tuple) -> torch.Tensor:
        return toy_row(prefix, 0, self.p_kind, self.vocab)

    def q(self, prefix: tuple) -> list[torch.Tensor]:
        return [toy_row(prefix, 1 + j, self.q_kind, self.vocab) for j in range(GAMMA)]


def exact_committed(pair: ToyPair, length: int) -> torch.Tensor:
    """Exact distribution of the first `length` committed tokens of decode steps from the empty prefix."""
    vocab = pair.vocab

    @lru_cache(maxsize=None)
    def committed(prefix: tuple, length: int) -> torch.Tensor:
        out = torch.zeros((vocab,) * length, dtype=F64)

        def commit(tokens: tuple, mass: float, last: torch.Tensor) -> None:
            # The step commits `tokens` then one token y ~ last; later tokens come from the next step.
            if len(tokens) >= length:
                out[tokens[:length]] += mass
            elif len(tokens) + 1 == length:
                out[tokens] += mass * last
            else:
                for y in range(vocab):
                    rest = committed(prefix + tokens + (y,), length - len(tokens) - 1)
                    out[tokens + (y,)] += mass * last[y] * rest

        q = pair.q(prefix)
        for draft in itertools.product(range(vocab), repeat=GAMMA):
            reach = math.prod(q[j][x].item() for j, x in enumerate(draft))
            if reach == 0:
                continue
            for j in range(GAMMA):
                p_j = pair.p(prefix + draft[:j])
                accept = accept_probs(torch.tensor(draft[j]), q[j], p_j).item()
                commit(draft[:j], reach * (1 - accept), residual_probs(p_j, q[j]))
                reach *= accept
            commit(draft, reach, pair.p(prefix + draft))  # all γ accepted: bonus token from p_{γ+1}
        return out

    return committed((), length)


def exact_verifier(pair: ToyPair, length: int, prefix: tuple = ()) -> torch.Tensor:
    p = pair.p(prefix)
    if length == 1:
        return p
    return torch.stack([p[y] * exact_verifier(pair, length - 1, prefix + (y,)) for y in range(pair.vocab)])


@pytest.mark.parametrize(
    ("vocab", "p_kind", "q_kind"),
    [(5, "plain", "plain"), (4, "zeros", "plain"), (4, "plain", "zeros"), (4, "zeros", "zeros"),
     (6, "warped", "warped"), (4, "greedy", "greedy"), (4, "greedy", "plain")],
)
def test_rejection_sampling_is_exactly_lossless(vocab, p_kind, q_kind):
    pair = ToyPair(vocab, p_kind, q_kind)
    # Two committed tokens need only draft positions; three include the bonus token and a second step.
    for length in (2, 3):
        got = exact_committed(pair, length)
        torch.testing.assert_close(got, exact_verifier(pair, length), rtol=0, atol=1e-12)


# --- rejection_accept: sampling and invariants --------------------------------------------------------------


def toy_batch(batch: int, vocab: int, gamma: int, seed: int, dtype=torch.float32):
    """Drafts from independent drafter marginals and the matching verifier rows p(· | prefix ‖ draft_<j)."""
    gen = torch.Generator().manual_seed(seed)
    q_rows = torch.softmax(torch.randn(gamma, vocab, generator=gen, dtype=F64), dim=-1)  # (γ, V)
    # p_tables[j][x_1, ..., x_j] = p(· | x_<j+1), shape (V,) * (j + 1)
    shapes = [(vocab,) * (j + 1) for j in range(gamma + 1)]
    p_tables = [torch.softmax(1.5 * torch.randn(s, generator=gen, dtype=F64), -1) for s in shapes]
    drafts = [torch.multinomial(q_rows[j], batch, True, generator=gen) for j in range(gamma)]
    draft_ids = torch.stack(drafts, dim=1)  # (B, γ)
    p_rows = [p_tables[j][tuple(draft_ids[:, :j].T)] for j in range(1, gamma + 1)]
    p_rows = [p_tables[0].expand(batch, vocab), *p_rows]
    p_probs = torch.stack(p_rows, dim=1)  # (B, γ+1, V)
    q_probs = q_rows.expand(batch, gamma, vocab)  # (B, γ, V)
    return draft_ids, q_probs.to(dtype), p_probs.to(dtype), p_tables[0].to(dtype), gen


def test_rejection_accept_first_token_matches_verifier():
    draft_ids, q_probs, p_probs, p_first, gen = toy_batch(20_000, vocab=5, gamma=2, seed=0)
    n_accepted, next_token = rejection_accept(draft_ids, q_probs, p_probs, gen)
    first = torch.where(n_accepted >= 1, draft_ids[:, 0], next_token)
    assert_chi_square_fits(first, p_first)


def test_rejection_accept_outcome_matches_exact_step_distribution():
    gen = torch.Generator().manual_seed(8)
    q = torch.softmax(torch.randn(2, 5, generator=gen, dtype=F64), -1)  # (γ, V)
    p = torch.softmax(torch.randn(3, 5, generator=gen, dtype=F64), -1)  # (γ+1, V)
    draft = (q - p[:2]).argmax(-1)  # q > p there, so each position can be rejected
    accept = accept_probs(draft, q, p[:2])  # (γ,)
    reach = torch.cat([torch.ones(1, dtype=F64), accept.cumprod(0)])  # (γ+1,) P(first n accepted)
    stop = torch.cat([1 - accept, torch.ones(1, dtype=F64)])  # (γ+1,)
    next_probs = torch.cat([residual_probs(p[:2], q), p[2:]])  # (γ+1, V)
    exact = (reach * stop)[:, None] * next_probs  # (γ+1, V) over (n_accepted, next_token)
    n_accepted, next_token = rejection_accept(draft.expand(20_000, 2), q.expand(20_000, 2, 5),
                                              p.expand(20_000, 3, 5), gen)
    assert_chi_square_fits(n_accepted * 5 + next_token, exact.flatten())


def test_rejection_accept_invariants():
    draft_ids, q_probs, p_probs, _, gen = toy_batch(2000, vocab=6, gamma=4, seed=1)
    n_accepted, next_token = rejection_accept(draft_ids, q_probs, p_probs, gen)
    assert n_accepted.dtype == torch.long and n_accepted.shape == (2000,)
    assert ((n_accepted >= 0) & (n_accepted <= 4)).all()
    assert 0 < (n_accepted == 0).sum() and 0 < (n_accepted == 4).sum()
    # A rejected draft token has p < q, so the residual gives it zero mass: the correction always differs.
    rejected = n_accepted < 4
    rejected_ids = draft_ids.gather(1, n_accepted.clamp(max=3)[:, None]).squeeze(1)
    assert (next_token[rejected] != rejected_ids[rejected]).all()


def test_rejection_accept_accepts_everything_when_drafter_equals_verifier():
    draft_ids, _, p_probs, _, gen = toy_batch(500, vocab=5, gamma=3, seed=2)
    n_accepted, _ = rejection_accept(draft_ids, p_probs[:, :3], p_probs, gen)  # smooth q == p
    assert (n_accepted == 3).all()
    ids = torch.randint(0, 5, (500, 4), generator=gen)
    one_hot = torch.nn.functional.one_hot(ids, 5).float()  # (B, γ+1, V)
    n_accepted, next_token = rejection_accept(one_hot[:, :3].argmax(-1), one_hot[:, :3], one_hot, gen)
    assert (n_accepted == 3).all() and torch.equal(next_token, one_hot[:, 3].argmax(-1))


def test_rejection_accept_at_temperature_zero_equals_greedy():
    gen = torch.Generator().manual_seed(3)
    verifier_logits = torch.randn(300, 4, 3, generator=gen)  # (B, γ+1, V): small V so many drafts match
    drafter_logits = verifier_logits[:, :3] + torch.randn(300, 3, 3, generator=gen)  # (B, γ, V)
    q_probs, p_probs = warp_probs(drafter_logits, 0.0), warp_probs(verifier_logits, 0.0)
    draft_ids = q_probs.argmax(-1)
    sampled = rejection_accept(draft_ids, q_probs, p_probs, gen)
    greedy = greedy_accept(draft_ids, verifier_logits)
    assert torch.equal(sampled[0], greedy[0]) and torch.equal(sampled[1], greedy[1])
    assert len(set(greedy[0].tolist())) == 4  # every n in [0, γ] occurs


# --- multi-draft (siblings) ---------------------------------------------------------------------------------


def all_candidate_tuples(q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    tuples = torch.tensor(list(itertools.product(range(q.numel()), repeat=k)))  # (V^K, K)
    return tuples, q[tuples].prod(dim=-1)  # weights of i.i.d. draws from q


def first_occurrence(tuples: torch.Tensor) -> torch.Tensor:
    earlier_same = (tuples[:, :, None] == tuples[:, None, :]).tril(diagonal=-1)  # (N, K, K)
    return ~earlier_same.any(dim=-1)


def expected_multi_draft_output(q, p, k, skip_duplicates=False):
    tuples, weights = all_candidate_tuples(q, k)
    valid = first_occurrence(tuples) if skip_duplicates else None
    return (weights[:, None] * multi_draft_output_probs(tuples, q, p, valid)).sum(dim=0)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize(("vocab", "p_kind", "q_kind"), [(5, "plain", "plain"), (5, "zeros", "zeros"),
                                                         (4, "plain", "zeros"), (5, "warped", "warped")])
def test_multi_draft_is_exactly_lossless(k, vocab, p_kind, q_kind):
    p, q = toy_row((), 0, p_kind, vocab), toy_row((), 1, q_kind, vocab)
    torch.testing.assert_close(expected_multi_draft_output(q, p, k), p, rtol=0, atol=1e-12)


def test_skipping_duplicate_candidates_is_not_lossless():
    p = torch.tensor([0.1, 0.45, 0.45], dtype=F64)
    q = torch.tensor([0.6, 0.3, 0.1], dtype=F64)
    for k in (2, 3):
        deviation = (expected_multi_draft_output(q, p, k, skip_duplicates=True) - p).abs().max()
        assert deviation > 1e-3
        torch.testing.assert_close(expected_multi_draft_output(q, p, k), p, rtol=0, atol=1e-12)


def test_multi_draft_output_probs_matches_the_sampler_for_fixed_candidates():
    p = torch.tensor([0.1, 0.3, 0.15, 0.3, 0.15], dtype=F64)
    q = torch.tensor([0.4, 0.2, 0.05, 0.05, 0.3], dtype=F64)
    candidates = torch.tensor([0, 0, 4]).expand(20_000, 3)  # (B, C) with a duplicate
    index, token = multi_draft_accept(candidates, q, p, torch.Generator().manual_seed(4))
    assert_chi_square_fits(token, multi_draft_output_probs(candidates[0], q, p))
    accepted = index >= 0
    assert torch.equal(token[accepted], candidates[accepted].gather(1, index[accepted, None]).squeeze(1))
    assert not torch.isin(token[~accepted], candidates[0]).any()  # after rejecting x, p_work(x) stays 0


def test_multi_draft_accept_batched_matches_verifier():
    gen = torch.Generator().manual_seed(5)
    p, q = toy_row((), 0, "plain", 5), toy_row((), 1, "plain", 5)
    candidates = torch.multinomial(q, 3 * 20_000, replacement=True, generator=gen).view(20_000, 3)  # (B, K)
    _, token = multi_draft_accept(candidates, q.float(), p.float(), gen)
    assert_chi_square_fits(token, p)


def test_multi_draft_accept_single_node_matches_verifier():
    gen = torch.Generator().manual_seed(6)
    p, q = toy_row((), 0, "zeros", 5), toy_row((), 1, "plain", 5)
    tokens = []
    for _ in range(3000):
        candidates = torch.multinomial(q, 3, replacement=True, generator=gen)  # (C,)
        index, token = multi_draft_accept(candidates, q, p, gen)
        assert index.shape == () and token.shape == ()
        tokens.append(token)
    assert_chi_square_fits(torch.stack(tokens), p)


def test_multi_draft_padding_slots_are_not_rounds():
    p, q = toy_row((), 0, "plain", 4), toy_row((), 1, "plain", 4)
    candidates = torch.tensor([[2, -1, -1], [2, 1, -1]])
    valid = candidates >= 0
    padded = multi_draft_output_probs(candidates, q, p, valid)
    torch.testing.assert_close(padded[0], multi_draft_output_probs(candidates[0, :1], q, p), rtol=0, atol=0)
    torch.testing.assert_close(padded[1], multi_draft_output_probs(candidates[1, :2], q, p), rtol=0, atol=0)
    index, _ = multi_draft_accept(candidates, q, p, torch.Generator().manual_seed(7), valid)
    assert (index < valid.sum(-1)).all()
