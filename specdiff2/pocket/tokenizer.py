"""Byte-level BPE tokenizer for the pocket world, saved as a Hugging Face tokenizer directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from specdiff2.errors import TokenizerError

EOS_TOKEN = "<|endoftext|>"
MASK_TOKEN = "<|mask|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOS_TOKEN, MASK_TOKEN, PAD_TOKEN]
# Qwen2's pre-tokenizer split: a newline ends the token before it (`):\n`, ` """\n`) or stands alone, never merging
# into the next line's indentation. With GPT-2's split "\n" merges into the indentation after it, so a prompt
# ending in "\n" (HumanEval's do) ends in a token seen in training only before unindented lines, and a small model
# answers with `#` or `def` at column 0.
SPLIT_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                 r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train byte-level BPE on `texts` and save it loadable with `AutoTokenizer.from_pretrained`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise TokenizerError(f"vocab_size {vocab_size} cannot hold the 256 byte symbols; use pocket.vocab_size >= 512")
    tok = Tokenizer(models.BPE())
    # No prefix space: code must round-trip byte for byte, including leading indentation.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
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
