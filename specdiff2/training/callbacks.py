"""Training callbacks (conf/callbacks): throughput of the optimisation steps, and the progress bar switch."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar


class ThroughputMonitor(L.Callback):
    """Windows/s and tokens/s (packed input positions, padding included) over training batches only.

    Timing covers forward, backward and optimizer of each batch (not validation or checkpointing); on CUDA it
    synchronises at batch boundaries so the numbers are real, which costs a little throughput itself.
    """

    def __init__(self):
        self.windows = 0
        self.tokens = 0
        self.seconds = 0.0
        self._t0 = 0.0

    @staticmethod
    def _sync(trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(trainer)
        self.seconds += time.perf_counter() - self._t0
        self.windows += int(batch["targets"].shape[0])
        self.tokens += int(batch["input_ids"].numel())
        if self.seconds > 0:
            pl_module.log("train/windows_per_s", self.windows / self.seconds)

    def summary(self) -> dict:
        rate = (lambda n: n / self.seconds) if self.seconds > 0 else (lambda n: 0.0)
        return {"windows": self.windows, "tokens": self.tokens, "train_s": self.seconds,
                "windows_per_s": rate(self.windows), "tokens_per_s": rate(self.tokens)}


class StepBoundedBar(RichProgressBar):
    """Lightning's rich bar. train.py runs are bounded by trainer.max_steps, so Lightning sets max_epochs to -1 and
    its bar read 'Epoch 0/-2'; here they read 'Epoch 0 (of N steps)'."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch} (of {self.trainer.max_steps} steps)"
        return f"{text:{len(self.validation_description)}}"  # as wide as the validation bar's: no flicker


def progress_bar(enabled: bool = True) -> StepBoundedBar | None:
    """The rich progress bar, or None (dropped from the callbacks) when the trainer's bar is disabled.

    conf/callbacks ties `enabled` to trainer.enable_progress_bar: Lightning refuses a progress-bar callback
    when its own bar is off, and draws its default bar when it is on and no bar callback is given.
    """
    return StepBoundedBar() if enabled else None
