"""Pretraining of the pocket models: autoregressive LM and masked-diffusion LM objectives.

Both objectives are plain functions `(model, batch, generator) -> (loss, metrics)`; one Lightning
module runs either, so the verifier, the AR drafter and the diffusion drafter share the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F

from specdiff2.losses.diffusion import mdlm_loss, sample_mask
from specdiff2.models.diffusion import align_logits

Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Generator | None], tuple[torch.Tensor, dict]]


def ar_objective(model: torch.nn.Module, input_ids: torch.Tensor, generator=None) -> tuple[torch.Tensor, dict]:
    logits = model(input_ids=input_ids).logits  # (B, L, V)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())
    return loss, {"ce": loss.detach()}


@dataclass
class DiffusionObjective:
    """MDLM absorbing-state loss, mixed with the drafting condition the drafter serves.

    A `window_fraction` of the rows sees exactly what decoding shows the drafter: a clean prefix,
    then `window` masks, and nothing after them (the later tokens are hidden from attention).
    """

    mask_token_id: int
    window: int = 8
    window_fraction: float = 0.5
    shifted: bool = True

    def __call__(self, model, input_ids, generator=None) -> tuple[torch.Tensor, dict]:
        B, L = input_ids.shape
        dev = input_ids.device
        t = torch.rand(B, device=dev, generator=generator).clamp_min(1e-3)  # (B,)
        protect = torch.zeros_like(input_ids, dtype=torch.bool)
        protect[:, 0] = self.shifted  # a shifted model has no predictor for position 0
        masked = sample_mask(input_ids, t, generator=generator, protect=protect)  # (B, L)

        # Drafting-condition rows: prefix [0, start), masked window [start, start+window), hidden tail.
        is_window = torch.rand(B, device=dev, generator=generator) < self.window_fraction  # (B,)
        hi = L - self.window
        start = torch.randint(1, hi + 1, (B,), device=dev, generator=generator)  # (B,)
        pos = torch.arange(L, device=dev)[None]  # (1, L)
        in_window = (pos >= start[:, None]) & (pos < start[:, None] + self.window)  # (B, L)
        visible = torch.where(is_window[:, None], pos < start[:, None] + self.window, True)  # (B, L)
        masked = torch.where(is_window[:, None], in_window, masked)

        noisy = torch.where(masked, torch.full_like(input_ids, self.mask_token_id), input_ids)
        # Bidirectional attention over visible keys; every query sees at least position 0.
        attn = visible[:, None, None, :].expand(B, 1, L, L)  # (B, 1, L, L)
        logits = align_logits(model(input_ids=noisy, attention_mask=attn).logits, self.shifted)  # (B, L, V)
        # Two terms of equal weight: the ELBO over randomly masked rows, and the mean CE of the window
        # rows. Folding the window rows into the ELBO's per-token normalisation would weight them by
        # window/L, starving exactly the condition the drafter serves.
        random_rows = (~is_window)[:, None].expand(B, L)  # (B, L)
        mdlm = mdlm_loss(logits.float(), input_ids, masked & random_rows, t, loss_mask=random_rows).loss
        lp = logits.float().log_softmax(-1).gather(-1, input_ids[..., None])[..., 0]  # (B, L)
        win = in_window & is_window[:, None]  # (B, L)
        window_ce = -(lp * win).sum() / win.sum().clamp_min(1)
        loss = mdlm + window_ce
        return loss, {"mdlm": mdlm.detach(), "window_ce": window_ce.detach()}


class PretrainModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, objective: Objective, lr: float, max_steps: int,
                 warmup_steps: int = 50, weight_decay: float = 0.1, seed: int = 0):
        super().__init__()
        self.model = model
        self.objective = objective
        self.lr, self.max_steps, self.warmup_steps, self.weight_decay = lr, max_steps, warmup_steps, weight_decay
        self.seed = seed
        self.val_history: list[dict] = []
        self._val_sums: dict[str, float] = {}
        self._val_count = 0

    def training_step(self, batch, batch_idx):
        loss, metrics = self.objective(self.model, batch[0], None)
        self.log("train/loss", loss, prog_bar=True)
        for k, v in metrics.items():
            self.log(f"train/{k}", v)
        return loss

    def on_validation_epoch_start(self):
        self._val_sums, self._val_count = {}, 0
        # Same masks at every validation: curves compare like with like.
        self._val_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)

    def validation_step(self, batch, batch_idx):
        loss, metrics = self.objective(self.model, batch[0], self._val_gen)
        for k, v in {"loss": loss, **metrics}.items():
            self._val_sums[k] = self._val_sums.get(k, 0.0) + float(v)
        self._val_count += 1

    def on_validation_epoch_end(self):
        means = {k: v / max(self._val_count, 1) for k, v in self._val_sums.items()}
        for k, v in means.items():
            self.log(f"val/{k}", v, prog_bar=(k == "loss"))
        self.val_history.append({"step": int(self.global_step), **means})

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr, betas=(0.9, 0.95),
        )

        def schedule(step: int) -> float:  # linear warmup, cosine to 10%
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            frac = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
