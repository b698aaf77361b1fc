"""Model hyper-parameters of the one `Transformer`, read from a Hugging Face config.json through its family
(specdiff2/models/archs/: qwen2, llama, mistral, Dream, llada)."""

from __future__ import annotations

from dataclasses import dataclass

from specdiff2.models.archs import ARCHS, arch_for

SUPPORTED_MODEL_TYPES = tuple(a.name for a in ARCHS.values())


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
        """Read an HF config.json dict; refuse features this model would silently get wrong (one line)."""
        return cls(**arch_for(cfg).model_args(cfg))
