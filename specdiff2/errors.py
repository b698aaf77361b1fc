"""User-facing errors: one line that names the problem and the fix.

Library code raises `SpecDiffError` (or a subclass) for bad input; the entry points
(`train.py`, `decode.py`) catch it and print exactly one line, never a traceback.
"""

import math


class SpecDiffError(Exception):
    """Bad input or environment. The message is one line: what is wrong, then how to fix it."""


class ConfigError(SpecDiffError):
    """A configuration value is invalid."""


class CheckpointError(SpecDiffError):
    """A checkpoint directory is missing or malformed."""


class DataError(SpecDiffError):
    """A corpus, prompt file or trajectory store is missing or malformed."""


class TrainingError(SpecDiffError):
    """Training cannot go on (e.g. a non-finite loss): the line names the step and what to change."""


class TokenizerError(SpecDiffError):
    """A tokenizer lacks a required token or disagrees with another tokenizer."""


def require(condition: bool, message: str, error: type[SpecDiffError] = ConfigError) -> None:
    """Raise `error(message)` when `condition` is false (bad-input guard, not an assert)."""
    if not condition:
        raise error(message)


def is_int(value, minimum: int | None = None) -> bool:
    """A config integer: bool is refused (YAML `true` is an int subclass in Python)."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_real(value, minimum: float | None = None, exclusive: bool = False) -> bool:
    """A finite config number (int or float, not bool), optionally >= minimum (> with exclusive)."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or not math.isfinite(value):
        return False
    return minimum is None or (value > minimum if exclusive else value >= minimum)
