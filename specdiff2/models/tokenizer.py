"""Loading a Hugging Face tokenizer directory (real checkpoints and pocket models alike), never remote code.

Hub repos whose tokenizer is remote code (`auto_map` in tokenizer_config.json) are loaded through the built-in class
that reads the same files (Dream/DiffuCoder's `DreamTokenizer` is Qwen2's byte-level BPE: vocab.json + merges.txt
+ the added tokens of tokenizer_config.json). Any other remote-code tokenizer is refused in one line; transformers
is always called with trust_remote_code=False, so it never asks [y/N].
"""

from __future__ import annotations

import json
from pathlib import Path

from specdiff2.errors import TokenizerError

# Remote-code tokenizer class -> the built-in transformers class that reads the same files identically.
BUILTIN_EQUIVALENT = {"DreamTokenizer": "Qwen2Tokenizer"}
# Files a tokenizer directory may hold; copied with an exported drafter.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json")


def _json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text()) if file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TokenizerError(f"{file} is not valid JSON ({err}); restore the original file") from None
    return data if isinstance(data, dict) else {}


def _tokenizer_class(path: Path):
    """The transformers class to load `path` with (None: AutoTokenizer), or one line when it needs remote code."""
    import transformers

    config = _json(path / "tokenizer_config.json")
    name = config.get("tokenizer_class")
    name = BUILTIN_EQUIVALENT.get(name, name)
    if isinstance(name, str) and isinstance(getattr(transformers, name, None), type):
        return getattr(transformers, name)
    remote = (config.get("auto_map") or {}).get("AutoTokenizer")
    if remote:
        raise TokenizerError(
            f"tokenizer at {path} is remote code ({remote}), which specdiff2 never runs; if its files are a standard "
            "format, set \"tokenizer_class\" in its tokenizer_config.json to the built-in class that reads them "
            "(e.g. Qwen2Tokenizer, LlamaTokenizerFast, PreTrainedTokenizerFast), or add the mapping to "
            "specdiff2/models/tokenizer.py BUILTIN_EQUIVALENT")
    return None


def generation_stop_ids(path: str | Path) -> list[int]:
    """Extra stop ids of generation_config.json (`eos_token_id`, an int or a list; Qwen2.5-Instruct: [151645, 151643])."""
    eos = _json(Path(path) / "generation_config.json").get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos]
    return [int(i) for i in ids if isinstance(i, int)]


def stop_ids(tokenizer) -> set[int]:
    """Ids that end a generation: the tokenizer's EOS and generation_config.json's (set by `load_tokenizer`)."""
    ids = set(getattr(tokenizer, "generation_stop_ids", None) or [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def load_tokenizer(path: str | Path, require_mask: bool = False):
    """Load a tokenizer directory (no remote code); a diffusion drafter's tokenizer must define a mask token.

    The returned tokenizer carries `generation_stop_ids` (generation_config.json's eos ids, see `stop_ids`).
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = Path(path)
    if not (path / "tokenizer_config.json").exists() and not (path / "tokenizer.json").exists():
        raise TokenizerError(f"no tokenizer files in {path}; pass a directory written by save_pretrained")
    cls = _tokenizer_class(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "DreamTokenizer loaded as Qwen2Tokenizer", Dream config.json: expected here
    try:
        tok = (cls or AutoTokenizer).from_pretrained(str(path), trust_remote_code=False)
    except ValueError as err:  # AutoTokenizer without a class it knows: remote code or an unknown format
        raise TokenizerError(f"cannot load the tokenizer at {path} without remote code "
                             f"({str(err).splitlines()[0]}); set tokenizer_class in its tokenizer_config.json") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tok.eos_token_id is None:
        raise TokenizerError(f"tokenizer at {path} has no eos token; set eos_token in its tokenizer_config.json")
    if require_mask and tok.mask_token_id is None:
        raise TokenizerError(
            f"tokenizer at {path} has no mask token, which a diffusion drafter needs; "
            "add mask_token to its tokenizer_config.json (Dream/DiffuCoder: <|mask|>) or set drafter.mask_token_id"
        )
    tok.generation_stop_ids = generation_stop_ids(path)
    return tok


def encode_prompt(tokenizer, text: str, chat_template: bool = False) -> list[int]:
    """Prompt ids: the raw text, or (chat_template) one user turn in the tokenizer's chat template plus the
    assistant header (Instruct verifiers are evaluated this way)."""
    if not chat_template:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if getattr(tokenizer, "chat_template", None) is None:
        raise TokenizerError(f"chat_template=true but the tokenizer {getattr(tokenizer, 'name_or_path', '')} has no "
                             "chat template; set data.chat_template=false (base models)")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return list(ids)


def tokenizer_files(source: str | Path) -> list[str]:
    """Names of the tokenizer files in a checkpoint directory; one line when it has none."""
    source = Path(source)
    names = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    if "tokenizer_config.json" not in names and "tokenizer.json" not in names:
        raise TokenizerError(f"no tokenizer files in {source} to export with the drafter; the drafter directory "
                             "must hold its tokenizer (tokenizer_config.json / tokenizer.json)")
    return names


def copy_tokenizer_files(source: str | Path, out: str | Path) -> list[str]:
    """Copy a checkpoint's tokenizer files (as downloaded: remote-code layouts stay as they are) to `out`."""
    import shutil

    source, out = Path(source), Path(out)
    names = tokenizer_files(source)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(source / name, out / name)
    return names
