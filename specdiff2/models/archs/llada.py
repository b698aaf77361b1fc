"""LLaDA-8B (model_type "llada", OLMo-style config and names): LLaMA maths, bidirectional, logits NOT shifted.

Names (LLaDAModelLM, block_type "llama"): model.transformer.wte (embedding), .blocks.N.{attn_norm, q_proj, k_proj,
v_proj, attn_out, ff_norm, ff_proj (SiLU gate), up_proj, ff_out (down)}, .ln_f, .ff_out (head; absent when
weight_tying). Head dim = d_model / n_heads; MLP width mlp_hidden_size (else mlp_ratio·d_model); embedding rows
embedding_size (else vocab_size). Mask id 126336 (config.json mask_token_id).

Trained as transformers' `LlamaForCausalLM` (no remote code): the same maths under LLaMA names, with a 4D
bidirectional mask; exports get LLaDA's names and config.json back, so its own modelling code still loads them. A
LoRA adapter is keyed to the LLaMA names (it loads onto the training view, not onto LLaDA's remote code). The
embedding has no padding row, as in LLaDA's code: no pad id reaches the config.
"""

from __future__ import annotations

import re

from specdiff2.errors import CheckpointError
from specdiff2.models.archs.base import Arch, Training, field, llama_training_kwargs, refuse, rope_theta

_BLOCK = {
    "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj",
}
_TOP = {"wte": "model.embed_tokens", "ln_f": "model.norm", "ff_out": "lm_head"}
_NAME = re.compile(r"model\.transformer\.(?:blocks\.(\d+)\.)?(\w+)\.(weight|bias)$")
_BLOCK_BACK, _TOP_BACK = {v: k for k, v in _BLOCK.items()}, {v: k for k, v in _TOP.items()}
_OURS = re.compile(r"(?:model\.layers\.(\d+)\.)?([\w.]+)\.(weight|bias)$")

_FIX = "this LLaDA variant is not supported; use LLaDA-8B(-Base/-Instruct) or extend specdiff2/models/archs/llada.py"
_CHECKS = {
    "block_type": ("llama", _FIX), "activation_type": ("silu", _FIX), "layer_norm_type": ("rms", _FIX),
    "alibi": (False, _FIX), "rope": (True, _FIX), "attention_layer_norm": (False, _FIX),
    "input_emb_norm": (False, _FIX), "scale_logits": (False, _FIX), "include_bias": (False, _FIX),
    "bias_for_layer_norm": (False, _FIX), "layer_norm_with_affine": (True, _FIX), "block_group_size": (1, _FIX),
    "multi_query_attention": (False, _FIX),
}


def _model_args(cfg: dict) -> dict:
    refuse(cfg, "llada", _CHECKS)
    hidden, heads = field(cfg, "d_model"), field(cfg, "n_heads")
    if hidden % heads:
        raise CheckpointError(f"llada config.json d_model {hidden} is not a multiple of n_heads {heads}; "
                              "restore the original config.json")
    mlp = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4) * hidden)
    bias = bool(cfg.get("include_qkv_bias", False))
    return dict(
        vocab_size=cfg.get("embedding_size") or field(cfg, "vocab_size"),  # rows of wte / ff_out
        hidden_size=hidden, intermediate_size=mlp, num_layers=field(cfg, "n_layers"), num_heads=heads,
        num_kv_heads=cfg.get("n_kv_heads") or heads, head_dim=hidden // heads, rope_theta=rope_theta(cfg),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)), qkv_bias=bias, o_bias=False,
        tie_word_embeddings=bool(cfg.get("weight_tying", False)),
        max_position_embeddings=int(cfg.get("max_sequence_length", 4096)),
    )


def _tensor_name(key: str) -> str | None:
    match = _NAME.match(key)
    if match is None:
        return key  # left as is: the strict key check names it in one line
    block, module, kind = match.groups()
    if block is None:
        return f"{_TOP[module]}.{kind}" if module in _TOP else key
    return f"model.layers.{block}.{_BLOCK[module]}.{kind}" if module in _BLOCK else key


def _source_name(key: str) -> str:
    """_tensor_name's inverse: Transformer / LLaMA name -> LLaDA's."""
    match = _OURS.match(key)
    if match is None:
        return key
    block, module, kind = match.groups()
    if block is None:
        return f"model.transformer.{_TOP_BACK[module]}.{kind}" if module in _TOP_BACK else key
    return f"model.transformer.blocks.{block}.{_BLOCK_BACK[module]}.{kind}" if module in _BLOCK_BACK else key


def _hf_config(cfg: dict):
    from transformers import LlamaConfig

    ids = {k: cfg[k] for k in ("bos_token_id", "eos_token_id") if cfg.get(k) is not None}
    return LlamaConfig(**llama_training_kwargs(_model_args(cfg), "llada"), **ids)


ARCH = Arch("llada", _model_args, _tensor_name, logit_shift=False, bidirectional=True,
            training=Training("LlamaForCausalLM", _hf_config), source_name=_source_name)
