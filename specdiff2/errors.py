"""User-facing errors: one line that names the problem and the fix.

Library code raises `SpecDiffError` (or a subclass) for bad input; the entry points
(`train.py`, `decode.py`) catch it and print exactly one line, never a traceback.
"""


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
