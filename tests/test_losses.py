"""Losses: exact against brute-force enumeration, exact gradients, stable at extreme logits, mask-safe."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from specdiff2.errors import ConfigError
from specdiff2.losses import (
    LOSSES,
    MDLM_PASS,
    VERIFIER_DIST,
    LossMix,
    ce_loss,
    expected_streak,
    forward_kl_loss,
    mdlm_loss,
    mix_losses,
    reverse_kl_loss,
    sample_mask,
    streak_loss,
    streak_soft_loss,
    tvd_loss,
)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand_probs(shape, g, zeros: bool = False) -> torch.Tensor:
    probs = torch.rand(shape, generator=g, dtype=F64) ** 3
    if zeros:  # a few exact zeros in the verifier, as top-p sampling distributions have
        probs[..., 0] = 0.0
    return probs / probs.sum(-1, keepdim=True)


def _brute_force_streak(accept: list[float]) -> float:
    """E[length of the leading run of accepts] over all 2^γ independent Bernoulli(a_j) accept patterns."""
    total = 0.0
    for pattern in itertools.product([0, 1], repeat=len(accept)):
        prob = 1.0
        for a, ok in zip(accept, pattern):
            prob *= a if ok else 1.0 - a
        run = next((i for i, ok in enumerate(pattern) if not ok), len(pattern))
        total += prob * run
    return total


def _brute_force_acceptance(p: torch.Tensor, q: torch.Tensor) -> float:
    """P(accept) of rejection sampling: draw v ~ q, accept with min(1, p(v)/q(v)); enumerate every v."""
    return sum(float(q[v]) * min(1.0, float(p[v] / q[v])) for v in range(len(q)))


@pytest.mark.parametrize("window", [1, 2, 3, 4])
def test_streak_matches_brute_force(window):
    g = _gen(window)
    logits = torch.randn(3, window, 5, generator=g, dtype=F64)  # (B, γ, V)
    targets = torch.randint(0, 5, (3, window), generator=g)
    out = streak_loss(logits, targets)
    q = logits.softmax(-1)
    expected = [_brute_force_streak([float(q[b, j, targets[b, j]]) for j in range(window)]) for b in range(3)]
    torch.testing.assert_close(out.per_row, torch.tensor(expected, dtype=F64), rtol=0, atol=1e-10)
    assert abs(float(out.loss) + sum(expected) / 3) < 1e-10
    assert abs(float(streak_loss(logits, targets, normalize=True).loss) + sum(expected) / 3 / window) < 1e-10


@pytest.mark.parametrize("window", [1, 2, 3, 4])
def test_streak_soft_matches_brute_force(window):
    g = _gen(10 + window)
    logits = torch.randn(2, window, 4, generator=g, dtype=F64) * 2
    p = _rand_probs((2, window, 4), g, zeros=True)
    out = streak_soft_loss(logits, p)
    q = logits.softmax(-1)
    accepts = [[_brute_force_acceptance(p[b, j], q[b, j]) for j in range(window)] for b in range(2)]
    expected = torch.tensor([_brute_force_streak(a) for a in accepts], dtype=F64)
    torch.testing.assert_close(out.per_row, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.per_position, torch.tensor(accepts, dtype=F64).mean(0), rtol=0, atol=1e-10)
    assert abs(float(out.loss) + float(expected.mean())) < 1e-10


def _direct_streak(logits, targets, lengths):
    """Reference in probability space (float64, no floor): Σ_{m≤L} cumprod(q_j(x_j))."""
    q_targets = logits.softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.stack([q_targets[b, :n].cumprod(0).sum() for b, n in enumerate(lengths)])


def test_streak_gradient_matches_direct_probability_implementation():
    g = _gen(0)
    logits = torch.randn(4, 6, 7, generator=g, dtype=F64, requires_grad=True)
    targets = torch.randint(0, 7, (4, 6), generator=g)
    lengths = [6, 3, 1, 5]
    mask = torch.arange(6) < torch.tensor(lengths).unsqueeze(-1)
    (grad,) = torch.autograd.grad(streak_loss(logits, targets, mask).loss, logits)
    (ref_grad,) = torch.autograd.grad(-_direct_streak(logits, targets, lengths).mean(), logits)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_expected_streak_gradient_is_suffix_sum_of_prefix_products():
    g = _gen(1)
    log_accept = (-torch.rand(3, 5, generator=g, dtype=F64) * 2).requires_grad_()
    (grad,) = torch.autograd.grad(expected_streak(log_accept).sum(), log_accept)
    prefix = log_accept.detach().exp().cumprod(-1)  # Π_{i≤m} a_i
    analytic = prefix.flip(-1).cumsum(-1).flip(-1)  # Σ_{m≥j} Π_{i≤m} a_i
    torch.testing.assert_close(grad, analytic, rtol=1e-12, atol=1e-14)


def test_extreme_logits_give_finite_losses_and_gradients():
    g = _gen(2)
    logits = (torch.randn(3, 8, 11, generator=g).sign() * 80).requires_grad_()  # fp32, |logit| = 80
    targets = logits.detach().argmin(-1)  # log q ≈ −160 per position: the product underflows far below fp32
    p = _rand_probs((3, 8, 11), g, zeros=True).float()
    ids = torch.randperm(11, generator=g)[:4].expand(3, 8, 4).contiguous()
    topk = {"verifier_topk_ids": ids, "verifier_topk_logprobs": p.log().gather(-1, ids)}
    for out in (streak_loss(logits, targets), streak_soft_loss(logits, p), streak_soft_loss(logits, **topk),
                ce_loss(logits, targets), forward_kl_loss(logits, p), forward_kl_loss(logits, **topk),
                tvd_loss(logits, p), tvd_loss(logits, **topk)):
        (grad,) = torch.autograd.grad(out.loss, logits)
        assert torch.isfinite(out.loss) and torch.isfinite(grad).all()


def test_zero_overlap_stops_the_soft_streak_with_finite_gradients():
    logits = torch.zeros(1, 3, 4, dtype=F64, requires_grad=True)
    ids = torch.tensor([[[0, 1], [0, 1], [2, 3]]])
    logprobs = torch.tensor([[[-0.1, -2.4], [float("-inf"), float("-inf")], [-0.5, -0.9]]], dtype=F64)
    out = streak_soft_loss(logits, verifier_topk_ids=ids, verifier_topk_logprobs=logprobs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    a1 = sum(min(0.25, float(torch.tensor(lp, dtype=F64).exp())) for lp in (-0.1, -2.4))  # q uniform over 4
    assert abs(float(out.per_row[0]) - a1) < 1e-12  # streak = a_1, position 2 accepts with probability 0
    assert torch.isfinite(grad).all()


def test_fully_masked_row_contributes_nothing():
    g = _gen(3)
    logits = torch.randn(3, 5, 6, generator=g, dtype=F64, requires_grad=True)
    targets = torch.randint(0, 6, (3, 5), generator=g)
    p = _rand_probs((3, 5, 6), g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    keep = [0, 2]
    for fn, args in ((streak_loss, (targets,)), (streak_soft_loss, (p,)), (ce_loss, (targets,)),
                     (forward_kl_loss, (p,)), (tvd_loss, (p,))):
        out = fn(logits, *args, mask=mask)
        ref = fn(logits[keep], *(a[keep] for a in args))
        (grad,) = torch.autograd.grad(out.loss, logits)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-12, atol=1e-14)
        assert out.per_row[1] == 0 and torch.isfinite(grad).all() and (grad[1] == 0).all()
    empty = streak_loss(logits, targets, torch.zeros(3, 5, dtype=torch.bool))
    assert empty.loss == 0 and torch.isfinite(torch.autograd.grad(empty.loss, logits)[0]).all()


def test_padding_beyond_valid_length_is_ignored():
    g = _gen(4)
    logits = torch.randn(2, 6, 5, generator=g, dtype=F64)
    targets = torch.randint(0, 5, (2, 6), generator=g)
    p = _rand_probs((2, 6, 5), g)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    garbage_logits, garbage_targets, garbage_p = logits.clone(), targets.clone(), p.clone()
    garbage_logits[1, 3:] = 1e4 * torch.randn(3, 5, generator=g, dtype=F64)
    garbage_targets[1, 3:] = -100  # an ignore-index that must never be gathered
    garbage_p[1, 3:] = float("nan")
    for fn, clean, dirty in ((streak_loss, targets, garbage_targets), (streak_soft_loss, p, garbage_p),
                             (ce_loss, targets, garbage_targets), (forward_kl_loss, p, garbage_p),
                             (tvd_loss, p, garbage_p)):
        out = fn(garbage_logits, dirty, mask)
        torch.testing.assert_close(out.per_row[1], fn(logits[1:, :3], clean[1:, :3]).per_row[0])
        torch.testing.assert_close(out.loss, fn(logits, clean, mask).loss)
        assert torch.isfinite(out.loss)
    # A non-prefix mask is read as its prefix: nothing after the first invalid position counts for the streak.
    holes = torch.tensor([[True, True, False, True, True, True]] * 2)
    torch.testing.assert_close(streak_loss(logits, targets, holes).per_row,
                               streak_loss(logits[:, :2], targets[:, :2]).per_row)


def test_ce_kl_tvd_match_explicit_computations():
    g = _gen(5)
    logits = torch.randn(3, 4, 6, generator=g, dtype=F64)
    targets = torch.randint(0, 6, (3, 4), generator=g)
    p = _rand_probs((3, 4, 6), g, zeros=True)
    mask = torch.rand(3, 4, generator=g) < 0.7  # per-position losses use the mask as given (holes allowed)
    log_q = logits.log_softmax(-1)
    ce = F.cross_entropy(logits[mask], targets[mask])
    kl = (torch.xlogy(p, p) - p * log_q).sum(-1)[mask].mean()
    tvd = 0.5 * (p - log_q.exp()).abs().sum(-1)[mask].mean()
    torch.testing.assert_close(ce_loss(logits, targets, mask).loss, ce, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(forward_kl_loss(logits, p, mask).loss, kl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tvd_loss(logits, p, mask).loss, tvd, rtol=1e-12, atol=1e-12)
    ce_at_2 = ce_loss(logits / 2, targets, mask)
    torch.testing.assert_close(ce_loss(logits, targets, mask, temperature=2.0).loss, ce_at_2.loss)
    accuracy = float((logits.argmax(-1) == targets)[mask].double().mean())
    assert float(ce_at_2.metrics["accuracy"]) == pytest.approx(accuracy, rel=1e-6)


def test_kl_and_tvd_vanish_when_drafter_equals_verifier():
    p = _rand_probs((2, 3, 7), _gen(6))
    for fn in (forward_kl_loss, tvd_loss):
        assert abs(float(fn(p.log(), p).loss)) < 1e-12
    log_p = p.log()
    assert abs(float(streak_soft_loss(log_p, p).per_row[0]) - 3.0) < 1e-12  # a_j = 1 everywhere


def test_sparse_topk_with_full_support_equals_dense_and_bounds_otherwise():
    g = _gen(7)
    logits = torch.randn(2, 4, 6, generator=g, dtype=F64)
    p = _rand_probs((2, 4, 6), g, zeros=True)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    order = p.argsort(-1, descending=True)  # top-k = the k most likely verifier tokens
    for fn in (streak_soft_loss, forward_kl_loss, tvd_loss):
        dense = fn(logits, p, mask)
        for k in (6, 3):
            ids = order[..., :k]
            sparse = fn(logits, mask=mask, verifier_topk_ids=ids, verifier_topk_logprobs=p.log().gather(-1, ids))
            if k == 6:
                torch.testing.assert_close(sparse.per_row, dense.per_row, rtol=1e-10, atol=1e-10)
            elif fn is tvd_loss:  # support-restricted acceptance: TVD is over-estimated
                assert (sparse.per_row >= dense.per_row - 1e-12).all()
            else:  # soft streak: lower bound on acceptance; KL: coarsened, so a lower bound (data processing)
                assert (sparse.per_row <= dense.per_row + 1e-12).all() and (sparse.per_row >= -1e-12).all()


def test_reverse_kl_matches_explicit_sums_and_its_sparse_form_bounds_it():
    """The errand of issue 23 (a new loss in ≤ 3 files): KL(q ‖ p), dense exact, sparse top-k a lower bound."""
    g = _gen(14)
    logits = torch.randn(3, 4, 6, generator=g, dtype=F64)
    p = _rand_probs((3, 4, 6), g)
    mask = torch.rand(3, 4, generator=g) < 0.7
    log_q = logits.log_softmax(-1)
    explicit = [sum(float(log_q[b, j, v].exp() * (log_q[b, j, v] - p[b, j, v].log())) for v in range(6))
                for b in range(3) for j in range(4) if mask[b, j]]
    out = reverse_kl_loss(logits, p, mask)
    assert float(out.loss) == pytest.approx(sum(explicit) / len(explicit), abs=1e-12)
    assert set(out.metrics) == {"rkl"}
    assert abs(float(reverse_kl_loss(p.log(), p).loss)) < 1e-12  # q = p
    p0 = _rand_probs((3, 4, 6), g, zeros=True)  # exact zeros: floored at ε, a large finite penalty
    order = p0.argsort(-1, descending=True)
    dense = reverse_kl_loss(logits, p0, mask)
    for k in (6, 3, 1):
        ids = order[..., :k]
        sparse = reverse_kl_loss(logits, mask=mask, verifier_topk_ids=ids,
                                 verifier_topk_logprobs=p0.log().gather(-1, ids))
        if k == 6:  # the zero entry falls into the rest bucket, floored like the dense form: equal
            torch.testing.assert_close(sparse.per_row, dense.per_row, rtol=1e-10, atol=1e-10)
        else:  # coarsened to S + rest: a lower bound (data processing), never negative
            assert (sparse.per_row <= dense.per_row + 1e-12).all() and (sparse.per_row >= -1e-12).all()
    batch = {"drafter_logits": logits, "mask": mask, "verifier_topk_ids": order[..., :3],
             "verifier_topk_logprobs": p0.log().gather(-1, order[..., :3])}
    mixed = LossMix({"rkl": 1.0})(batch)
    torch.testing.assert_close(mixed.loss, reverse_kl_loss(logits, mask=mask, verifier_topk_ids=order[..., :3],
                                                           verifier_topk_logprobs=batch["verifier_topk_logprobs"]).loss)
    extreme = (torch.randn(2, 3, 6, generator=g, dtype=F64) * 200).requires_grad_()
    reverse_kl_loss(extreme, p0[:2, :3]).loss.backward()
    assert torch.isfinite(extreme.grad).all()


def test_mdlm_loss_matches_explicit_loop():
    g = _gen(8)
    logits = torch.randn(3, 7, 5, generator=g, dtype=F64)
    targets = torch.randint(0, 5, (3, 7), generator=g)
    t = torch.tensor([0.2, 0.7, 1.0], dtype=F64)
    masked = sample_mask(targets, t, _gen(9))
    loss_mask = torch.ones(3, 7, dtype=torch.bool)
    loss_mask[0, 5:] = False
    loss_mask[2, 4:] = False
    total = 0.0
    for b in range(3):
        for i in range(7):
            if masked[b, i] and loss_mask[b, i]:
                total += -float(logits[b, i].log_softmax(-1)[targets[b, i]]) / float(t[b])
    out = mdlm_loss(logits, targets, masked, t, loss_mask)
    assert abs(float(out.loss) - total / int(loss_mask.sum())) < 1e-12
    no_pad = mdlm_loss(logits, targets, masked, t)
    explicit = sum(-float(logits[b, i].log_softmax(-1)[targets[b, i]]) / float(t[b])
                   for b in range(3) for i in range(7) if masked[b, i])
    assert abs(float(no_pad.loss) - explicit / 21) < 1e-12


def test_sample_mask_respects_protect_and_ratio():
    targets = torch.zeros(4, 20000, dtype=torch.long)
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    protect = torch.zeros(4, 20000, dtype=torch.bool)
    protect[:, :5000] = True
    masked = sample_mask(targets, t, _gen(10), protect)
    assert not masked[protect].any()
    ratio = masked[:, 5000:].double().mean(-1)
    torch.testing.assert_close(ratio, t.double(), rtol=0, atol=0.015)
    assert torch.equal(masked, sample_mask(targets, t, _gen(10), protect))  # reproducible from the generator


def test_mdlm_noise_draws_t_uniform_on_t_min_to_1_without_an_atom():
    """Issue 22 item 14: the docstring's t ~ U(T_MIN, 1); a clamp of U(0, 1) put mass T_MIN at t = T_MIN."""
    from specdiff2.losses.diffusion import T_MIN, mdlm_noise

    clean = torch.zeros(200_000, 1, dtype=torch.long)
    _, _, t = mdlm_noise(clean, mask_token_id=1, generator=_gen(0))
    assert float(t.min()) >= T_MIN and float(t.max()) < 1.0
    assert int((t == T_MIN).sum()) == 0  # the clamp gave ~200 draws exactly at T_MIN
    assert abs(float(t.double().mean()) - (1 + T_MIN) / 2) < 0.005


