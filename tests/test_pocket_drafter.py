"""The pocket diffusion drafter: dense drafting-condition layout, its objective, AR initialisation, world records."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from specdiff2.bench.random_world import tiny_hf_qwen2
from specdiff2.data.windows import shared_layout
from specdiff2.losses.prefix_match import alpha_metrics
from specdiff2.models.diffusion import prefix_attention
from specdiff2.models.hf import read_config
from specdiff2.pocket.pretrain import DenseDrafterObjective, train_anchors, val_anchors

GAMMA, MASK_ID, VOCAB, L = 4, 1, 40, 24


def tiny_qwen2(seed=0):
    return tiny_hf_qwen2(VOCAB, seed).eval()


def alone(model, prefix, block):
    """One window by itself, as the drafter drafts: causal prefix, block sees the prefix and itself.
    Returns the γ shifted logits (q_1 from the last prefix token, q_j from block position j − 2)."""
    o = len(prefix)
    ids = torch.cat([prefix, block])[None]  # (1, o+γ)
    n = ids.shape[1]
    attn = torch.ones(n, n, dtype=torch.bool)
    attn[:o] = torch.ones(o, n, dtype=torch.bool).tril()  # prefix: earlier prefix tokens only
    logits = model(input_ids=ids, attention_mask=attn[None, None], position_ids=torch.arange(n)[None]).logits
    return logits[0, o - 1: o - 1 + GAMMA]  # (γ, V)


def packed(model, ids, offsets, blocks):
    layout = shared_layout(ids.shape[1], offsets, GAMMA, shifted=True)
    full = torch.cat([ids, blocks.flatten(1)], 1)
    logits = model(input_ids=full, attention_mask=layout["attention_mask"],
                   position_ids=layout["position_ids"]).logits  # (B, N, V)
    rows = torch.arange(ids.shape[0])[:, None, None]
    return logits[rows, layout["logit_cols"]], logits[:, : ids.shape[1]]  # (B, K, γ, V), clean (B, L, V)


def test_packed_row_gives_each_windows_logits_alone():
    model = tiny_qwen2()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (2, L), generator=g)
    offsets = torch.tensor([[1, 5, 5, 19], [3, 10, 14, 20]])  # repeated and last-possible anchors included
    blocks = torch.full((2, 4, GAMMA), MASK_ID)
    blocks[1, 2, 1] = ids[1, 15]  # a partly denoised block (a later denoising step / the MDLM blocks)
    windows, clean = packed(model, ids, offsets, blocks)
    for b in range(2):
        for k, o in enumerate(offsets[b].tolist()):
            ref = alone(model, ids[b, :o], blocks[b, k])
            torch.testing.assert_close(windows[b, k], ref, rtol=1e-4, atol=1e-5, msg=f"row {b} window {k}")
    # The clean stream is a plain causal LM pass: its next-token loss is the AR model's.
    torch.testing.assert_close(clean, model(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
    # A bidirectional prefix would differ: the layout really is the causal-prefix drafting pass.
    n = int(offsets[0, 1]) + GAMMA
    bidir = model(input_ids=torch.cat([ids[0, :5], blocks[0, 1]])[None],
                  attention_mask=torch.ones(1, 1, n, n, dtype=torch.bool)).logits[0, 4: 4 + GAMMA]
    assert (bidir - windows[0, 1]).abs().max() > 1e-3


def test_dense_objective_scores_the_windows_it_packs():
    model = tiny_qwen2(1)
    ids = torch.randint(3, VOCAB, (3, L), generator=torch.Generator().manual_seed(1))
    objective = DenseDrafterObjective(MASK_ID, window=GAMMA, windows_per_row=5, ar_weight=0.5)
    loss, metrics = objective(model, ids, evaluate=True)
    offsets = val_anchors(3, L, GAMMA, 5)
    ref = torch.stack([alone(model, ids[b, :o], torch.full((GAMMA,), MASK_ID))
                       for b in range(3) for o in offsets[b].tolist()])  # (W, γ, V)
    targets = torch.stack([ids[b, o: o + GAMMA] for b in range(3) for o in offsets[b].tolist()])  # (W, γ)
    window_ce = F.cross_entropy(ref.flatten(0, 1), targets.flatten())
    ar_ce = F.cross_entropy(model(input_ids=ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(metrics["ce_loss"], window_ce, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["ar_ce"], ar_ce, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, window_ce + 0.5 * ar_ce, rtol=1e-4, atol=1e-5)
    expected = alpha_metrics(ref.argmax(-1) == targets)
    assert all(torch.isclose(metrics[k], v) for k, v in expected.items())
    # With the MDLM term on, loss and gradients flow through the extra, partly masked blocks too.
    mixed = DenseDrafterObjective(MASK_ID, window=GAMMA, windows_per_row=5, mdlm_weight=1.0,
                                  mdlm_windows_per_row=3)
    loss, metrics = mixed(model, ids, torch.Generator().manual_seed(0))
    loss.backward()
    assert "mdlm_loss" in metrics and torch.isfinite(loss) and model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_ar_alpha_is_the_greedy_rollout_acceptance():
    """Teacher-forced α_j of an AR model = share of windows whose γ-step greedy rollout matches x at 1..j."""
    from specdiff2.pocket.pretrain import ARObjective

    model = tiny_qwen2(2)
    ids = torch.randint(3, VOCAB, (2, L), generator=torch.Generator().manual_seed(2))
    ids[:, 10:] = ids[:, :1]  # a repeated token: some windows match for several positions
    _, metrics = ARObjective(window=GAMMA, windows_per_row=4)(model, ids, evaluate=True)
    hits = []
    for b in range(2):
        for o in val_anchors(1, L, GAMMA, 4)[0].tolist():
            seq = ids[b, :o]
            for _ in range(GAMMA):  # greedy rollout on its own tokens
                seq = torch.cat([seq, model(input_ids=seq[None]).logits[0, -1].argmax()[None]])
            hits.append(seq[o:] == ids[b, o: o + GAMMA])
    expected = alpha_metrics(torch.stack(hits))
    assert all(torch.isclose(metrics[k], v) for k, v in expected.items())
    assert 0 < float(metrics["alpha_1"])  # not a vacuous all-zero comparison


def test_anchors_and_alpha_curve():
    g = torch.Generator().manual_seed(0)
    a = train_anchors(64, L, GAMMA, 6, g)
    assert a.min() >= 1 and a.max() <= L - GAMMA
    assert (a.diff(dim=1) > 0).all()  # one per stratum: distinct and ordered
    assert val_anchors(2, L, GAMMA, 3).tolist() == [[1, 10, 20], [1, 10, 20]]  # 10.5 rounds to even
    hits = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    curve = alpha_metrics(hits)
    assert [round(float(curve[f"alpha_{j}"]), 2) for j in range(1, 5)] == [0.75, 0.5, 0.25, 0.25]


def test_pretraining_optimizer_comes_from_the_spec_through_conf_optim_factories():
    """AdamW with decay on matrices only and warmup-then-cosine to 10%, fed by the model spec's lr, warmup, steps."""
    import math

    from specdiff2.pocket.pretrain import PretrainModule, pretrain_optim
    from specdiff2.pocket.spec import ModelSpec

    m = ModelSpec(lr=2e-3, warmup_steps=4, steps=20)
    optimizer, scheduler = pretrain_optim(m)
    model = tiny_qwen2()
    module = PretrainModule(model, objective=None, optimizer=optimizer, max_steps=m.steps, scheduler=scheduler)
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0 and decay["betas"] == (0.9, 0.95)
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    lrs = []
    for _ in range(m.steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([m.lr * (s + 1) / 4 for s in range(4)])  # warmup, first step at 1/4
    frac = [(s - 4) / 16 for s in range(4, 20)]
    assert lrs[4:] == pytest.approx([m.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * f))) for f in frac])


