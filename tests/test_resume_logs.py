"""Issue 13 item 12: kill + `resume=` continues one log history (the same metrics.csv, the same W&B run id).

The run is "killed" after its step-4 checkpoint, during step 7 (steps 5-6 are already logged); the resume
restarts from step 4, so those rows must be dropped, not logged twice.
"""

import csv
from pathlib import Path

import pytest

from specdiff2.training.loggers import wandb_logger
from specdiff2.training.resume import WANDB_ID_FILE
from tests.test_training import Crash, micro_cfg, train


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def read_metrics(run: Path) -> tuple[list[str], list[dict]]:
    files = sorted((run / "csv").glob("version_*/metrics.csv"))
    assert len(files) == 1, files  # one history, not version_0 + version_1
    text = files[0].read_text()
    header = text.splitlines()[0]
    assert text.splitlines().count(header) == 1  # one header
    with files[0].open(newline="") as f:
        return header.split(","), list(csv.DictReader(f))


def steps_of(rows: list[dict], column: str) -> list[int]:
    return [int(float(r["step"])) for r in rows if r.get(column) not in (None, "")]


def assert_one_history(rows: list[dict], max_steps: int = 8) -> None:
    train_cols = [c for c in rows[0] if c.startswith("train/")]
    assert train_cols
    for col in train_cols:  # logged every step (trainer=tiny: log_every_n_steps 1): contiguous, no repeats
        steps = steps_of(rows, col)
        assert steps == sorted(set(steps)), (col, steps)
        assert steps == list(range(steps[0], steps[0] + len(steps))) and steps[-1] >= max_steps - 1, (col, steps)
    val = steps_of(rows, "val/expected_streak")  # before training, after step 4 and step 8 (logged at 3, 7)
    assert val == [0, 3, 7], val


def test_resume_in_the_same_run_dir_continues_the_same_metrics_csv(micro_world, cache_dir, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(micro_cfg(micro_world, cache_dir, run, "peft=tiny"), crash=Crash(6))
    _, killed = read_metrics(run)
    assert max(int(float(r["step"])) for r in killed) >= 4  # rows past the checkpoint were written before the kill
    train(micro_cfg(micro_world, cache_dir, run, "peft=tiny", f"resume={run}"))
    _, rows = read_metrics(run)
    assert_one_history(rows)


def test_resume_into_a_new_run_dir_carries_the_history(micro_world, cache_dir, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(micro_cfg(micro_world, cache_dir, first, "peft=tiny"), crash=Crash(6))
    train(micro_cfg(micro_world, cache_dir, second, "peft=tiny", f"resume={first}"))
    _, rows = read_metrics(second)
    assert_one_history(rows)


def test_wandb_resume_reuses_the_stored_run_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = tmp_path / "first"
    (first / "checkpoints").mkdir(parents=True)
    (first / "checkpoints" / "last.ckpt").write_bytes(b"")  # only its location matters here
    logger = wandb_logger(str(first), mode="offline")
    run_id = (first / WANDB_ID_FILE).read_text().strip()
    assert logger._wandb_init["id"] == run_id and logger._wandb_init["resume"] == "allow"
    resumed = wandb_logger(str(tmp_path / "second"), mode="offline", resume=str(first))
    assert resumed._wandb_init["id"] == run_id
    assert (tmp_path / "second" / WANDB_ID_FILE).read_text().strip() == run_id
    fresh = wandb_logger(str(tmp_path / "third"), mode="offline")
    assert fresh._wandb_init["id"] != run_id
