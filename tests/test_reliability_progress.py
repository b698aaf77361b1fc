"""Issue 13 item 13: pocket pretraining reports progress while it trains; Lightning lines print once; the
repeated deprecation/tip lines are gone."""

import subprocess
import sys
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from specdiff2.pocket.pretrain import ARObjective, PretrainModule
from tests.conftest import ROOT

ADAMW = partial(torch.optim.AdamW, lr=1e-3)


def tiny_lm():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))


def test_pretraining_prints_training_progress_between_validations():
    lines = []
    module = PretrainModule(tiny_lm(), ARObjective(window=4, windows_per_row=2), ADAMW, max_steps=3,
                            progress=lines.append, name="verifier", progress_every_s=0.0)
    data = DataLoader(TensorDataset(torch.randint(0, 64, (12, 16))), batch_size=4)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, data)
    training = [ln for ln in lines if "train/loss" in ln]
    assert [ln.split()[2] for ln in training] == ["1/3", "2/3", "3/3"], lines
    assert all(ln.startswith("verifier step") and ln.endswith(" s)") for ln in training)


def test_silent_between_intervals():
    lines = []
    module = PretrainModule(tiny_lm(), ARObjective(window=4, windows_per_row=2), ADAMW, max_steps=2,
                            progress=lines.append, progress_every_s=3600.0)
    data = DataLoader(TensorDataset(torch.randint(0, 64, (8, 16))), batch_size=4)
    L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(module, data)
    assert not [ln for ln in lines if "train/loss" in ln]


SCRIPT = r"""
import logging, sys, warnings
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="[root] %(message)s")  # as Hydra's job logging
from specdiff2.cli import quiet_frameworks
quiet_frameworks()
import lightning
from lightning.pytorch.utilities.rank_zero import rank_zero_info
rank_zero_info("hello from lightning")
rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`", FutureWarning)
warnings.warn("an unrelated warning stays", UserWarning)
"""


@pytest.mark.slow  # 8 s: a train.py subprocess
def test_lightning_lines_print_once_and_the_repeated_chatter_is_filtered():
    res = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert out.count("hello from lightning") == 1, out
    assert "Tip:" not in out and "LeafSpec" not in out, out
    assert "an unrelated warning stays" in out


def test_the_training_bar_of_a_step_bounded_run_does_not_read_epoch_0_of_minus_2():
    """Issue 22 item 13: train.py runs are bounded by trainer.max_steps (max_epochs -1): 'Epoch 0/-2' before."""
    from specdiff2.training.callbacks import progress_bar

    bar = progress_bar(True)
    module = PretrainModule(tiny_lm(), ARObjective(window=4, windows_per_row=2), ADAMW, max_steps=2,
                            progress=lambda _: None, progress_every_s=3600.0)
    data = DataLoader(TensorDataset(torch.randint(0, 64, (8, 16))), batch_size=4)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[bar],
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, data)
    assert trainer.max_epochs == -1 and bar._get_train_description(0).strip() == "Epoch 0 (of 2 steps)"
