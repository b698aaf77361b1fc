"""Flat token streams read from a pocket token dataset or a verifier trajectory store, and DiffuSpec's n-gram
proxy built from one (the decode side's n-gram model only ever sees tensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from specdiff2.data.trajectories import load_trajectories
from specdiff2.decode.diffuspec.ngram import NGramModel, check_order
from specdiff2.decode.diffuspec.proxies import NGramProxy
from specdiff2.decode.strategies.base import EngineContext
from specdiff2.errors import DataError, require


def source_fingerprint(source: str | Path) -> dict:
    """What decides whether a cached model is stale: the source path and its newest file time."""
    root = Path(source)
    require(root.exists(), f"n-gram token source {root} does not exist; build the pocket world or generate "
            "trajectories first, or fix decode.models.proxy.source", DataError)
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return {"source": str(root.resolve()), "source_mtime": max((p.stat().st_mtime for p in files), default=0.0)}


def token_stream(source: str | Path, split: str = "train", eos_id: int | None = None) -> torch.Tensor:
    """A flat token stream (N,) from a pocket token dataset or a verifier trajectory store.

    Pocket (`datasets` save_to_disk dir with an `input_ids` column): files already end in EOS. Trajectory
    store (has manifest.json): prompt + continuation per row, EOS appended to rows that did not finish, so
    no n-gram spans two trajectories without a boundary token.
    """
    root = Path(source)
    if (root / "manifest.json").is_file():
        ds = load_trajectories(root)
        rows = []
        for prompt, cont, done in zip(ds["prompt_ids"], ds["continuation_ids"], ds["finished"]):
            rows.append(np.asarray(prompt + cont + ([] if done or eos_id is None else [eos_id]), dtype=np.int64))
        return torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, dtype=torch.long)
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(root))
    except FileNotFoundError:
        raise DataError(f"{root} is neither a `datasets` token dataset nor a trajectory store; "
                        "point decode.models.proxy.source at ${paths.pocket_dir}/tokens or a trajectory store") from None
    if isinstance(ds, DatasetDict):
        require(split in ds, f"token dataset {root} has no split {split!r} (has {sorted(ds)}); set decode.models.proxy.split",
                DataError)
        ds = ds[split]
    require("input_ids" in ds.column_names, f"token dataset {root} has no input_ids column", DataError)
    flat = ds.data.column("input_ids").combine_chunks().flatten().to_numpy().astype(np.int64)
    return torch.from_numpy(flat)


def load_ngram_proxy(ctx: EngineContext, source: str, order: int = 3, split: str = "train",
                     cache_path: str | None = None, table_limit: int = 1 << 22) -> NGramProxy:
    """DiffuSpec's n-gram proxy over the verifier vocabulary, counted from `source` once and cached at
    `cache_path` (rebuilt when the source, order or vocabulary change)."""
    check_order(order)
    meta = {**source_fingerprint(source), "split": split}
    model = NGramModel.build_cached(cache_path, lambda: token_stream(source, split, ctx.verifier_tokenizer.eos_token_id),
                                    order, ctx.verifier_rows, meta, ctx.device)
    return NGramProxy(model, table_limit)
