"""Where a model's weights live: a local Hugging Face directory, or a pocket model built on demand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specdiff2.errors import CheckpointError, ConfigError
from specdiff2.models.dtypes import check_dtype


@dataclass
class CheckpointRef:
    role: str  # "verifier", "drafter" or "ar_drafter": used in messages
    path: str  # local directory (config.json + safetensors); a hub id is only a hint of what to download
    pocket: bool = False  # built by the pocket world when missing
    dtype: str = "float32"
    logit_shift: bool | None = None  # diffusion drafters: logits at i−1 predict i (Dream/DiffuCoder)
    mask_token_id: int | None = None  # diffusion drafters: None → read from the checkpoint/tokenizer

    def __post_init__(self):
        check_dtype(self.dtype, f"{self.role}.dtype")
        if self.logit_shift is not None and not isinstance(self.logit_shift, bool):
            raise ConfigError(f"{self.role}.logit_shift={self.logit_shift!r}; set true (Dream/DiffuCoder) or false "
                              "(LLaDA)")

    def resolve(self) -> Path:
        """The checkpoint directory, or one clear error saying what to download and where to point."""
        p = Path(self.path)
        if (p / "config.json").is_file():
            return p
        if p.exists():
            raise CheckpointError(f"{self.role} checkpoint dir {p} has no config.json; "
                                  f"pass {self.role}.path=DIR holding config.json + *.safetensors")
        looks_like_hub_id = self.path.count("/") == 1 and not p.is_absolute() and not self.path.startswith(".")
        if looks_like_hub_id:
            raise CheckpointError(
                f"{self.role} weights {self.path!r} are not on this machine (no hub access at run time); "
                f"download them (huggingface-cli download {self.path} --local-dir DIR) and pass {self.role}.path=DIR"
            )
        raise CheckpointError(f"{self.role} checkpoint dir {p} does not exist; pass {self.role}.path=DIR "
                              "holding config.json + *.safetensors")
