"""The pocket corpus: Python source files shipped with the interpreter and its installed packages.

Files are discovered from `sysconfig` (never hard-coded paths), deduplicated by content hash and
ordered by that hash, so the same set of installed files gives the same corpus on any machine
whatever its install paths. The train/validation split is also a function of the hash alone.
Whole packages named in `heldout_packages` are left out (and any file with the bytes of one of
theirs): the held-out prompt set (`data/heldout.py`) is cut from them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from specdiff2.data.pysource import default_roots, python_files
from specdiff2.errors import DataError


@dataclass(frozen=True)
class SourceFile:
    sha: str  # sha256 of the bytes: dedup key, order key and split key
    text: str


@dataclass(frozen=True)
class Corpus:
    train: list[SourceFile]
    validation: list[SourceFile]
    heldout_shas: frozenset[str] = frozenset()

    def stats(self) -> dict:
        return {
            "train_files": len(self.train),
            "validation_files": len(self.validation),
            "train_bytes": sum(len(f.text) for f in self.train),
            "validation_bytes": sum(len(f.text) for f in self.validation),
            "heldout_files": len(self.heldout_shas),
        }


def _in_validation(sha: str, validation_fraction: float) -> bool:
    # The tail of the hash, not its head: the head also orders the files, so it would correlate.
    return int(sha[-8:], 16) / 0xFFFFFFFF < validation_fraction


def read_corpus(
    roots: list[str] | None = None,
    max_bytes: int = 4_000_000,
    max_file_bytes: int = 200_000,
    min_file_bytes: int = 64,
    validation_fraction: float = 0.05,
    heldout_packages: list[str] | tuple[str, ...] = (),
) -> Corpus:
    """Read, dedup and split the corpus; stop adding files once `max_bytes` of text is collected.

    Files are taken in content-hash order, so a size limit draws a fixed pseudo-random sample rather
    than, say, the alphabetically first packages. Files of `heldout_packages` never enter (`heldout_shas`
    of the result lists the content hashes that were kept out).
    """
    if max_bytes <= 0:
        raise DataError(f"corpus max_bytes must be positive, got {max_bytes}; set pocket.corpus.max_bytes > 0")
    roots = list(roots) if roots else default_roots()
    held = set(heldout_packages)
    by_sha: dict[str, str] = {}
    heldout_shas: set[str] = set()
    for path, top in python_files(roots):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        sha = hashlib.sha256(raw).hexdigest()
        if top in held:
            heldout_shas.add(sha)
            continue
        if not (min_file_bytes <= len(raw) <= max_file_bytes) or sha in by_sha:
            continue
        try:
            by_sha[sha] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
    if not by_sha:
        raise DataError(
            f"no usable Python source files under {roots}; point pocket.corpus.roots at directories holding .py files"
        )
    if held and not heldout_shas:
        raise DataError(f"none of heldout_packages {sorted(held)} is installed under {roots}; "
                        "name installed packages in pocket.corpus.heldout_packages")
    train, validation, total = [], [], 0
    for sha in sorted(set(by_sha) - heldout_shas):
        if total >= max_bytes:
            break
        text = by_sha[sha]
        total += len(text)
        (validation if _in_validation(sha, validation_fraction) else train).append(SourceFile(sha, text))
    if not train or not validation:
        raise DataError(
            f"corpus split is empty (train {len(train)} files, validation {len(validation)}); "
            "raise pocket.corpus.max_bytes or adjust pocket.corpus.validation_fraction"
        )
    return Corpus(train=train, validation=validation, heldout_shas=frozenset(heldout_shas))
