"""Issue 13 item 6, second route: a learning rate of 1e30 after a zero-lr warmup step leaves the weights finite
(~1e29) but the drafter's logits NaN; validation stops the run with one line before any checkpoint or export."""

import pytest

from specdiff2.errors import TrainingError
from tests.test_training import micro_cfg, train


def test_nonfinite_validation_stops_the_run_before_checkpoint_and_export(micro_world, tmp_path):
    cfg = micro_cfg(micro_world, tmp_path / "cache", tmp_path / "run", "optim.optimizer.lr=1e30",
                    "trainer.max_steps=2", "trainer.val_check_interval=2")
    with pytest.raises(TrainingError) as info:
        train(cfg)
    line = str(info.value)
    assert "\n" not in line and "val/ce=nan" in line and "at step 2" in line and "optim.optimizer.lr" in line
    assert not (tmp_path / "run" / "export").exists()
    assert not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


def test_framework_information_lines_go_to_stdout_and_stderr_keeps_errors(capfd):
    """Issue 22 item 9: Lightning's 'INFO: GPU available ...' lines reached stderr ahead of a run's error line."""
    import logging

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from specdiff2.cli import quiet_frameworks

    quiet_frameworks()
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.INFO)  # as at train.py's start (a pocket build in this session raised it)
    try:
        rank_zero_info("GPU available: False, used: False")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").warning("a real warning")
    finally:
        lightning_log.setLevel(level)
    out, err = capfd.readouterr()
    assert "GPU available: False, used: False" in out and "GPU available" not in err
    assert "a real warning" not in out  # warnings stay with Lightning's own (stderr) handler


@pytest.mark.slow  # a train.py subprocess on the micro world (~20 s)
def test_a_diverging_train_py_run_prints_the_error_alone_on_stderr(micro_world, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_training import micro_overrides

    args = micro_overrides(micro_world, tmp_path / "cache", tmp_path / "run", "optim.optimizer.lr=1e30",
                           "optim.scheduler=null", f"hydra.run.dir={tmp_path / 'run'}")
    res = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    assert "optim.optimizer.lr" in lines[0] and "GPU available" in res.stdout
