"""One family registry for both sides (specdiff2/models/archs/): every trainable family, on a tiny checkpoint in its
public layout, gives the same logits as the decode `Transformer` and as its training-view transformers class, and a
trained model exported from the training view reloads for decoding to the same logits, in the source layout
(tensor names, config.json, remote code and tokenizer files as downloaded).

A family given a training view without a checkpoint in `CHECKPOINTS` fails `test_every_trainable_family_is_tested`.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from specdiff2.models.archs import ARCHS
from specdiff2.models.checkpoint import load_transformer, read_config
from specdiff2.models.hf import load_hf_drafter, save_hf_drafter
from tests import real_layouts as RL

pytestmark = pytest.mark.usefixtures("one_thread")
# family -> (fixture, attribute): a checkpoint directory of that family in its public layout
CHECKPOINTS = {"qwen2": ("tiny_world", "verifier"), "Dream": ("tiny_world", "drafter"),
               "llada": ("llada_family", "llada")}


@pytest.fixture(scope="module")
def llada_family(tmp_path_factory):
    """LLaDA-8B-Instruct's layout (model.transformer.* names, OLMo-style config.json) and a LLaMA verifier."""
    return SimpleNamespace(**RL.write_llada_family(tmp_path_factory.mktemp("llada")))


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


def test_llada_trains_with_lora_and_gradient_checkpointing_and_exports_in_its_layout(llada_family, tmp_path):
    """The errand of issue 23, end to end on LLaDA: Lightning + PEFT + gradient checkpointing on the training view,
    then `export_drafter` writes the adapter and LLaDA-named merged weights that decode to the trained logits."""
    from functools import partial

    import lightning as L
    from peft import LoraConfig, PeftModel
    from torch.utils.data import DataLoader

    from specdiff2.data.windows import Trajectory, WindowCollator, window_offsets
    from specdiff2.losses import LossMix
    from specdiff2.training.export import export_drafter
    from specdiff2.training.module import DistillModule

    source, gamma = Path(llada_family.llada), 4
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"])
    module = DistillModule(str(source), LossMix({"streak": 1.0}), partial(torch.optim.AdamW, lr=1e-2), lora=lora,
                           shifted=False, mask_token_id=RL.LLADA_MASK, gradient_checkpointing=True)
    traj = Trajectory(torch.randint(3, 300, (32,), generator=torch.Generator().manual_seed(1)), 6)
    windows = [[(0, o)] for o in window_offsets(traj.prompt_len, len(traj.tokens), gamma, 2, 64)]
    collate = WindowCollator([traj], gamma, RL.LLADA_MASK, shifted=False, row_tokens=128)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(windows, batch_size=4, collate_fn=lambda g: collate(g)))
    assert module.drafter.base_model.model.is_gradient_checkpointing
    paths = export_drafter(module, tmp_path / "export", source)
    assert _tensor_names(paths["drafter"]) == _tensor_names(source)
    before, _ = load_transformer(source)
    after, _ = load_transformer(paths["drafter"])
    assert not torch.equal(after.model.layers[0].self_attn.q_proj.weight, before.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(after.model.norm.weight, before.model.norm.weight)  # not a LoRA target: untouched
    ids, mask = _ids(), _masks(10)["bidirectional"]
    merged = module.drafter.eval()  # merged in place by the export
    torch.testing.assert_close(_logits(after, ids, mask), _logits(merged, ids, mask), rtol=1e-5, atol=1e-5)
    adapted = PeftModel.from_pretrained(load_hf_drafter(source), str(paths["adapter"])).eval()
    with torch.no_grad():
        adapter_logits = adapted(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(adapter_logits, _logits(merged, ids, mask), rtol=1e-4, atol=1e-4)
