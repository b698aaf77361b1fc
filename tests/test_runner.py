"""forward_block and BlockRunner: the graph path's bucketing and padding, checked on CPU against plain forwards."""

import pytest
import torch

from specdiff2.decode.verifier import Verifier
from specdiff2.errors import ConfigError
from specdiff2.models.drafters import DiffusionDrafter
from specdiff2.models.masks import tree_ancestors
from specdiff2.models.runner import BlockRunner, resolve_execution
from specdiff2.models.transformer import ModelArgs, Transformer

V = 97


def tiny(seed: int = 0, dtype=torch.float64) -> Transformer:
    torch.manual_seed(seed)
    args = ModelArgs(vocab_size=V, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=16, qkv_bias=True, max_position_embeddings=512)
    model = Transformer(args).to(dtype).eval()
    for p in model.parameters():  # not the default init: larger weights make wrong masks visible
        p.data.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("mode", ["eager", "padded"])
def test_chain_block_equals_full_causal_forward(mode):
    model = tiny()
    ids = torch.randint(0, V, (40,))
    ref = model(ids[None], torch.arange(40)[None])[0]  # (40, V) no cache, causal
    model.setup_cache(1, 64)
    model.forward_block(ids[:25], torch.tensor(0), 25)
    runner = BlockRunner(model, 64, mode, kv_step=16)
    torch.testing.assert_close(runner(ids[25:], 25), ref[25:], rtol=0, atol=1e-12)
    # the same chain given as an explicit relation (the tree path) gives the same logits
    tril = torch.ones(15, 15, dtype=torch.bool).tril()
    torch.testing.assert_close(runner(ids[25:], 25, torch.arange(25, 40), tril), ref[25:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["eager", "padded"])
def test_tree_block_equals_each_path_alone(mode):
    model = tiny(1)
    prefix = torch.randint(0, V, (30,))
    parents = torch.tensor([-1, 0, 1, 0, -1, 4, 5])  # two branches under the root and a second root child
    tokens = torch.randint(0, V, (7,))
    model.setup_cache(1, 64)
    model.forward_block(prefix, torch.tensor(0), 30)
    intra = tree_ancestors(parents)
    got = BlockRunner(model, 64, mode, kv_step=16)(tokens, 30, 30 + intra.sum(1) - 1, intra)
    for leaf in (2, 3, 6):
        path = intra[leaf].nonzero()[:, 0]  # ancestors in depth order
        seq = torch.cat([prefix, tokens[path]])
        ref = model(seq[None], torch.arange(len(seq))[None])[0, 30:]
        torch.testing.assert_close(got[path], ref, rtol=0, atol=1e-12)


def test_padding_near_the_context_limit_falls_back_to_exact_size():
    model = tiny(2)
    ids = torch.randint(0, V, (64,))
    ref = model(ids[None], torch.arange(64)[None])[0]
    model.setup_cache(1, 64)
    model.forward_block(ids[:50], torch.tensor(0), 50)
    # 14 tokens would pad to 16 and write past slot 63: the runner must run them at their exact size
    got = BlockRunner(model, 64, "padded", kv_step=16)(ids[50:], 50)
    torch.testing.assert_close(got, ref[50:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["eager", "padded"])
def test_verifier_greedy_decode_is_the_same_in_every_execution_mode(mode):
    model = tiny(3, torch.float32)
    ids = torch.randint(0, V, (12,)).tolist()
    outs = {}
    for m in ("eager", mode):
        v = Verifier(model, 128, m)
        seq = list(ids)
        v.prefill(torch.tensor(seq[:-1]))
        for _ in range(40):
            seq.append(int(v.runner(torch.tensor(seq[-1:]), len(seq) - 1)[0].argmax()))
        outs[m] = seq
    assert outs["eager"] == outs[mode]


def _drafter(model, cache, attention, mode="eager"):
    return DiffusionDrafter(model, V - 1, True, torch.ones(V, dtype=torch.bool), 128, cache, attention, mode)


@pytest.mark.parametrize("mode", ["eager", "padded"])
def test_causal_drafter_prefix_cache_is_exact(mode):
    """For a causal-prefix drafter the O(γ) cached pass equals re-encoding the whole context."""
    model = tiny(4)
    seq = torch.randint(0, V - 1, (128,))
    canvas = torch.full((8,), V - 1)
    exact, cached = _drafter(model, "exact", "causal"), _drafter(tiny(4), "auto", "causal", mode)
    assert cached.cache == "prefix"
    for length in (10, 11, 15, 23, 24, 31):  # committed lengths of successive steps
        torch.testing.assert_close(cached.window_logits(seq, length, canvas),
                                   exact.window_logits(seq, length, canvas), rtol=0, atol=1e-10)


def test_causal_drafter_window_sees_prefix_and_itself_only():
    """Exact causal mode equals a plain forward with the block mask written out by hand."""
    model = tiny(5)
    seq = torch.randint(0, V - 1, (40,))
    gamma, length = 6, 20
    canvas = torch.full((gamma,), V - 1)
    got = _drafter(model, "exact", "causal").window_logits(seq, length, canvas)
    ids = torch.cat([seq[:length], canvas])
    n = length + gamma
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    mask[length:] = True  # the window sees every prefix token and the whole window
    ref = model(ids[None], torch.arange(n)[None], mask[None, None])[0]
    torch.testing.assert_close(got, ref[length - 1: length - 1 + gamma].to(got.dtype), rtol=0, atol=1e-6)


def test_bidirectional_drafter_exact_mode_is_full_attention():
    model = tiny(6)
    seq = torch.randint(0, V - 1, (40,))
    canvas = torch.full((5,), V - 1)
    got = _drafter(model, "auto", "bidirectional").window_logits(seq, 17, canvas)
    ids = torch.cat([seq[:17], canvas])
    full = torch.ones(1, 1, 22, 22, dtype=torch.bool)
    ref = model(ids[None], torch.arange(22)[None], full)[0, 16:21]
    torch.testing.assert_close(got, ref.to(got.dtype), rtol=0, atol=1e-6)


def test_bad_execution_options_are_one_line():
    with pytest.raises(ConfigError, match="compile="):
        resolve_execution("fast", "auto", torch.device("cpu"))
    with pytest.raises(ConfigError, match="kernels="):
        resolve_execution("auto", "triton", torch.device("cpu"))
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        BlockRunner(tiny(), 32, "graph")
    with pytest.raises(ConfigError, match="prefix_attention"):
        _drafter(tiny(), "auto", "sideways")


def test_execution_choices_stay_with_their_model():
    """elementwise kernels for one model leave every other model (and the module defaults) eager: no process-wide
    switch to undo after a bench."""
    from specdiff2.models.transformer import KERNELS, rms_norm

    fused, plain = tiny(1), tiny(2)
    BlockRunner(fused, 32, "eager", kernels="elementwise")
    assert fused.model.norm.kernels is fused.kernels and fused.kernels["rms_norm"] is not rms_norm
    assert plain.kernels["rms_norm"] is rms_norm and KERNELS["rms_norm"] is rms_norm


@pytest.mark.slow
def test_layer_kernels_compile_one_layer_for_any_depth():
    """kernels=layer: every layer of every depth calls one compiled layer (regional compilation), so the number
    of compiled graphs does not grow with depth, and the logits (chain and tree blocks) equal the eager ones."""
    from torch._dynamo.utils import counters

    def deep(layers):
        torch.manual_seed(0)
        args = ModelArgs(vocab_size=V, hidden_size=64, intermediate_size=96, num_layers=layers, num_heads=4,
                         num_kv_heads=2, head_dim=16, qkv_bias=True, max_position_embeddings=512)
        return Transformer(args).float().eval()

    graphs = {}
    for layers in (2, 6):
        model = deep(layers)
        ids = torch.randint(0, V, (30,))
        ref = model(ids[None], torch.arange(30)[None])[0]  # (30, V) eager, no cache
        model.setup_cache(1, 64)
        runner = BlockRunner(model, 64, "eager", kernels="layer")
        before = counters["stats"]["unique_graphs"]
        runner(ids[:20], 0)
        torch.testing.assert_close(runner(ids[20:], 20), ref[20:], rtol=1e-5, atol=1e-5)
        tree = tree_ancestors(torch.tensor([-1, 0, 0, 1]))  # (4, 4) two branches
        positions = torch.tensor([20, 21, 21, 22])
        got = runner(ids[20:24], 20, positions, tree)
        graphs[layers] = counters["stats"]["unique_graphs"] - before
        model.use_kernels("eager")  # the same block again, eagerly (it rewrites the same cache slots)
        want = model.forward_block(ids[20:24], torch.tensor(20), 24, positions, tree)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert graphs[6] <= graphs[2], graphs  # the 2-layer model already compiled every kind; depth adds none
