"""Checkpoint families -> the one fast `Transformer`. Adding a family = one module here + one `ARCHS` entry.

Each `Arch` maps config.json onto ModelArgs fields and the checkpoint's tensor names onto Transformer's
(Hugging Face Qwen2 names), and says which diffusion conventions (logit shift, bidirectional) the family has.
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
