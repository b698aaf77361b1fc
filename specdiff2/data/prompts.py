"""Evaluation and trajectory prompts: HumanEval, GSM8K, Spec-Bench (read from ../shared/data), any JSONL, or the
held-out code set (signature + docstring prompts from packages the pocket corpus excludes; `data/heldout.py`)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from specdiff2.data.heldout import heldout_functions
from specdiff2.errors import ConfigError, DataError, is_int

# Spec-Bench's question.jsonl stores its MT-bench task under MT-bench's own 8 categories
MT_BENCH = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")

FILES = {
    "humaneval": "humaneval/HumanEval.jsonl.gz",
    "gsm8k": "gsm8k/test.jsonl",
    "spec_bench": "spec_bench/question.jsonl",
}


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    chat: bool = False  # encode as one user turn in the verifier's chat template (models.tokenizer.encode_prompt)


@dataclass
class PromptSource:
    """Which prompts to read. `name` is humaneval, gsm8k, spec_bench, jsonl (then `path` is required) or heldout
    (then `packages`, normally the pocket corpus's `heldout_packages`, and `roots`, its corpus roots)."""

    name: str = "humaneval"
    data_dir: str = "../shared/data"
    path: str | None = None
    limit: int | None = None
    offset: int = 0
    category: str | None = None  # Spec-Bench task (mt_bench, translation, summarization, qa, math_reasoning, rag)
    # or one of MT-bench's categories (writing, coding, ...)
    gsm8k_template: str = "Question: {question}\nAnswer:"
    packages: list[str] | None = None  # heldout: the packages held out of the corpus
    roots: list[str] | None = None  # heldout: where they are installed (None: this interpreter's)
    max_prompt_chars: int = 1200  # heldout: longer signature + docstring prompts are skipped
    chat_template: bool = False  # data.chat_template: Instruct verifiers see each prompt as a chat user turn

    def __post_init__(self):
        if not (self.limit is None or is_int(self.limit, 0)) or not is_int(self.offset, 0):
            raise ConfigError(f"data.prompts.limit={self.limit!r} / data.prompts.offset={self.offset!r}; set "
                              "integers >= 0 (limit null: every prompt)")


def _read_jsonl(path: Path) -> list[dict]:
    if path.is_dir():
        raise DataError(f"prompt file {path} is a directory; pass the .jsonl file inside it as "
                        "data.prompts.path=FILE.jsonl (with data=jsonl)")
    if not path.is_file():
        raise DataError(f"prompt file {path} not found; pass data=jsonl data.prompts.path=FILE.jsonl or fix paths.data_dir")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{n} is not valid JSON ({err.msg}); fix or remove that line") from None
    return rows


def _text_of(row: dict, path: Path, n: int) -> str:
    for key in ("prompt", "text", "question"):
        if isinstance(row.get(key), str):
            return row[key]
    if isinstance(row.get("turns"), list) and row["turns"]:
        return str(row["turns"][0])
    raise DataError(f"{path} row {n} has none of the fields prompt/text/question/turns; add one of them")


def _select(prompts: list[Prompt], source: PromptSource, where) -> list[Prompt]:
    end = None if source.limit is None else source.offset + source.limit
    prompts = [Prompt(p.id, p.text, source.chat_template) for p in prompts[source.offset:end]]
    if not prompts:
        raise DataError(f"no prompts selected from {where} (offset {source.offset}, limit {source.limit}, "
                        f"category {source.category}); widen the selection")
    return prompts


def _spec_bench_task(rows: list[dict], category: str, path: Path) -> list[dict]:
    wanted = MT_BENCH if category == "mt_bench" else (category,)
    picked = [r for r in rows if r.get("category") in wanted]
    if not picked:
        have = sorted({str(r.get("category")) for r in rows})
        raise DataError(f"{path} has no Spec-Bench category {category!r}; use mt_bench or one of {have}")
    return picked


def load_prompts(source: PromptSource) -> list[Prompt]:
    if source.name == "heldout":
        functions = heldout_functions(list(source.packages or []), source.roots, source.max_prompt_chars)
        return _select([Prompt(f.id, f.prompt) for f in functions], source, "the held-out packages")
    if source.name == "jsonl":
        if not source.path:
            raise DataError("data=jsonl needs a prompt file; pass data.prompts.path=FILE.jsonl")
        path = Path(source.path)
    elif source.name in FILES:
        path = Path(source.data_dir) / FILES[source.name]
    else:
        raise DataError(f"unknown prompt set {source.name!r}; use one of {sorted(FILES) + ['heldout', 'jsonl']}")
    rows = _read_jsonl(path)
    if source.name == "spec_bench" and source.category:
        rows = _spec_bench_task(rows, source.category, path)
    prompts = []
    for n, row in enumerate(rows):
        if source.name == "gsm8k":
            text = source.gsm8k_template.format(question=row["question"])
        else:
            text = _text_of(row, path, n)
        pid = str(row.get("task_id", row.get("question_id", row.get("id", n))))
        prompts.append(Prompt(pid, text))
    return _select(prompts, source, path)
