"""What a checkpoint family is to this framework: how its config.json and tensor names map onto `Transformer`
for decoding, and which transformers class it is trained as.

`Transformer` (models/transformer.py) and the transformers classes of the training views use the same Hugging Face
Qwen2/LLaMA parameter names; a family whose checkpoints use other names (LLaDA) renames them on the way in
(`tensor_name`) and back on export (`source_name`). Fields common to several families are read here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from specdiff2.errors import CheckpointError


def same_name(key: str) -> str:
    """The rename of a family whose checkpoints already use the Hugging Face Qwen2/LLaMA names."""
    return key


@dataclass(frozen=True)
class Training:
    """How a family is trained: as a transformers class whose parameter names are `Transformer`'s.

    That class brings what training needs and the inference `Transformer` does not have: module names PEFT targets
    and adapters the hub model loads, gradient checkpointing, ZeRO-3 construction. `config` builds its config from
    the checkpoint's config.json, after the family's `model_args` has refused what decoding would get wrong.
    """
    model_class: str  # a class of the `transformers` package, e.g. "Qwen2ForCausalLM"
    config: Callable[[dict], Any]  # config.json dict -> that class's config object


@dataclass(frozen=True)
class Arch:
    name: str  # the config.json model_type, as the hub writes it
    model_args: Callable[[dict], dict]  # config.json dict -> ModelArgs keyword arguments
    tensor_name: Callable[[str], str | None] = same_name  # checkpoint name -> Transformer name (None: skip)
    logit_shift: bool = False  # diffusion drafters: logits at i−1 predict token i (Dream) or at i (LLaDA)
    bidirectional: bool = False  # trained without a causal mask (diffusion drafters)
    training: Training | None = None  # None: decode only (training it is refused in one line)
    source_name: Callable[[str], str] = same_name  # Transformer name -> checkpoint name: tensor_name's inverse


def field(cfg: dict, name: str):
    if cfg.get(name) is None:
        raise CheckpointError(f"config.json lacks {name!r}; pass an unmodified Hugging Face config.json")
    return cfg[name]


def refuse(cfg: dict, model_type: str, checks: dict[str, tuple[object, str]]) -> None:
    """One line for the first config value this model would get silently wrong: {key: (supported value, fix)}."""
    for key, (ok, fix) in checks.items():
        value = cfg.get(key, ok)
        if value != ok and value is not None:
            raise CheckpointError(f"{model_type} config.json {key}={value!r} is not supported ({ok!r} only); {fix}")


def rope_theta(cfg: dict) -> float:
    """Theta of default RoPE, from `rope_parameters` (transformers 5) or top level (transformers 4)."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(
            f"RoPE type {rope_type!r} is not supported (only default RoPE); "
            "use a checkpoint without rope scaling or add the scaling to specdiff2/models/transformer.py"
        )
    theta = params.get("rope_theta", cfg.get("rope_theta"))
    return float(theta) if theta is not None else 10000.0


def hf_decoder_args(cfg: dict, model_type: str, qkv_bias: bool, o_bias: bool = False) -> dict:
    """ModelArgs fields of a transformers-style decoder config (Qwen2, LLaMA, Mistral, Dream)."""
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"hidden_act {cfg['hidden_act']!r} is not supported (only silu); "
                              f"use a {model_type} checkpoint with silu")
    if cfg.get("use_sliding_window"):
        raise CheckpointError("use_sliding_window=true is not supported; set it to false in config.json if the model "
                              "allows")
    if cfg.get("mlp_bias"):
        raise CheckpointError("mlp_bias=true is not supported; use a checkpoint without MLP biases")
    heads, hidden = field(cfg, "num_attention_heads"), field(cfg, "hidden_size")
    return dict(
        vocab_size=field(cfg, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=field(cfg, "intermediate_size"),
        num_layers=field(cfg, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or hidden // heads,
        rope_theta=rope_theta(cfg),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
    )


def llama_training_kwargs(args: dict, model_type: str) -> dict:
    """Keyword arguments of transformers' LlamaConfig for ModelArgs fields `args` (a family trained as LLaMA)."""
    if args["o_bias"] != args["qkv_bias"]:  # LlamaConfig's attention_bias puts a bias on q, k, v and o alike
        raise CheckpointError(f"{model_type} with q/k/v biases but no o_proj bias cannot be trained as LLaMA; "
                              "train a checkpoint without attention biases")
    if args.get("sliding_window"):
        raise CheckpointError(f"{model_type} sliding_window={args['sliding_window']} cannot be trained as LLaMA; "
                              "train a checkpoint without a sliding window")
    return {
        "vocab_size": args["vocab_size"], "hidden_size": args["hidden_size"],
        "intermediate_size": args["intermediate_size"], "num_hidden_layers": args["num_layers"],
        "num_attention_heads": args["num_heads"], "num_key_value_heads": args["num_kv_heads"],
        "head_dim": args["head_dim"], "hidden_act": "silu", "rms_norm_eps": args["rms_norm_eps"],
        "tie_word_embeddings": args["tie_word_embeddings"], "max_position_embeddings": args["max_position_embeddings"],
        "attention_bias": args["qkv_bias"], "mlp_bias": False, "use_cache": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": args["rope_theta"]},
    }
