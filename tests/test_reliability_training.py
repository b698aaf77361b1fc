"""Issue 13 item 8 (train.py): settings Lightning, peft or safetensors refuse with a traceback are one line."""

import functools
import shutil
from types import SimpleNamespace

import lightning as L
import pytest

from specdiff2.errors import CheckpointError, ConfigError
from specdiff2.training.checks import check_trainer_settings
from specdiff2.training.module import lora_config
from specdiff2.training.pipeline import build_trainer, check_weights_readable

TARGETS = ["q_proj", "v_proj"]


@pytest.mark.parametrize("settings,needle", [
    ({"precision": "bogus"}, "trainer.precision='bogus'; use 32-true"),
    ({"devices": 0}, "trainer.devices=0; set an integer >= 1"),
    ({"devices": "two"}, "trainer.devices='two';"),
])
def test_trainer_settings_lightning_refuses_are_one_line(settings, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        check_trainer_settings(settings)


def test_valid_trainer_settings_pass():
    for settings in ({"precision": "32-true", "devices": 1}, {"precision": "bf16-mixed", "devices": "auto"},
                     {"precision": 32, "devices": [0, 1]}, {"devices": -1}):
        check_trainer_settings(settings)


def test_lightning_refusals_left_over_become_one_line(tmp_path):
    job = SimpleNamespace(loggers={}, callbacks={}, output_dir=tmp_path,
                          trainer=functools.partial(L.Trainer, accelerator="cpu", strategy="bogus"))
    with pytest.raises(ConfigError, match="Lightning refused the trainer settings") as err:
        build_trainer(job)
    assert "\n" not in str(err.value)


def test_lora_settings_peft_refuses_are_one_line():
    assert lora_config(r=4, lora_alpha=8, target_modules=TARGETS).r == 4
    with pytest.raises(ConfigError, match="peft.lora.r=0; set an integer >= 1"):
        lora_config(r=0, lora_alpha=8, target_modules=TARGETS)
    with pytest.raises(ConfigError, match="peft.lora.lora_dropout=2.0; set a number in"):
        lora_config(r=4, lora_alpha=8, lora_dropout=2.0, target_modules=TARGETS)
    with pytest.raises(ConfigError, match="peft.lora is invalid"):  # +peft.lora.bogus=1
        lora_config(r=4, lora_alpha=8, target_modules=TARGETS, bogus=1)


def test_unreadable_drafter_weights_are_refused_before_any_work(tiny_world, tmp_path):
    check_weights_readable(tiny_world.verifier, tiny_world.drafter)
    for name, data in (("empty", b""), ("garbage", b"\xff" * 4096)):
        bad = shutil.copytree(tiny_world.drafter, tmp_path / name)
        (bad / "model.safetensors").write_bytes(data)
        with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
            check_weights_readable(tiny_world.verifier, bad)