def test_loss_mix_weighted_sum_and_components():
    g = _gen(11)
    logits = torch.randn(2, 4, 6, generator=g, dtype=F64, requires_grad=True)
    targets = torch.randint(0, 6, (2, 4), generator=g)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    batch = {"drafter_logits": logits, "targets": targets, "mask": mask}
    mix = LossMix({"streak": 1.0, "ce": 0.1, "kl": 0.0})
    assert mix.enabled == ("streak", "ce")
    out = mix(batch)
    streak, ce = streak_loss(logits, targets, mask), ce_loss(logits, targets, mask)
    torch.testing.assert_close(out.loss, streak.loss + 0.1 * ce.loss)
    assert set(out.components) == {"streak_loss", "ce_loss"}
    assert set(out.metrics) == {"expected_streak", "ce", "accuracy"}
    total, components = mix_losses({"streak": streak}, {"streak": 2.0})
    torch.testing.assert_close(total, 2 * streak.loss)
    assert components["streak_loss"].requires_grad is False
    with pytest.raises(ConfigError):
        LossMix({"streaks": 1.0})
    with pytest.raises(ConfigError):
        LossMix({"tvd": 1.0})(batch)  # no verifier distributions in the batch


def test_each_loss_declares_the_inputs_it_reads():
    """LossMix.needs answers from each loss's LossTerm, and the declarations match what the losses read: a loss
    that declares nothing runs on a bare window batch, one that declares an input refuses a batch without it."""
    mix = LossMix({"streak": 1.0, "kl": 0.5, "tvd": 0.1, "mdlm": 0.1, "streak_soft": 0.0})
    assert mix.needs(VERIFIER_DIST) == ("kl", "tvd") and mix.needs(MDLM_PASS) == ("mdlm",)
    assert LossMix({"ce": 1.0}).needs(VERIFIER_DIST) == () == LossMix({"ce": 1.0}).needs(MDLM_PASS)
    g = _gen(12)
    window = {"drafter_logits": torch.randn(2, 3, 5, generator=g, dtype=F64), "targets": torch.randint(0, 5, (2, 3),
              generator=g), "mask": torch.ones(2, 3, dtype=torch.bool)}
    for name, term in LOSSES.items():
        if term.needs:
            with pytest.raises(ConfigError, match=f"loss '{name}' needs"):
                LossMix({name: 1.0})(window)
        else:
            assert torch.isfinite(LossMix({name: 1.0})(window).loss), name


