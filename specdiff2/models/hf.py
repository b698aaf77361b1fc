"""Hugging Face Qwen2 view of a diffusion drafter checkpoint, for training (PEFT needs HF module names).

Dream, DiffuCoder and the pocket drafter store plain Qwen2 weights under config.json model_type "Dream"
(plus mask_token_id and, for the hub models, remote code). We load those weights into transformers'
`Qwen2ForCausalLM`, whose linear layers carry the names LoRA targets (q_proj, ..., down_proj). The causal mask
is not part of the weights: callers get bidirectional attention by passing a 4D bool mask (B, 1, L, L),
True = may attend, which transformers 5 uses as-is. `save_hf_drafter` writes the original layout back, so the
decode engine (`load_transformer`) and the hub model's own code read the result like the source checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from specdiff2.errors import CheckpointError
from specdiff2.models.checkpoint import check_finite, read_config
from specdiff2.models.tokenizer import copy_tokenizer_files, tokenizer_files
from specdiff2.models.transformer import ModelArgs

# config.json fields Qwen2Config understands; Dream-only fields (mask_token_id, auto_map, ...) stay behind.
_QWEN2_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
    "rms_norm_eps", "tie_word_embeddings", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id",
)


def hf_qwen2_config(source: dict):
    """Qwen2Config with the architecture of a Dream-layout (or qwen2) config.json dict."""
    from transformers import Qwen2Config

    kind = str(source.get("model_type", "")).lower()
    if kind not in ("dream", "qwen2"):
        raise CheckpointError(f"model_type {source.get('model_type')!r} cannot be trained as a Qwen2 drafter; "
                              "pass a Dream, DiffuCoder or Qwen2 checkpoint")
    args = ModelArgs.from_hf_config(source)  # refuses rope scaling, sliding window, non-silu: one clear line
    fields = {k: source[k] for k in _QWEN2_FIELDS if source.get(k) is not None}
    fields["rope_parameters"] = {"rope_type": "default", "rope_theta": args.rope_theta}
    return Qwen2Config(**fields, use_cache=False, use_sliding_window=False)


def load_hf_drafter(path: str | Path, dtype: torch.dtype = torch.float32):
    """`Qwen2ForCausalLM` holding the weights of a Dream-layout or qwen2 checkpoint directory (safetensors).

    Attention is SDPA; the model is causal unless the caller passes a 4D bool attention mask (B, 1, L, L).
    """
    from transformers import Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    root = Path(path)
    config = hf_qwen2_config(read_config(root))
    if not any(root.glob("*.safetensors")):
        raise CheckpointError(f"{root} has no *.safetensors weights; pass a Hugging Face directory with safetensors")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "Dream config into a qwen2 model" notice is expected here
    hf_logging.disable_progress_bar()
    try:
        model = Qwen2ForCausalLM.from_pretrained(str(root), config=config, dtype=dtype, attn_implementation="sdpa")
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    check_finite(model.named_parameters(), root)
    return model


def save_hf_drafter(model, out_dir: str | Path, tokenizer=None, source_config: dict | None = None,
                    source_dir: str | Path | None = None) -> Path:
    """Write `model` (a plain Qwen2ForCausalLM: merge LoRA first) as a checkpoint in the source layout.

    config.json is `source_config` (model_type "Dream", mask_token_id, auto_map, ... preserved) with only the
    dtype updated; with `source_dir`, its tokenizer files are copied as downloaded (one TokenizerError line when it
    has none: an export without them cannot be decoded) and its remote-code *.py files too, so hub loaders still work.
    `tokenizer` (saved with save_pretrained) is for sources without a directory.
    """
    out = Path(out_dir)
    check_finite(model.named_parameters(), f"the drafter to write to {out}")  # never export a diverged model
    if source_dir is not None:
        tokenizer_files(source_dir)  # before anything is written: an export without its tokenizer cannot decode
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    if source_config is not None:
        config = dict(source_config)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
        tmp = out / "config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, out / "config.json")
    if source_dir is not None:
        copy_tokenizer_files(source_dir, out)
        for file in Path(source_dir).glob("*.py"):
            shutil.copy2(file, out / file.name)
    elif tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
