"""The import layering of the design card, as a test: models ← decode ← data ← training ← entry points, losses beside
models, the pocket world, report and bench on top. A package may import its own layer and those below, never above
(and never tests/). `farm-studio look` draws the same picture; this keeps it true between looks."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "specdiff2"
# Lowest first; a unit may import units of its own or a lower rank only.
RANK = {"errors": 0, "tables": 0, "config_types": 0, "models": 1, "losses": 1, "decode": 2, "data": 3, "training": 4,
        "pocket": 5, "cli": 5, "report": 6, "bench": 7, "__init__": 0, "__main__": 8}


def unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_imports_run_one_way():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit(path)
        assert source in RANK, f"{path}: new top-level unit {source!r}; give it a rank in tests/test_layering.py"
        for name in imported(ast.parse(path.read_text())):
            if name == "tests" or name.startswith("tests."):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name} (the package must not need tests/)")
            elif name.startswith("specdiff2."):
                target = name.split(".")[1]
                if RANK.get(target, 99) > RANK[source]:
                    bad.append(f"{path.relative_to(PACKAGE.parent)} ({source}) imports {name} ({target}): upward")
    assert not bad, "\n".join(bad)
