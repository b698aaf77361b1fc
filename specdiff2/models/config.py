"""Model hyper-parameters read from a Hugging Face config.json (Qwen2 / LLaMA / Mistral / Dream)."""

from __future__ import annotations

from dataclasses import dataclass

from specdiff2.errors import CheckpointError

# model_type (lower-cased) -> whether q/k/v projections carry a bias (LLaMA reads `attention_bias`).
_QKV_BIAS = {"qwen2": True, "dream": True, "mistral": False, "llama": False}
SUPPORTED_MODEL_TYPES = ("qwen2", "llama", "mistral", "Dream")


@dataclass
class ModelArgs:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    o_bias: bool = False  # LLaMA `attention_bias` also puts a bias on o_proj
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    sliding_window: int | None = None  # Mistral: attention is exact only up to this many tokens

    @classmethod
    def from_hf_config(cls, cfg: dict) -> ModelArgs:
        """Read an HF config.json dict; refuse features this model would silently get wrong."""
        model_type = str(cfg.get("model_type"))
        kind = model_type.lower()
        if kind not in _QKV_BIAS:
            raise CheckpointError(
                f"unsupported model_type {model_type!r} in config.json; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        _refuse_unsupported(cfg, model_type)
        heads, hidden = _field(cfg, "num_attention_heads"), _field(cfg, "hidden_size")
        llama_bias = kind == "llama" and bool(cfg.get("attention_bias", False))
        return cls(
            vocab_size=_field(cfg, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_field(cfg, "intermediate_size"),
            num_layers=_field(cfg, "num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or hidden // heads,
            rope_theta=_rope_theta(cfg),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            qkv_bias=_QKV_BIAS[kind] or llama_bias,
            o_bias=llama_bias,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
            sliding_window=cfg.get("sliding_window") if kind == "mistral" else None,
        )


def _field(cfg: dict, name: str):
    if cfg.get(name) is None:
        raise CheckpointError(f"config.json lacks {name!r}; pass an unmodified Hugging Face config.json")
    return cfg[name]


def _refuse_unsupported(cfg: dict, model_type: str) -> None:
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(
            f"hidden_act {act!r} is not supported (only silu); use a {model_type} checkpoint with silu"
        )
    if cfg.get("use_sliding_window"):
        raise CheckpointError(
            "use_sliding_window=true is not supported; set it to false in config.json if the model allows"
        )
    if cfg.get("mlp_bias"):
        raise CheckpointError("mlp_bias=true is not supported; use a checkpoint without MLP biases")


def _rope_theta(cfg: dict) -> float:
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
