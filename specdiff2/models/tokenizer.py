"""Loading a Hugging Face tokenizer directory (real checkpoints and pocket models alike), no remote code."""

from __future__ import annotations

from pathlib import Path

from specdiff2.errors import TokenizerError


def load_tokenizer(path: str | Path, require_mask: bool = False):
    """Load a tokenizer directory; a diffusion drafter's tokenizer must define a mask token."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        raise TokenizerError(f"no tokenizer files in {path}; pass a directory written by save_pretrained")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a Dream-layout config.json is unknown to transformers: harmless here
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    finally:
        hf_logging.set_verbosity(verbosity)
    if tok.eos_token_id is None:
        raise TokenizerError(f"tokenizer at {path} has no eos token; set eos_token in its tokenizer_config.json")
    if require_mask and tok.mask_token_id is None:
        raise TokenizerError(
            f"tokenizer at {path} has no mask token, which a diffusion drafter needs; "
            "add mask_token to its tokenizer_config.json (Dream/DiffuCoder: <|mask|>)"
        )
    return tok
