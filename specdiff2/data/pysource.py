"""Python source installed with the interpreter: where it is, and which top-level package each file belongs to.

Shared by the pocket corpus (which trains on these files) and the held-out prompt set (which must come from
packages the corpus never contains). Roots come from `sysconfig`, never hard-coded paths.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from specdiff2.errors import DataError

SITE_DIRS = ("site-packages", "dist-packages")


def default_roots() -> list[str]:
    """Standard library and site-packages of the running interpreter."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "purelib", "platlib") if paths.get(k)}
    return sorted(roots)


def top_level_name(path: Path, root: Path) -> str:
    """The importable top-level name a file belongs to: `networkx` for .../site-packages/networkx/a/b.py,
    `statistics` for <stdlib>/statistics.py. A site-packages directory nested in a root (the stdlib root of
    some installs holds one) starts a new namespace."""
    parts = path.relative_to(root).parts
    site = [i for i, p in enumerate(parts[:-1]) if p in SITE_DIRS]
    parts = parts[site[-1] + 1:] if site else parts
    return parts[0][:-3] if len(parts) == 1 and parts[0].endswith(".py") else parts[0]


def python_files(roots: list[str]) -> list[tuple[Path, str]]:
    """Every .py file under `roots` as (path, top-level name), sorted by path."""
    files: dict[Path, str] = {}
    for root in roots:
        root_path = Path(root)
        if not root_path.is_dir():
            raise DataError(f"corpus root {root!r} is not a directory; pass existing directories in pocket.corpus.roots")
        for dirpath, _, names in os.walk(root_path):
            for n in names:
                if n.endswith(".py"):
                    path = Path(dirpath) / n
                    files.setdefault(path, top_level_name(path, root_path))
    return sorted(files.items())
