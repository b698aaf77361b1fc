"""The one table of weight dtypes a config may name (verifier.dtype, drafter.dtype, data.generation.dtype)."""

from __future__ import annotations

import torch

from specdiff2.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = tuple(DTYPES)


def check_dtype(name: str, key: str = "dtype") -> str:
    """`name` if it is in the table, else one ConfigError line naming the config `key` and the choices."""
    if name not in DTYPES:
        raise ConfigError(f"{key}={name!r} is not a supported dtype; use one of {', '.join(DTYPE_NAMES)}")
    return name


def torch_dtype(name: str, key: str = "dtype") -> torch.dtype:
    """The torch dtype of a config name ("bfloat16" -> torch.bfloat16); one clear line for any other name."""
    return DTYPES[check_dtype(name, key)]
