"""Byte-level BPE tokenizer for the pocket world, saved as a Hugging Face tokenizer directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from specdiff2.errors import TokenizerError

EOS_TOKEN = "<|endoftext|>"
MASK_TOKEN = "<|mask|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOS_TOKEN, MASK_TOKEN, PAD_TOKEN]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train byte-level BPE on `texts` and save it loadable with `AutoTokenizer.from_pretrained`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise TokenizerError(f"vocab_size {vocab_size} cannot hold the 256 byte symbols; use vocab_size >= 512")
    tok = Tokenizer(models.BPE())
    # No prefix space: code must round-trip byte for byte, including leading indentation.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, mask_token=MASK_TOKEN
    )
    hf_tok.save_pretrained(str(out_dir))
    return hf_tok


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
