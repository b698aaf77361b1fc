"""The training view of a checkpoint: the transformers class its family names (models/archs/), for training.

PEFT, gradient checkpointing and ZeRO-3 act on that class (why not on `Transformer`: models/archs/__init__.py).
Weights are read by the decode loader's own reader under the family's `tensor_name`, so training starts from exactly
the tensors decoding uses, whatever names the checkpoint stores them under (Dream's are Qwen2's, LLaDA's its own).
The causal mask is not part of the weights: callers get bidirectional attention by passing a 4D bool mask
(B, 1, L, L), True = may attend, which transformers 5 uses as-is. `save_hf_drafter` writes the source layout back
(`source_name`, source config.json), so the decode engine (`load_transformer`) and the hub model's own code read
the result like the source checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from specdiff2.errors import CheckpointError
from specdiff2.models.archs import arch_for, trainable_arch
from specdiff2.models.checkpoint import check_finite, read_config, read_weights
from specdiff2.models.tokenizer import copy_tokenizer_files, tokenizer_files


def hf_config(source: dict):
    """The transformers config of the training view of a config.json dict (one line when it has none)."""
    return trainable_arch(source).training.config(source)


def hf_model_class(source: dict) -> type:
    """The transformers class a config.json dict's family is trained as."""
    import transformers

    return getattr(transformers, trainable_arch(source).training.model_class)


def load_hf_drafter(path: str | Path, dtype: torch.dtype = torch.float32):
    """The training-view model (e.g. `Qwen2ForCausalLM`) holding the weights of a checkpoint directory.

    Attention is SDPA; the model is causal unless the caller passes a 4D bool attention mask (B, 1, L, L). Returned
    in eval mode, as from_pretrained returns it.
    """
    from transformers.utils import logging as hf_logging

    root = Path(path)
    source = read_config(root)
    arch = trainable_arch(source)
    config = arch.training.config(source)  # refusals before any weight is read
    state = read_weights(root, dtype, "cpu", arch.tensor_name)
    check_finite(state.items(), root)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "Dream config into a qwen2 model" notice is expected here
    hf_logging.disable_progress_bar()
    try:
        model, info = hf_model_class(source).from_pretrained(
            None, config=config, state_dict=state, dtype=dtype, attn_implementation="sdpa", output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    _check_loaded(info, root)
    return model


def _check_loaded(info: dict, root: Path) -> None:
    """One line when the weights and the class disagree: never train from randomly initialised tensors."""
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info["mismatched_keys"])
    if missing or unexpected or mismatched:
        first = (missing or unexpected or mismatched)[0]
        raise CheckpointError(f"weights in {root} do not match config.json (missing {len(missing)}, unexpected "
                              f"{len(unexpected)}, wrong shape {len(mismatched)}; first: {first}); "
                              "check that config.json belongs to these weights")


def source_state_dict(model, source_config: dict) -> dict[str, torch.Tensor]:
    """`model`'s tensors under the checkpoint family's own names (the tied head left out, as the hub stores it)."""
    arch = arch_for(source_config)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return {arch.source_name(k): v for k, v in state.items()}


def save_hf_drafter(model, out_dir: str | Path, tokenizer=None, source_config: dict | None = None,
                    source_dir: str | Path | None = None) -> Path:
    """Write `model` (a plain training-view model: merge LoRA first) as a checkpoint in the source layout.

    Tensor names are the family's (`source_name`) and config.json is `source_config` (model_type "Dream",
    mask_token_id, auto_map, ... preserved) with only the dtype updated; without `source_config`, the model's own
    names and config. With `source_dir`, its tokenizer files are copied as downloaded (one TokenizerError line when
    it has none: an export without them cannot be decoded) and its remote-code *.py files too, so hub loaders still
    work. `tokenizer` (saved with save_pretrained) is for sources without a directory.
    """
    out = Path(out_dir)
    check_finite(model.named_parameters(), f"the drafter to write to {out}")  # never export a diverged model
    if source_dir is not None:
        tokenizer_files(source_dir)  # before anything is written: an export without its tokenizer cannot decode
    out.mkdir(parents=True, exist_ok=True)
    state = source_state_dict(model, source_config) if source_config is not None else None
    model.save_pretrained(str(out), state_dict=state)
    if source_config is not None:
        _write_source_config(model, out, source_config)
    if source_dir is not None:
        copy_tokenizer_files(source_dir, out)
        for file in Path(source_dir).glob("*.py"):
            shutil.copy2(file, out / file.name)
    elif tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def _write_source_config(model, out: Path, source_config: dict) -> None:
    config = dict(source_config)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    config["dtype"] = dtype
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, out / "config.json")
