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
