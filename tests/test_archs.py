"""Per-family config and tensor-name mapping (specdiff2/models/archs/) on the real 7-8B config.json values."""

import pytest

from specdiff2.errors import CheckpointError
from specdiff2.models.archs import ARCHS, arch_for
from specdiff2.models.config import ModelArgs
from tests.real_layouts import llada_config

DREAM_7B = {"architectures": ["DreamModel"], "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
            "mask_token_id": 151666, "max_position_embeddings": 131072, "model_type": "Dream",
            "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
            "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
            "use_sliding_window": False, "vocab_size": 152064}
LLADA_8B = {**llada_config(), "d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32,
            "mlp_hidden_size": 12288, "max_sequence_length": 4096}


def test_llada_training_view_is_llama_with_llada_names_back():
    from specdiff2.models.hf import hf_config, hf_model_class

    config = hf_config(LLADA_8B)
    assert hf_model_class(LLADA_8B).__name__ == "LlamaForCausalLM" and config.model_type == "llama"
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.head_dim) == (4096, 12288,
                                                                                                         32, 128)
    assert config.pad_token_id is None and not config.attention_bias and not config.tie_word_embeddings
    assert config.rope_parameters["rope_theta"] == 500000.0
    arch = ARCHS["llada"]
    for name in ("model.transformer.wte.weight", "model.transformer.ff_out.weight", "model.transformer.ln_f.weight",
                 "model.transformer.blocks.3.ff_out.weight", "model.transformer.blocks.3.attn_out.weight",
                 "model.transformer.blocks.11.q_proj.bias"):
        assert arch.source_name(arch.tensor_name(name)) == name


def test_llada_with_qkv_bias_cannot_be_trained_as_llama_in_one_line():
    from specdiff2.models.hf import hf_config

    with pytest.raises(CheckpointError, match="llada with q/k/v biases but no o_proj bias cannot be trained") as err:
        hf_config({**LLADA_8B, "include_qkv_bias": True})
    assert "\n" not in str(err.value)
    assert ModelArgs.from_hf_config({**LLADA_8B, "include_qkv_bias": True}).qkv_bias  # it still decodes


def test_every_family_is_registered_and_unknown_ones_are_one_line():
    assert set(ARCHS) == {"qwen2", "llama", "mistral", "dream", "llada"}
    assert arch_for({"model_type": "Dream"}) is ARCHS["dream"] and arch_for({"model_type": "LLaDA"}) is ARCHS["llada"]
    with pytest.raises(CheckpointError, match="unsupported model_type 'gemma'.*llada") as err:
        arch_for({"model_type": "gemma"})
    assert "\n" not in str(err.value)


def test_dream_7b_config():
    args = ModelArgs.from_hf_config(DREAM_7B)
    assert (args.vocab_size, args.hidden_size, args.num_heads, args.num_kv_heads, args.head_dim) == (152064, 3584, 28,
                                                                                                     4, 128)
    assert args.qkv_bias and not args.o_bias and args.rope_theta == 1e6
    assert ARCHS["dream"].logit_shift and ARCHS["dream"].bidirectional


def test_llada_8b_config_and_names():
    args = ModelArgs.from_hf_config(LLADA_8B)
    assert (args.vocab_size, args.hidden_size, args.intermediate_size, args.num_layers) == (126464, 4096, 12288, 32)
    assert (args.num_heads, args.num_kv_heads, args.head_dim) == (32, 32, 128)
    assert not args.qkv_bias and not args.tie_word_embeddings and args.rope_theta == 500000.0
    arch = ARCHS["llada"]
    assert not arch.logit_shift and arch.bidirectional
    rename = arch.tensor_name
    assert rename("model.transformer.wte.weight") == "model.embed_tokens.weight"
    assert rename("model.transformer.ff_out.weight") == "lm_head.weight"
    assert rename("model.transformer.ln_f.weight") == "model.norm.weight"
    expected = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm", "q_proj": "self_attn.q_proj",
                "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
                "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj"}
    for theirs, ours in expected.items():
        assert rename(f"model.transformer.blocks.7.{theirs}.weight") == f"model.layers.7.{ours}.weight"
    assert rename("model.transformer.blocks.0.att_proj.weight") == "model.transformer.blocks.0.att_proj.weight"


@pytest.mark.parametrize("key,value", [("block_type", "sequential"), ("scale_logits", True), ("alibi", True),
                                       ("attention_layer_norm", True), ("activation_type", "gelu"),
                                       ("block_group_size", 2), ("input_emb_norm", True)])
def test_llada_variants_it_would_get_wrong_are_refused(key, value):
    with pytest.raises(CheckpointError, match=f"llada config.json {key}=") as err:
        ModelArgs.from_hf_config({**LLADA_8B, key: value})
    assert "\n" not in str(err.value)
