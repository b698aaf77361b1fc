"""Qwen2 / Qwen2.5 (verifiers, the 0.5B AR drafter): the Transformer's own names, biased q/k/v, tied small models.

Trained as transformers' `Qwen2ForCausalLM` (Dream and the pocket drafter too: the same weights and names).
"""

from specdiff2.models.archs.base import Arch, Training, hf_decoder_args, rope_theta

# config.json fields Qwen2Config understands; Dream-only fields (mask_token_id, auto_map, ...) stay behind.
# pad_token_id matters to training: the embedding row of the pad id gets no gradient in transformers' model.
_QWEN2_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
    "rms_norm_eps", "tie_word_embeddings", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id",
)


def hf_config(source: dict):
    """Qwen2Config with the architecture of a qwen2 or Dream-layout config.json dict."""
    from transformers import Qwen2Config

    fields = {k: source[k] for k in _QWEN2_FIELDS if source.get(k) is not None}
    fields["rope_parameters"] = {"rope_type": "default", "rope_theta": rope_theta(source)}
    return Qwen2Config(**fields, use_cache=False, use_sliding_window=False)


TRAINING = Training("Qwen2ForCausalLM", hf_config)
ARCH = Arch("qwen2", lambda cfg: hf_decoder_args(cfg, "qwen2", qkv_bias=True), training=TRAINING)
