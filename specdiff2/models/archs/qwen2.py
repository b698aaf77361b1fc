"""Qwen2 / Qwen2.5 (verifiers, the 0.5B AR drafter): the Transformer's own names, biased q/k/v, tied small models."""

from specdiff2.models.archs.base import Arch, hf_decoder_args

ARCH = Arch("qwen2", lambda cfg: hf_decoder_args(cfg, "qwen2", qkv_bias=True))
