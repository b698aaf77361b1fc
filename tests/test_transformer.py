"""Our inference Transformer against tiny random HF models: loading, masks, static cache, trees."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from specdiff2.errors import CheckpointError
from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.masks import causal_cache_mask, tree_cache_mask, tree_depths
from specdiff2.models.transformer import ModelArgs

VOCAB, S_MAX, TOL = 160, 32, 1e-4
TINY = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    rope_theta=5000.0, attn_implementation="sdpa",
)
VARIANTS = {  # name -> (HF config class, model class, tied embeddings)
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, False),
    "qwen2_tied": (Qwen2Config, Qwen2ForCausalLM, True),
    "llama": (LlamaConfig, LlamaForCausalLM, False),
    "llama_tied": (LlamaConfig, LlamaForCausalLM, True),
}


def _hf_model(name: str):
    config_cls, model_cls, tied = VARIANTS[name]
    torch.manual_seed(0)
    model = model_cls(config_cls(**TINY, tie_word_embeddings=tied)).eval()
    with torch.no_grad():  # large random weights (and nonzero biases) so mistakes show in the logits
        for pname, param in model.named_parameters():
            param.normal_(1.0 if "norm" in pname else 0.0, 0.1)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (HF model, checkpoint dir), built once for the module."""
    out = {}
    for name in VARIANTS:
        model, path = _hf_model(name), tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (model, path)
    return out


@pytest.fixture(scope="module")
def qwen(saved):
    """Our Qwen2 model with a static cache (batch 2) plus the HF reference."""
    hf, path = saved["qwen2"]
    model, _ = load_transformer(path)
    model.setup_cache(2, S_MAX)
    return model, hf


def _ids(*shape, seed=1):
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def _pos(start, length, batch=1):
    return (start + torch.arange(length)).expand(batch, length)  # (B, L)


def _step(model, ids, start):
    """Write a causal block `ids` (B, L) at slots start..start+L-1; return its logits (B, L, V)."""
    length = ids.shape[1]
    mask = causal_cache_mask(start, length, S_MAX)  # (1, 1, L, S_MAX)
    return model(ids, _pos(start, length, ids.shape[0]), mask, torch.arange(start, start + length))


def _full(model, ids):
    """Causal full-sequence logits without the cache (reference)."""
    return model(ids, _pos(0, ids.shape[1], ids.shape[0]))


def _close(a, b):
    assert (a - b).abs().max().item() < TOL


@torch.no_grad()
@pytest.mark.parametrize("name", list(VARIANTS))
def test_matches_hf_causal(saved, name):
    hf, path = saved[name]
    model, config = load_transformer(path)
    assert config["model_type"] == name.split("_")[0]
    assert model.args.qkv_bias == name.startswith("qwen2")
    if model.args.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = _ids(2, 11)
    _close(_full(model, ids), hf(ids).logits)


@torch.no_grad()
def test_dream_layout_bidirectional(saved, tmp_path):
    hf, path = saved["qwen2"]
    shutil.copy(path / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())
    theta = config.pop("rope_parameters")["rope_theta"]  # Dream's config is transformers-4 style
    config.update(model_type="Dream", architectures=["DreamModel"], mask_token_id=151)
    config.update(rope_theta=theta, rope_scaling=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model, _ = load_transformer(tmp_path)
    assert model.args.qkv_bias and model.args.rope_theta == theta
    ids = _ids(2, 9)
    full = torch.ones(1, 1, 9, 9, dtype=torch.bool)  # (1, 1, L, L) bidirectional
    out = model(ids, _pos(0, 9, 2), full)
    _close(out, hf(ids, attention_mask=full.expand(2, 1, 9, 9)).logits)  # HF accepts a 4D bool mask as-is
    assert (out - _full(model, ids)).abs().max() > 1e-3  # and it really differs from causal


@torch.no_grad()
def test_incremental_decoding_matches_full(qwen):
    model, hf = qwen
    ids = _ids(2, 12)
    ref = hf(ids).logits
    pieces = [_step(model, ids[:, :7], 0)]  # prefill 7
    pieces.append(_step(model, ids[:, 7:8], 7))  # then one at a time
    pieces.append(_step(model, ids[:, 8:9], 8))
    pieces.append(_step(model, ids[:, 9:12], 9))  # then a block
    _close(torch.cat(pieces, dim=1), ref)
    _close(model(ids[:, 9:12], _pos(9, 3, 2), None, torch.arange(9, 12)), ref[:, 9:12])  # default mask


@torch.no_grad()
@pytest.mark.parametrize("keep", [-2, 0, 2])
def test_rollback_rewrites_slots(qwen, keep):
    """Prefill 7, write 4 wrong tokens, then roll back to 7 + keep and write 4 others there."""
    model, _ = qwen
    prefix, wrong, other = _ids(1, 7, seed=2), _ids(1, 4, seed=3), _ids(1, 4, seed=4)
    _step(model, prefix, 0)
    _step(model, wrong, 7)
    committed = torch.cat([prefix, wrong], dim=1)[:, : 7 + keep]  # shorter length = rollback
    out = _step(model, other, 7 + keep)
    _close(out, _full(model, torch.cat([committed, other], dim=1))[:, -4:])


PARENTS = torch.tensor([-1, -1, 0, 0, 1, 2, 2, 4, 5])  # two roots, branching, depth 3


def _path(node: int) -> list[int]:
    nodes = []
    while node >= 0:
        nodes.append(node)
        node = int(PARENTS[node])
    return nodes[::-1]


def test_tree_masks():
    assert tree_depths(PARENTS).tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3]
    mask = tree_cache_mask(torch.tensor(5), PARENTS, 16)[0, 0]  # (N, 16)
    assert mask.shape == (9, 16)
    for node in range(9):
        visible = [s for s in range(16) if mask[node, s]]
        assert visible == list(range(5)) + [5 + n for n in _path(node)]
    causal = causal_cache_mask(torch.tensor(3), 2, 8)[0, 0]
    assert causal.tolist() == [[True] * 4 + [False] * 4, [True] * 5 + [False] * 3]


