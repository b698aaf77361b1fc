"""notebooks/*.ipynb execute without error (nbclient) on a synthetic RUN_DIR shaped like a reproduce_tiny run.

They hold no library logic (specdiff2.report.*), read the run from SPECDIFF2_RUN_DIR, and are stored without
outputs (checked here too)."""

from pathlib import Path

import pytest

from tests.test_report import make_run_dir

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    code = [c for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: strip the outputs"


# One notebook executes in the default suite (~2 s each, a kernel start); all of them under -m slow.
@pytest.mark.parametrize("path", [pytest.param(p, marks=() if i == 0 else pytest.mark.slow)
                                  for i, p in enumerate(NOTEBOOKS)], ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    monkeypatch.setenv("SPECDIFF2_RUN_DIR", str(make_run_dir(tmp_path / "run")))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert all(c.outputs for c in code[1:]), "every cell after the setup shows something"
