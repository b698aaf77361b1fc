"""LLaMA and Mistral: Qwen2 names without q/k/v bias (`attention_bias` puts one on q/k/v/o); Mistral's window."""

from specdiff2.models.archs.base import Arch, hf_decoder_args


def _llama(cfg: dict) -> dict:
    bias = bool(cfg.get("attention_bias", False))
    return hf_decoder_args(cfg, "llama", qkv_bias=bias, o_bias=bias)


def _mistral(cfg: dict) -> dict:
    return {**hf_decoder_args(cfg, "mistral", qkv_bias=False), "sliding_window": cfg.get("sliding_window")}


ARCH = Arch("llama", _llama)
MISTRAL = Arch("mistral", _mistral)
