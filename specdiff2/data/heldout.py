"""A code prompt set that no pocket model trained on: signature + docstring prompts cut from held-out packages.

How it is made (deterministic for a given set of installed files):
1. `heldout_packages` names whole top-level packages or modules of the interpreter's stdlib/site-packages
   (e.g. `networkx`, `statistics`). The pocket corpus (`pocket/corpus.py`) drops every file of these packages,
   wherever they are installed, and every other file whose bytes equal one of them, before it samples its
   training files; the tokenizer and all three pocket models train on that corpus only.
2. From the held-out files (tests directories skipped) every public module-level `def` with a docstring is a
   candidate. The prompt is its source from the first decorator (or `def`) line through the docstring's last
   line, plus a newline: what HumanEval shows a model. The rest of the function is the reference body.
3. Candidates are kept when the prompt has at most `max_prompt_chars` characters, the body has at least
   `min_body_chars` non-blank characters and is not just `pass` / `...` / `raise NotImplementedError`;
   identical prompts are kept once.
4. The order takes the packages in turn (sorted by name), each in the sha256 order of its prompts' ids
   (`package/path.py:function`): `limit` draws a fixed mix over all packages rather than mostly the largest,
   the same on any machine with the same package versions.
Near-copies of held-out code under another package name (a vendored older version) cannot be detected; pick
packages nobody vendors.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path

from specdiff2.data.pysource import default_roots, python_files
from specdiff2.errors import DataError

TRIVIAL_BODIES = ("pass", "...", "raise NotImplementedError", "raise NotImplementedError()")


@dataclass(frozen=True)
class HeldoutFunction:
    id: str  # package/path.py:function
    prompt: str  # decorators + signature + docstring + "\n"
    body: str  # the reference completion


def heldout_files(packages: list[str], roots: list[str] | None = None) -> list[tuple[Path, str]]:
    """(path, id path `package/sub/file.py`) of every file of the held-out packages under `roots`."""
    wanted = set(packages)
    out = []
    for path, top in python_files(list(roots) if roots else default_roots()):
        if top in wanted:
            parts = path.parts
            start = max(i for i, p in enumerate(parts) if p in (top, f"{top}.py"))
            out.append((path, "/".join(parts[start:])))
    return out


def _functions(source: str, rel: str) -> list[HeldoutFunction]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or ast.get_docstring(node) is None:
            continue
        doc = node.body[0]
        if len(node.body) < 2:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        prompt = "\n".join(lines[first - 1: doc.end_lineno]) + "\n"
        body = "\n".join(lines[doc.end_lineno: node.end_lineno]) + "\n"
        found.append(HeldoutFunction(f"{rel}:{node.name}", prompt, body))
    return found


def heldout_functions(packages: list[str], roots: list[str] | None = None, max_prompt_chars: int = 1200,
                      min_body_chars: int = 40) -> list[HeldoutFunction]:
    """The held-out prompt set (see module doc), in its fixed order."""
    if not packages:
        raise DataError("the held-out prompt set needs package names; set data.prompts.packages (or "
                        "pocket.corpus.heldout_packages) to a list such as [networkx, statistics]")
    files = heldout_files(packages, roots)
    if not files:
        raise DataError(f"none of the held-out packages {packages} is installed under {roots or default_roots()}; "
                        "choose installed packages in pocket.corpus.heldout_packages")
    chosen: dict[str, HeldoutFunction] = {}
    for path, rel in files:
        if "tests" in rel.split("/")[:-1]:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for fn in _functions(source, rel):
            body = "".join(fn.body.split())
            if len(fn.prompt) <= max_prompt_chars and len(body) >= min_body_chars and \
                    fn.body.strip() not in TRIVIAL_BODIES:
                chosen.setdefault(fn.prompt, fn)
    if not chosen:
        raise DataError(f"the held-out packages {packages} yield no function with a docstring and a body; "
                        "add packages or raise data.prompts.max_prompt_chars")
    by_package: dict[str, list[HeldoutFunction]] = {}
    for fn in sorted(chosen.values(), key=lambda f: hashlib.sha256(f.id.encode()).hexdigest()):
        by_package.setdefault(fn.id.split(":")[0].split("/")[0].removesuffix(".py"), []).append(fn)
    queues = [by_package[k] for k in sorted(by_package)]
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