def test_unmasked_ce_is_torch_fused_cross_entropy_and_agrees_with_the_masked_path():
    """Without a mask ce_loss is F.cross_entropy bit for bit (pocket pretraining's numerics); with an all-True mask
    (train.py) it is gather − logsumexp: the same value to rounding. The "ar" loss is it on next-token inputs."""
    g = _gen(13)
    logits = (3 * torch.randn(3, 5, 11, generator=g)).requires_grad_()
    targets = torch.randint(0, 11, (3, 5), generator=g)
    fused = ce_loss(logits, targets)
    assert torch.equal(fused.loss, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    masked = ce_loss(logits, targets, torch.ones(3, 5, dtype=torch.bool))
    torch.testing.assert_close(fused.loss, masked.loss)
    torch.testing.assert_close(fused.per_row, masked.per_row)
    assert float(fused.metrics["accuracy"]) == pytest.approx(float(masked.metrics["accuracy"]))
    ar = LossMix({"ar": 1.0})({"ar_logits": logits, "ar_targets": targets})
    assert torch.equal(ar.loss, fused.loss) and set(ar.metrics) == {"ar_ce", "ar_accuracy"}
    assert set(ar.components) == {"ar_loss"}


def _pad_topk(ids: torch.Tensor, logprobs: torch.Tensor, extra: int, g) -> tuple[torch.Tensor, torch.Tensor]:
    """The vLLM backend's padding: `extra` entries of id 0 with log-prob −inf appended, then shuffled in."""
    shape = (*ids.shape[:-1], extra)
    ids = torch.cat([ids, torch.zeros(shape, dtype=ids.dtype)], dim=-1)
    logprobs = torch.cat([logprobs, torch.full(shape, float("-inf"), dtype=logprobs.dtype)], dim=-1)
    order = torch.rand(ids.shape, generator=g).argsort(-1)
    return ids.gather(-1, order), logprobs.gather(-1, order)


@pytest.mark.parametrize("seed", range(4))
def test_sparse_kl_padding_changes_neither_loss_nor_gradient(seed):
    g = _gen(100 + seed)
    V, k = 9, 4
    logits = (torch.randn(3, 5, V, generator=g, dtype=F64) * 2).requires_grad_()
    p = _rand_probs((3, 5, V), g)
    ids = torch.rand(3, 5, V, generator=g).argsort(-1)[..., :k]  # random distinct ids, id 0 included at times
    logprobs = p.log().gather(-1, ids)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False], [True] * 5])
    clean = forward_kl_loss(logits, mask=mask, verifier_topk_ids=ids, verifier_topk_logprobs=logprobs)
    (clean_grad,) = torch.autograd.grad(clean.loss, logits)
    pad_ids, pad_lps = _pad_topk(ids, logprobs, 3, g)
    padded = forward_kl_loss(logits, mask=mask, verifier_topk_ids=pad_ids, verifier_topk_logprobs=pad_lps)
    (padded_grad,) = torch.autograd.grad(padded.loss, logits)
    torch.testing.assert_close(padded.loss, clean.loss, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(padded.per_row, clean.per_row, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(padded_grad, clean_grad, rtol=1e-12, atol=1e-14)


def test_sparse_kl_whole_padded_row_is_the_empty_support():
    """A row with nothing listed (the backend's appended EOS) is the trivial coarsening: KL 0, gradient 0."""
    g = _gen(110)
    logits = torch.randn(2, 3, 6, generator=g, dtype=F64, requires_grad=True)
    p = _rand_probs((2, 3, 6), g)
    ids = torch.tensor([1, 4, 0, 3]).expand(2, 3, 4).clone()  # (B, γ, k)
    logprobs = p.log().gather(-1, ids)
    ids[1], logprobs[1] = 0, float("-inf")  # row 1: every entry is padding
    out = forward_kl_loss(logits, verifier_topk_ids=ids, verifier_topk_logprobs=logprobs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    assert out.per_row[1] == 0 and (grad[1] == 0).all() and torch.isfinite(grad).all()
    ref = forward_kl_loss(logits[:1], verifier_topk_ids=ids[:1], verifier_topk_logprobs=logprobs[:1])
    torch.testing.assert_close(out.per_row[0], ref.per_row[0], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_sparse_kl_is_a_lower_bound_on_the_dense_kl(seed):
    """Brute force: random p (with zeros), q (with −inf logits), random listed subsets, padding; KL_S ≤ KL."""
    g = _gen(200 + seed)
    V = 7
    for trial in range(20):
        logits = torch.randn(2, 3, V, generator=g, dtype=F64) * (1 + 3 * torch.rand((), generator=g, dtype=F64))
        p = _rand_probs((2, 3, V), g, zeros=trial % 2 == 0)
        k = int(torch.randint(1, V + 1, (), generator=g))
        ids = torch.rand(2, 3, V, generator=g).argsort(-1)[..., :k]  # any subset, not only the top-k
        ids, logprobs = _pad_topk(ids, p.log().gather(-1, ids), int(torch.randint(0, 3, (), generator=g)), g)
        sparse = forward_kl_loss(logits, verifier_topk_ids=ids, verifier_topk_logprobs=logprobs).per_row
        q = logits.softmax(-1)
        dense = [sum(float(p[b, j, v] * (p[b, j, v] / q[b, j, v]).log()) for v in range(V) if p[b, j, v] > 0)
                 for b in range(2) for j in range(3)]
        dense = torch.tensor(dense, dtype=F64).view(2, 3).mean(-1)
        assert (sparse <= dense + 1e-12).all(), (trial, sparse, dense)
        assert (sparse >= -1e-12).all()
        if k == V:  # everything listed: exact
            torch.testing.assert_close(sparse, dense, rtol=1e-9, atol=1e-10)


def test_kl_where_drafter_and_verifier_both_give_zero_is_finite():
    """q = 0 (logit −inf) and p = 0 on the same id: the term is 0·log(0/0) = 0, never NaN, in loss and gradient."""
    g = _gen(120)
    logits = torch.randn(2, 3, 5, generator=g, dtype=F64)
    logits[..., 2] = float("-inf")  # e.g. a drafter-only id the drafter masks out
    logits.requires_grad_()
    p = _rand_probs((2, 3, 5), g)
    p[..., 2] = 0.0
    p = p / p.sum(-1, keepdim=True)
    ids = torch.tensor([2, 0, 1, 3]).expand(2, 3, 4)
    for out in (forward_kl_loss(logits, p),
                forward_kl_loss(logits, verifier_topk_ids=ids, verifier_topk_logprobs=p.log().gather(-1, ids))):
        (grad,) = torch.autograd.grad(out.loss, logits)
        assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    keep = [0, 1, 3, 4]  # the same distributions without the id nobody can produce
    dense = forward_kl_loss(logits, p)
    ref = forward_kl_loss(logits.detach()[..., keep].clone().requires_grad_(), p[..., keep])
    torch.testing.assert_close(dense.loss, ref.loss, rtol=1e-13, atol=1e-14)
    (grad,) = torch.autograd.grad(dense.loss, logits)
    assert (grad[..., 2] == 0).all()
