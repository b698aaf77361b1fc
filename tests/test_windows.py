"""Packed windows must reproduce the one-window-per-forward computation (loss and gradients)."""

import pytest
import torch

from specdiff2.bench.random_world import tiny_hf_qwen2
from specdiff2.data.windows import (
    Trajectory,
    WindowCollator,
    default_packing,
    window_logits,
    window_offsets,
    window_targets,
    window_topk,
)
from specdiff2.errors import CheckpointError
from specdiff2.losses import streak_loss
from specdiff2.models.diffusion import align_logits, prefix_attention

GAMMA, MASK_ID, VOCAB = 4, 1, 48


def tiny_drafter(seed=0):
    return tiny_hf_qwen2(VOCAB, seed)


def trajectories(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt, total = 3 + i, 12 + 3 * i
        out.append(Trajectory(torch.randint(3, VOCAB, (total,), generator=g), prompt,
                              torch.randint(0, VOCAB, (total - prompt, 5), generator=g),
                              torch.randn(total - prompt, 5, generator=g)))
    return out


def all_windows(trajs, stride=1, max_len=64):
    return [(t, o) for t, tr in enumerate(trajs)
            for o in window_offsets(tr.prompt_len, len(tr.tokens), GAMMA, stride, max_len)]


def loss_and_grads(model, logits, targets, mask):
    model.zero_grad()
    loss = streak_loss(logits, targets, mask).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def reference_logits(model, trajs, windows, shifted, prefix_causal=False):
    """One forward per window over prefix ‖ MASK×γ (bidirectional; or the `shared` approximation's mask)."""
    rows = []
    for t, o in windows:
        ids = torch.cat([trajs[t].tokens[:o], torch.full((GAMMA,), MASK_ID)])[None]  # (1, o+γ)
        n = ids.shape[1]
        attn = torch.ones(n, n, dtype=torch.bool)
        if prefix_causal:
            attn[:o, :o] = torch.ones(o, o, dtype=torch.bool).tril()
            attn[:o, o:] = False
            attn[o:, o:] = True
        logits = model(input_ids=ids, attention_mask=attn[None, None], position_ids=torch.arange(n)[None]).logits
        rows.append(align_logits(logits, shifted)[0, o: o + GAMMA])  # (γ, V)
    return torch.stack(rows)  # (W, γ, V)


@pytest.mark.parametrize("packing,shifted", [("exact", True), ("exact", False), ("none", True)])
def test_exact_packing_equals_one_window_per_forward(packing, shifted):
    model, trajs = tiny_drafter(), trajectories()
    windows = all_windows(trajs)
    collate = WindowCollator(trajs, GAMMA, MASK_ID, shifted, packing, row_tokens=64)
    batch = collate([[w] for w in windows])
    if packing == "exact":
        assert batch["input_ids"].shape[0] <= len(windows) // 3  # several windows really share a row
    packed_loss, packed_grads = loss_and_grads(model, window_logits(model, batch), batch["targets"], batch["mask"])
    ref = reference_logits(model, trajs, windows, shifted)
    targets = torch.stack([window_targets(trajs[t], o, GAMMA)[0] for t, o in windows])
    mask = torch.stack([window_targets(trajs[t], o, GAMMA)[1] for t, o in windows])
    assert torch.equal(targets, batch["targets"]) and torch.equal(mask, batch["mask"])
    ref_loss, ref_grads = loss_and_grads(model, ref, targets, mask)
    torch.testing.assert_close(packed_loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("packing", ["shared", "exact"])
def test_causal_prefix_packings_equal_one_window_per_forward(packing):
    """For a causal drafter both packings are exact: the drafting pass with a causal prefix, window by window."""
    model, trajs = tiny_drafter(1), trajectories(seed=1)
    groups = [[(t, o) for o in window_offsets(tr.prompt_len, len(tr.tokens), GAMMA, 2, 64)]
              for t, tr in enumerate(trajs)]
    windows = [w for g in groups for w in g]
    collate = WindowCollator(trajs, GAMMA, MASK_ID, True, packing, row_tokens=64, prefix_attention="causal")
    batch = collate(groups if packing == "shared" else [[w] for w in windows])
    if packing == "shared":
        assert batch["input_ids"].shape[0] == len(trajs)
    packed_loss, packed_grads = loss_and_grads(model, window_logits(model, batch), batch["targets"], batch["mask"])
    ref_loss, ref_grads = loss_and_grads(model, reference_logits(model, trajs, windows, True, prefix_causal=True),
                                         batch["targets"], batch["mask"])
    torch.testing.assert_close(packed_loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    bidirectional_loss, _ = loss_and_grads(model, reference_logits(model, trajs, windows, True), batch["targets"],
                                           batch["mask"])
    assert abs(float(bidirectional_loss - packed_loss)) > 1e-4  # the two prefix attentions really differ


def test_default_packing_follows_prefix_attention():
    assert default_packing("causal") == "shared" and default_packing("bidirectional") == "exact"
    assert prefix_attention({}) == "bidirectional" and prefix_attention({"prefix_attention": "causal"}) == "causal"
    with pytest.raises(CheckpointError, match="prefix_attention='sideways'"):
        prefix_attention({"prefix_attention": "sideways"})


def test_offsets_targets_and_topk_alignment():
    tr = trajectories(1)[0]  # prompt 3, total 12
    assert window_offsets(3, 12, GAMMA, 1, 64) == list(range(3, 12))
    assert window_offsets(3, 12, GAMMA, 4, 64) == [3, 7, 11]
    assert window_offsets(3, 12, GAMMA, 1, 10) == list(range(3, 7))  # o + γ ≤ max_len
    assert window_offsets(0, 5, GAMMA, 1, 64)[0] == 1  # a shifted drafter needs one prefix token
    targets, valid = window_targets(tr, 10, GAMMA)
    assert valid.tolist() == [True, True, False, False]
    assert targets[:2].tolist() == tr.tokens[10:12].tolist() and targets[2:].tolist() == [0, 0]
    ids, lps = window_topk(tr, 10, GAMMA)
    assert torch.equal(ids[:2], tr.topk_ids[7:9]) and torch.isneginf(lps[2:]).all()
    batch = WindowCollator([tr], GAMMA, MASK_ID)([[(0, 5)], [(0, 10)]])
    assert batch["verifier_topk_ids"].shape == (2, GAMMA, 5)
    assert batch["window_offset"].tolist() == [5, 10] and batch["clean_len"].tolist() == [12]