@torch.no_grad()
def test_tree_decoding_and_compaction(qwen):
    model, _ = qwen
    prefix, nodes = _ids(1, 5, seed=5), _ids(1, 9, seed=6)
    _step(model, prefix, 0)
    depth = tree_depths(PARENTS)
    mask = tree_cache_mask(5, PARENTS, S_MAX)  # (1, 1, N, S_MAX)
    tree_logits = model(nodes, (5 + depth)[None], mask, torch.arange(5, 14))  # (1, N, V)

    for node in range(9):  # each node equals its root-to-node path decoded one by one, fresh cache
        model.setup_cache(2, S_MAX)
        path = nodes[:, _path(node)]
        out = _step(model, prefix, 0)
        for i in range(path.shape[1]):
            out = _step(model, path[:, i : i + 1], 5 + i)
        _close(tree_logits[:, node], out[:, -1])

    # Rebuild the tree state (the loop above replaced the cache), then compact the path to node 8.
    _step(model, prefix, 0)
    model(nodes, (5 + depth)[None], mask, torch.arange(5, 14))
    path = _path(8)  # [0, 2, 5, 8] at slots 5, 7, 10, 13
    model.copy_cache_slots(torch.tensor(path) + 5, torch.arange(5, 5 + len(path)))
    tail = _ids(1, 2, seed=7)
    out = _step(model, tail, 5 + len(path))
    _close(out, _full(model, torch.cat([prefix, nodes[:, path], tail], dim=1))[:, -2:])


def _one_line_error(path):
    with pytest.raises(CheckpointError) as info:
        load_transformer(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_checkpoints(saved, tmp_path):
    assert "does not exist" in _one_line_error(tmp_path / "nope")
    assert "config.json" in _one_line_error(tmp_path)
    config = json.loads((saved["qwen2"][1] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save({}, tmp_path / "pytorch_model.bin")
    assert "safetensors is required" in _one_line_error(tmp_path)

    shutil.copy(saved["llama"][1] / "model.safetensors", tmp_path / "model.safetensors")
    assert "missing" in _one_line_error(tmp_path)  # llama weights lack the qwen2 q/k/v biases
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    message = _one_line_error(tmp_path)
    assert "gpt2" in message and "qwen2, llama, mistral, Dream" in message


def test_config_parsing():
    base = dict(
        vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    rope = {"rope_theta": 1e6, "rope_type": "default"}  # transformers 5 layout
    args = ModelArgs.from_hf_config({**base, "model_type": "llama", "rope_parameters": rope})
    assert (args.rope_theta, args.num_kv_heads, args.head_dim, args.qkv_bias) == (1e6, 2, 8, False)
    mistral = {**base, "model_type": "mistral", "rope_theta": 123.0, "sliding_window": 4096}
    args = ModelArgs.from_hf_config(mistral)
    assert (args.rope_theta, args.sliding_window) == (123.0, 4096)
    for rope in ({"rope_type": "llama3", "factor": 8.0}, {"type": "linear", "factor": 2.0}):
        with pytest.raises(CheckpointError, match="not supported"):
            ModelArgs.from_hf_config({**base, "model_type": "llama", "rope_scaling": rope})
    with pytest.raises(CheckpointError, match="lacks 'vocab_size'"):
        ModelArgs.from_hf_config({**base, "model_type": "qwen2", "vocab_size": None})
