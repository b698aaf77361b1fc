"""One family registry for both sides (specdiff2/models/archs/): every trainable family, on a tiny checkpoint in its
public layout, gives the same logits as the decode `Transformer` and as its training-view transformers class, and a
trained model exported from the training view reloads for decoding to the same logits, in the source layout
(tensor names, config.json, remote code and tokenizer files as downloaded).

A family given a training view without a checkpoint in `CHECKPOINTS` fails `test_every_trainable_family_is_tested`.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from specdiff2.models.archs import ARCHS
from specdiff2.models.checkpoint import load_transformer, read_config
from specdiff2.models.hf import load_hf_drafter, save_hf_drafter

pytestmark = pytest.mark.usefixtures("one_thread")
# family -> (fixture, attribute): a checkpoint directory of that family in its public layout
CHECKPOINTS = {"qwen2": ("tiny_world", "verifier"), "Dream": ("tiny_world", "drafter")}


@pytest.fixture(params=sorted(CHECKPOINTS))
def checkpoint(request) -> Path:
    fixture, attribute = CHECKPOINTS[request.param]
    return Path(getattr(request.getfixturevalue(fixture), attribute))


def _tensor_names(path: Path) -> set[str]:
    names = set()
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            names.update(handle.keys())
    return names


def _masks(n: int) -> dict[str, torch.Tensor]:
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return {"causal": causal.expand(2, 1, n, n), "bidirectional": torch.ones(2, 1, n, n, dtype=torch.bool)}


def _logits(model, ids, mask) -> torch.Tensor:
    pos = torch.arange(ids.shape[1])[None].expand_as(ids)
    with torch.no_grad():
        if hasattr(model, "get_decoder"):  # the training view (transformers)
            return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        return model(ids, pos, attn_mask=mask)


def _ids(n: int = 10) -> torch.Tensor:
    return torch.randint(3, 300, (2, n), generator=torch.Generator().manual_seed(0))  # (2, n) ordinary tokens


def test_every_trainable_family_is_tested():
    assert {a.name for a in ARCHS.values() if a.training is not None} == set(CHECKPOINTS)


def test_training_view_computes_the_decode_function(checkpoint):
    ours, _ = load_transformer(checkpoint)
    theirs = load_hf_drafter(checkpoint).eval()
    ids = _ids()
    for name, mask in _masks(ids.shape[1]).items():
        torch.testing.assert_close(_logits(theirs, ids, mask), _logits(ours, ids, mask), rtol=1e-5, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_export_reloads_to_the_same_logits_in_the_source_layout(checkpoint, tmp_path):
    trained = load_hf_drafter(checkpoint).eval()
    with torch.no_grad():  # "training": every tensor moves, so the export cannot be a copy of the source
        for p in trained.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 1e-2)
    source = read_config(checkpoint)
    out = save_hf_drafter(trained, tmp_path / "export", None, source, checkpoint)
    assert _tensor_names(out) == _tensor_names(checkpoint)  # the family's own names; a tied head stays absent
    saved = read_config(out)
    dtype_keys = {"dtype", "torch_dtype"}
    assert {k: v for k, v in saved.items() if k not in dtype_keys} == \
        {k: v for k, v in source.items() if k not in dtype_keys}
    assert {p.name for p in checkpoint.glob("*.py")} <= {p.name for p in out.glob("*.py")}  # remote code kept
    reloaded, _ = load_transformer(out)
    ids = _ids()
    for mask in _masks(ids.shape[1]).values():
        torch.testing.assert_close(_logits(reloaded, ids, mask), _logits(trained, ids, mask), rtol=1e-5, atol=1e-5)
    again = load_hf_drafter(out).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in trained.state_dict().items())  # lossless both ways
    assert json.loads((out / "config.json").read_text())["model_type"] == source["model_type"]
