"""The HF training view of a Dream-layout drafter equals our inference Transformer, and saves back losslessly."""

import json

import pytest
import torch

from specdiff2.errors import CheckpointError
from specdiff2.models.checkpoint import load_transformer, read_config
from specdiff2.models.hf import load_hf_drafter, save_hf_drafter


def test_hf_drafter_matches_transformer_and_round_trips(micro_world, tmp_path):
    hf = load_hf_drafter(micro_world.drafter)
    ours, _ = load_transformer(micro_world.drafter)
    ids = torch.randint(3, 500, (2, 10), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(10)[None].expand(2, -1)
    full = torch.ones(2, 1, 10, 10, dtype=torch.bool)  # bidirectional, as the drafter runs
    hf_logits = hf(input_ids=ids, attention_mask=full, position_ids=pos).logits
    torch.testing.assert_close(hf_logits, ours(ids, pos, attn_mask=full), rtol=1e-5, atol=1e-5)
    assert (hf_logits - hf(input_ids=ids).logits).abs().max() > 1e-3  # the 4D mask really is bidirectional
    source = read_config(micro_world.drafter)
    out = save_hf_drafter(hf, tmp_path / "saved", None, source)
    saved = read_config(out)
    assert {k: v for k, v in saved.items() if k != "dtype"} == {k: v for k, v in source.items() if k != "dtype"}
    again, _ = load_transformer(out)
    torch.testing.assert_close(again(ids, pos, attn_mask=full), ours(ids, pos, attn_mask=full))


def test_a_family_without_a_training_view_is_refused_in_one_line(micro_world, tmp_path):
    config = read_config(micro_world.drafter)
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(CheckpointError, match="'mistral' decodes but cannot be trained here; trainable: qwen2") as err:
        load_hf_drafter(tmp_path)
    assert "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_training_class_are_one_line(micro_world, tmp_path):
    """transformers would initialise a missing tensor at random and train from it; refused instead."""
    from safetensors.torch import load_file, save_file

    drafter = _copy_drafter(micro_world.drafter, tmp_path / "drafter")
    state = load_file(drafter / "model.safetensors")
    state.pop("model.layers.0.mlp.up_proj.weight")
    save_file(state, drafter / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing 1.*model.layers.0.mlp.up_proj.weight") as err:
        load_hf_drafter(drafter)
    assert "\n" not in str(err.value)


def _copy_drafter(source, out):
    import shutil

    shutil.copytree(source, out)
    return out


def test_nonfinite_weights_are_refused_at_load(micro_world, tmp_path):
    from safetensors.torch import load_file, save_file

    drafter = _copy_drafter(micro_world.drafter, tmp_path / "drafter")
    state = load_file(drafter / "model.safetensors")
    state["model.norm.weight"][1] = float("nan")
    save_file(state, drafter / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="model.norm.weight .* NaN or inf"):
        load_transformer(drafter)
    with pytest.raises(CheckpointError, match="model.norm.weight .* NaN or inf"):
        load_hf_drafter(drafter)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_unreadable_safetensors_is_one_line(micro_world, tmp_path, damage):
    drafter = _copy_drafter(micro_world.drafter, tmp_path / "drafter")
    file = drafter / "model.safetensors"
    data = file.read_bytes()
    damaged = {"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x00not safetensors" * 64}
    file.write_bytes(damaged[damage])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file") as info:
        load_transformer(drafter)
    assert "\n" not in str(info.value)
