"""How trajectory shards are stored (Arrow column types) and what a run will take on disk, known before sampling.

Token ids are int32 and log-probs float32: the sampler computes log-probs in fp32 and every id fits 31 bits, so
nothing is lost against the int64/float64 `datasets` would infer from Python lists, at half the bytes. Arrow
files are uncompressed, so a stored token costs exactly: 4 B (its id) + with top-k: 2 × (4k B values + 4 B list
offset). A row adds its prompt (4 B a token) and a fixed overhead (prompt id, sample index, flag, offsets).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROW_OVERHEAD = 64  # measured ~46 B: prompt_id string + offset, sample int32, finished bit, list offsets
SHARD_OVERHEAD = 4 << 10  # Arrow schema and footer (~2 KB), dataset_info.json + state.json (~1.2 KB)


def features(topk: bool):
    """The column types of a shard (see the module docstring)."""
    from datasets import Features, Sequence, Value

    cols = {"prompt_id": Value("string"), "sample": Value("int32"), "prompt_ids": Sequence(Value("int32")),
            "continuation_ids": Sequence(Value("int32")), "finished": Value("bool")}
    if topk:
        cols.update(topk_ids=Sequence(Sequence(Value("int32"))), topk_logprobs=Sequence(Sequence(Value("float32"))))
    return Features(cols)


def bytes_per_token(topk: int) -> int:
    """On-disk bytes of one continuation token: its id, and with top-k log-probs k ids + k values + two offsets."""
    return 4 + (2 * (4 * topk + 4) if topk else 0)


@dataclass(frozen=True)
class StorageEstimate:
    prompts: int
    samples: int
    max_new_tokens: int
    topk: int
    bytes: int  # upper bound: every continuation runs to max_new_tokens

    def line(self) -> str:
        k = f"top-{self.topk} log-probs" if self.topk else "no log-probs"
        return (f"{self.prompts} prompts x {self.samples} samples x <= {self.max_new_tokens} tokens, {k}: "
                f"{bytes_per_token(self.topk)} B/token, at most {gb(self.bytes)}")


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def estimate(prompt_lengths: list[int], samples: int, max_new_tokens: int, topk: int, shards: int) -> StorageEstimate:
    """Upper bound on the bytes of `shards` shards holding these prompts, `samples` rows each."""
    rows = len(prompt_lengths) * samples
    total = (rows * (max_new_tokens * bytes_per_token(topk) + ROW_OVERHEAD) + 4 * samples * sum(prompt_lengths)
             + shards * SHARD_OVERHEAD)
    return StorageEstimate(len(prompt_lengths), samples, max_new_tokens, topk, total)


def check_room(out: Path, need: StorageEstimate, log: Callable[[str], None], key: str) -> str | None:
    """Log the estimate and the free space at `out`; the one-line refusal when the bound does not fit, else None."""
    probe = out
    while not probe.exists():  # the store may not exist yet: ask its nearest existing parent
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    log(f"[trajectories] to sample: {need.line()}; {gb(free)} free at {probe}")
    if need.bytes <= free:
        return None
    return (f"the trajectory store needs up to {gb(need.bytes)} ({need.line()}) but {probe} has {gb(free)} free; "
            f"free space, put the store on a larger disk ({key}=DIR), or lower data.generation.max_new_tokens, "
            "samples_per_prompt or topk_logprobs")