def test_pocket_drafter_is_ar_initialised_causal_and_logs_alpha(micro_world):
    config = read_config(micro_world.drafter)
    assert config["model_type"] == "Dream" and prefix_attention(config) == "causal"
    assert config["mask_token_id"] == json.loads((micro_world.root / "world.json").read_text())["tokenizer"]["mask_id"]
    summary = micro_world.summary()
    assert summary["drafter"]["init_from"] == "ar_drafter" and summary["drafter"]["prefix_attention"] == "causal"
    window = summary["drafter"]["window"]
    assert len(summary["drafter"]["alpha"]) == window == len(summary["ar_drafter"]["alpha"])
    # AR initialisation: before any masked step, q_1 is the AR drafter's next-token prediction exactly.
    assert summary["drafter"]["initial_val"]["val/alpha_1"] == summary["ar_drafter"]["final_val"]["val/alpha_1"]
    # Metrics go through train.py's CSV logger: one row per validation round, the values val_history holds.
    with open(micro_world.drafter / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["val/loss"]]
    history = json.loads((micro_world.drafter / "train_metrics.json").read_text())["val_history"]
    assert len(rows) == len(history) >= 2 and {f"val/alpha_{j}" for j in range(1, window + 1)} <= set(rows[0])
    for row, logged in zip(rows, history):
        assert all(abs(float(row[k]) - logged[k]) < 1e-5 for k in ("val/loss", "val/alpha_1", "val/ar_ce"))
    assert "train/ce_loss" in rows[0] and "train/ar_loss" in rows[0]


def test_init_from_needs_the_same_shape():
    from specdiff2.errors import ConfigError
    from tests.conftest import micro_spec

    spec = micro_spec()
    with pytest.raises(ConfigError, match="init_from=ar_drafter needs"):
        micro_spec(drafter={**spec.to_dict()["drafter"], "num_layers": 2})
    micro_spec(drafter={**spec.to_dict()["drafter"], "num_layers": 2, "init_from": "scratch"})
