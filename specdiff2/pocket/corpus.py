"""The pocket corpus: Python source files shipped with the interpreter and its installed packages.

Files are discovered from `sysconfig` (never hard-coded paths), deduplicated by content hash and
ordered by that hash, so the same set of installed files gives the same corpus on any machine
whatever its install paths. The train/validation split is also a function of the hash alone.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from specdiff2.errors import DataError


@dataclass(frozen=True)
class SourceFile:
    sha: str  # sha256 of the bytes: dedup key, order key and split key
    text: str


@dataclass(frozen=True)
class Corpus:
    train: list[SourceFile]
    validation: list[SourceFile]

    def stats(self) -> dict:
        return {
            "train_files": len(self.train),
            "validation_files": len(self.validation),
            "train_bytes": sum(len(f.text) for f in self.train),
            "validation_bytes": sum(len(f.text) for f in self.validation),
        }


def default_roots() -> list[str]:
    """Standard library and site-packages of the running interpreter."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "purelib", "platlib") if paths.get(k)}
    return sorted(roots)


def discover_python_files(roots: list[str]) -> list[Path]:
    files: set[Path] = set()
    for root in roots:
        root_path = Path(root)
        if not root_path.is_dir():
            raise DataError(f"corpus root {root!r} is not a directory; pass existing directories in corpus roots")
        for dirpath, _, names in os.walk(root_path):
            files.update(Path(dirpath) / n for n in names if n.endswith(".py"))
    return sorted(files)


def _in_validation(sha: str, validation_fraction: float) -> bool:
    # The tail of the hash, not its head: the head also orders the files, so it would correlate.
    return int(sha[-8:], 16) / 0xFFFFFFFF < validation_fraction


def read_corpus(
    roots: list[str] | None = None,
    max_bytes: int = 4_000_000,
    max_file_bytes: int = 200_000,
    min_file_bytes: int = 64,
    validation_fraction: float = 0.05,
) -> Corpus:
    """Read, dedup and split the corpus; stop adding files once `max_bytes` of text is collected.

    Files are taken in content-hash order, so a size limit draws a fixed pseudo-random sample rather
    than, say, the alphabetically first packages.
    """
    if max_bytes <= 0:
        raise DataError(f"corpus max_bytes must be positive, got {max_bytes}; set data.corpus.max_bytes > 0")
    roots = list(roots) if roots else default_roots()
    by_sha: dict[str, str] = {}
    for path in discover_python_files(roots):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        if not (min_file_bytes <= len(raw) <= max_file_bytes):
            continue
        sha = hashlib.sha256(raw).hexdigest()
        if sha in by_sha:
            continue
        try:
            by_sha[sha] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
    if not by_sha:
        raise DataError(
            f"no usable Python source files under {roots}; point data.corpus.roots at directories holding .py files"
        )
    train, validation, total = [], [], 0
    for sha in sorted(by_sha):
        if total >= max_bytes:
            break
        text = by_sha[sha]
        total += len(text)
        (validation if _in_validation(sha, validation_fraction) else train).append(SourceFile(sha, text))
    if not train or not validation:
        raise DataError(
            f"corpus split is empty (train {len(train)} files, validation {len(validation)}); "
            "raise data.corpus.max_bytes or adjust validation_fraction"
        )
    return Corpus(train=train, validation=validation)
