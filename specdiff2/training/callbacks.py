"""Training callbacks (conf/callbacks): throughput of the optimisation steps, and the progress bar switch."""

from __future__ import annotations

import time

import lightning as L
import torch


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


def progress_bar(enabled: bool = True):
    """A RichProgressBar, or None (dropped from the callbacks) when the trainer's bar is disabled.

    conf/callbacks ties `enabled` to trainer.enable_progress_bar: Lightning refuses a progress-bar callback
    when its own bar is off, and draws its default bar when it is on and no bar callback is given.
    """
    from lightning.pytorch.callbacks import RichProgressBar

    return RichProgressBar() if enabled else None
