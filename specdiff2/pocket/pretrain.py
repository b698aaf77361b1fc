"""Pretraining of the pocket models: the autoregressive LM objective and the dense diffusion-drafter objective.

Objectives are callables `(model, batch, generator, evaluate) -> (loss, metrics)`; one Lightning module runs
either, so the verifier, the AR drafter and the diffusion drafter share the loop. In evaluation both report the
greedy acceptance proxy α_j on held-out windows (anchors evenly spaced over each validation row): the fraction
of windows whose argmax matches the true tokens at positions 1..j (SpecDiff-2 Fig. 2). For an AR model the
teacher-forced argmax equals its greedy rollout for as long as it matches, so its α_j is exact too.

The diffusion drafter (`DenseDrafterObjective`) is trained in the layout it drafts in: a causal clean stream
(the whole row) followed by one MASK block of γ per window anchor (`data.windows.shared_layout`), so one forward
trains every window of the row and the clean stream is shared by all of them.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from specdiff2.data.windows import shared_layout
from specdiff2.losses.diffusion import mdlm_loss, mdlm_noise
from specdiff2.losses.streak import streak_loss

Objective = Callable[..., tuple[torch.Tensor, dict]]


def val_anchors(batch: int, length: int, gamma: int, k: int, device=None) -> torch.Tensor:
    """(batch, k) window offsets evenly spaced over 1..length−γ: the same held-out windows every round."""
    return torch.linspace(1, length - gamma, k, device=device).round().long().expand(batch, k)


def train_anchors(batch: int, length: int, gamma: int, k: int, generator=None, device=None) -> torch.Tensor:
    """(batch, k) distinct offsets in 1..length−γ, one drawn uniformly from each of k integer strata."""
    edges = torch.linspace(0, length - gamma, k + 1, device=device).round().long()  # (k+1,) stratum bounds
    u = torch.rand(batch, k, device=device, generator=generator)  # (B, k)
    return 1 + edges[:-1] + (u * (edges[1:] - edges[:-1])).floor().long()  # (B, k)


def alpha_metrics(hits: torch.Tensor) -> dict[str, torch.Tensor]:
    """hits (W, γ) bool → {alpha_j: share of windows whose positions 1..j all match}."""
    curve = hits.long().cumprod(-1).float().mean(0)  # (γ,)
    return {f"alpha_{j + 1}": a for j, a in enumerate(curve)}


@dataclass
class ARObjective:
    """Next-token CE; in evaluation also α_1..α_window at `windows_per_row` anchors per row (teacher-forced)."""

    window: int = 16
    windows_per_row: int = 8

    def __call__(self, model, input_ids, generator=None, evaluate: bool = False) -> tuple[torch.Tensor, dict]:
        logits = model(input_ids=input_ids).logits  # (B, L, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())
        metrics = {"ce": loss.detach()}
        if evaluate:
            B, L = input_ids.shape
            at = val_anchors(B, L, self.window, self.windows_per_row, input_ids.device)[..., None] \
                + torch.arange(self.window, device=input_ids.device)  # (B, K, γ) target positions
            rows = torch.arange(B, device=input_ids.device)[:, None, None]
            hits = logits[rows, at - 1].argmax(-1) == input_ids[rows, at]  # (B, K, γ)
            metrics.update(alpha_metrics(hits.flatten(0, 1)))
        return loss, metrics


@dataclass
class DenseDrafterObjective:
    """Dense drafting-condition training of a causal-prefix, shifted-logit diffusion drafter.

    Each row [x_0..x_{L−1}] becomes [clean x (causal) ‖ K blocks of γ MASKs]; block k sits at RoPE positions
    o_k..o_k+γ−1, sees the clean tokens < o_k and itself, and scores x_{o_k..o_k+γ−1} (q_1 from the clean token
    o_k − 1, q_j from its mask j − 2). Loss = window CE (mean over the K·γ positions)
      + ar_weight · the clean stream's next-token CE (the same head: every position of the row as a q_1)
      + mdlm_weight · MDLM over `mdlm_windows_per_row` extra blocks per row whose positions are each masked
        w.p. t ~ U(0, 1] (the rest show the true token: later denoising steps), CE/t over the masked ones
      + streak_weight · (−E[streak]) of the window blocks against the data tokens (losses.streak_loss).
    """

    mask_token_id: int
    window: int = 16
    windows_per_row: int = 8
    ar_weight: float = 1.0
    mdlm_weight: float = 0.0
    mdlm_windows_per_row: int = 2
    streak_weight: float = 0.0

    def __call__(self, model, input_ids, generator=None, evaluate: bool = False) -> tuple[torch.Tensor, dict]:
        B, L = input_ids.shape
        dev, gamma, K = input_ids.device, self.window, self.windows_per_row
        extra = self.mdlm_windows_per_row if self.mdlm_weight > 0 else 0
        # Blocks never see each other, so the MDLM blocks may share anchors with the window blocks.
        offsets = torch.cat([self._anchors(B, L, k, evaluate, generator, dev) for k in (K, extra) if k], 1)
        layout = shared_layout(L, offsets, gamma, shifted=True)
        rows = torch.arange(B, device=dev)[:, None, None]
        targets = input_ids[rows, offsets[..., None] + torch.arange(gamma, device=dev)]  # (B, K + extra, γ)
        blocks = torch.full_like(targets, self.mask_token_id)  # (B, K + extra, γ)
        if extra:
            noisy, masked, t = mdlm_noise(targets[:, K:].flatten(0, 1), self.mask_token_id, generator)  # (B·e, γ)
            blocks[:, K:] = noisy.view(B, extra, gamma)
        ids = torch.cat([input_ids, blocks.flatten(1)], 1)  # (B, L + (K + extra)·γ)
        hidden = model.get_decoder()(input_ids=ids, attention_mask=layout["attention_mask"],
                                     position_ids=layout["position_ids"], use_cache=False).last_hidden_state
        head = model.get_output_embeddings()
        logits = head(hidden[rows, layout["logit_cols"]]).float()  # (B, K + extra, γ, V)

        window_logits, window_targets = logits[:, :K].flatten(0, 1), targets[:, :K].flatten(0, 1)  # (B·K, γ, ·)
        window_ce = F.cross_entropy(window_logits.flatten(0, 1), window_targets.flatten())
        loss, metrics = window_ce, {"window_ce": window_ce.detach()}
        if self.streak_weight > 0:  # −E[accepted streak] against the data tokens (SpecDiff-2's objective)
            streak = streak_loss(window_logits, window_targets)
            loss = loss + self.streak_weight * streak.loss
            metrics["expected_streak"] = streak.metrics["expected_streak"]
        if self.ar_weight > 0:
            ar_logits = head(hidden[:, : L - 1]).float()  # (B, L−1, V): clean token i predicts i+1
            ar_ce = F.cross_entropy(ar_logits.flatten(0, 1), input_ids[:, 1:].flatten())
            loss = loss + self.ar_weight * ar_ce
            metrics["ar_ce"] = ar_ce.detach()
        if extra:
            mdlm = mdlm_loss(logits[:, K:].flatten(0, 1), targets[:, K:].flatten(0, 1), masked, t)
            loss = loss + self.mdlm_weight * mdlm.loss
            metrics["mdlm"] = mdlm.loss.detach()
        if evaluate:
            metrics.update(alpha_metrics(window_logits.argmax(-1) == window_targets))
        return loss, metrics

    def _anchors(self, B: int, L: int, k: int, evaluate: bool, generator, device) -> torch.Tensor:
        if evaluate:
            return val_anchors(B, L, self.window, k, device)
        return train_anchors(B, L, self.window, k, generator, device)  # (B, k)


class PretrainModule(L.LightningModule):
    """Runs an objective; each validation round goes to `val_history`, a CSV row and one progress line.

    Between validations a training line (step/total, loss, elapsed) goes to `progress` every `progress_every_s`
    seconds, so a build on a loaded machine is never silent for long (the Lightning bar is off in stage logs).
    """

    def __init__(self, model: torch.nn.Module, objective: Objective, lr: float, max_steps: int,
                 warmup_steps: int = 50, weight_decay: float = 0.1, seed: int = 0, csv_path: str | Path | None = None,
                 progress: Callable[[str], None] | None = None, name: str = "model", progress_every_s: float = 30.0):
        super().__init__()
        self.model = model
        self.objective = objective
        self.lr, self.max_steps, self.warmup_steps, self.weight_decay = lr, max_steps, warmup_steps, weight_decay
        self.seed = seed
        self.csv_path, self.progress, self.name = csv_path, progress, name
        self.val_history: list[dict] = []
        self._val_sums: dict[str, float] = {}
        self._val_rows = 0
        self._t0 = time.perf_counter()
        self.progress_every_s = progress_every_s
        self._last_progress = self._t0

    def training_step(self, batch, batch_idx):
        loss, metrics = self.objective(self.model, batch[0], None)
        self.log("train/loss", loss, prog_bar=True)
        for k, v in metrics.items():
            self.log(f"train/{k}", v)
        self._report_training(loss)
        return loss

    def _report_training(self, loss: torch.Tensor) -> None:
        now = time.perf_counter()
        if self.progress is None or now - self._last_progress < self.progress_every_s:
            return
        self._last_progress = now
        step = int(self.global_step) + 1  # this batch's optimizer step
        self.progress(f"{self.name} step {step}/{self.max_steps} train/loss {float(loss.detach()):.3f}"
                      f" ({now - self._t0:.0f} s)")

    def on_validation_epoch_start(self):
        self._val_sums, self._val_rows = {}, 0
        # Same masks at every validation: curves compare like with like.
        self._val_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)

    def validation_step(self, batch, batch_idx):
        loss, metrics = self.objective(self.model, batch[0], self._val_gen, evaluate=True)
        n = batch[0].shape[0]  # weight by rows: every held-out window counts once
        for k, v in {"loss": loss, **metrics}.items():
            self._val_sums[k] = self._val_sums.get(k, 0.0) + float(v) * n
        self._val_rows += n

    def on_validation_epoch_end(self):
        means = {k: v / max(self._val_rows, 1) for k, v in self._val_sums.items()}
        for k, v in means.items():
            self.log(f"val/{k}", v, prog_bar=(k == "loss"))
        row = {"step": int(self.global_step), "wall_s": round(time.perf_counter() - self._t0, 1),
               **{f"val/{k}": round(v, 5) for k, v in means.items()}}
        self.val_history.append(row)
        self._write_csv(row)
        if self.progress is not None:
            alphas = "".join(f" α{j} {means[f'alpha_{j}']:.3f}" for j in (1, 4) if f"alpha_{j}" in means)
            self.progress(f"{self.name} step {row['step']}/{self.max_steps} val/loss {means['loss']:.3f}{alphas}"
                          f" ({row['wall_s']:.0f} s)")

    def _write_csv(self, row: dict) -> None:
        if self.csv_path is None:
            return
        path = Path(self.csv_path)
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

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
