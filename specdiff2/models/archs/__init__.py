"""Checkpoint families, for both sides: decoding on the one fast `Transformer`, training as a transformers class.

A family is one module here plus one `ARCHS` entry. Its `Arch` maps config.json onto ModelArgs fields and the
checkpoint's tensor names onto Transformer's (Hugging Face Qwen2/LLaMA names), says which diffusion conventions
(logit shift, bidirectional) it has, and, when it can be trained, its training view: the transformers class and
config to build (`Training`), with `source_name` renaming the trained tensors back to the checkpoint's own layout
on export. models/hf.py and training/export.py hold no family knowledge; models/checkpoint.py reads the weights of
both sides through the same `tensor_name`.

Why two model classes and not training `Transformer` directly (the one-class way of gpt-fast / nanochat / litgpt):
- `Transformer` is built for decoding: a static, position-indexed KV cache written inside `forward`, fused
  q/k/v and gate/up projections (`fuse`), capture in CUDA graphs. Training needs none of this and each piece
  would need a training-time twin.
- The transformers class brings what training needs, tested upstream: module names PEFT targets, and adapters
  that load with the hub model (vLLM and transformers users read them as is); `gradient_checkpointing_enable`;
  construction under DeepSpeed ZeRO-3; `get_decoder` / `get_output_embeddings`, which packed-window training uses.
  None of it has been shown on `Transformer` (it has no gradient checkpointing at all), and each would be ours to
  keep working.
- Behaviour: distillation exports are pinned byte for byte (same seed, same export). On the micro pocket drafter
  (fp32, CPU) the two forwards are bitwise equal but the backward is not (6 of 14 parameter gradients differ, by
  up to 3e-8), so training `Transformer` would change every export.
What keeps the two honest is one test over this registry (tests/test_families.py): for every trainable family, a
tiny checkpoint in its public layout gives the same logits through both classes, and its export reloads to the
same logits, in the source layout. So a new family, decoding and training, is one file here plus that test's
checkpoint writer.
"""

from __future__ import annotations

from specdiff2.errors import CheckpointError
from specdiff2.models.archs import dream, llada, llama, qwen2
from specdiff2.models.archs.base import Arch

ARCHS: dict[str, Arch] = {"qwen2": qwen2.ARCH, "llama": llama.ARCH, "mistral": llama.MISTRAL, "dream": dream.ARCH,
                          "llada": llada.ARCH}


def arch_for(config: dict) -> Arch:
    """The family of a config.json dict (model_type, case-insensitive), or one line naming the supported ones."""
    model_type = str(config.get("model_type"))
    arch = ARCHS.get(model_type.lower())
    if arch is None:
        names = ", ".join(a.name for a in ARCHS.values())
        raise CheckpointError(f"unsupported model_type {model_type!r} in config.json; supported: {names} "
                              "(a new family is one file in specdiff2/models/archs/)")
    return arch


def trainable_arch(config: dict) -> Arch:
    """The family of a config.json dict if it has a training view, else one line naming the trainable ones."""
    arch = arch_for(config)
    if arch.training is None:
        names = ", ".join(a.name for a in ARCHS.values() if a.training is not None)
        raise CheckpointError(f"model_type {arch.name!r} decodes but cannot be trained here; trainable: {names} "
                              f"(a family's training view is its `training` field in specdiff2/models/archs/)")
    arch.model_args(config)  # decoding's refusals (rope scaling, sliding window, non-silu, ...): one line
    return arch
