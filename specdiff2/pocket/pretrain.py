"""Pretraining of the pocket models: the autoregressive LM objective and the dense diffusion-drafter objective.

Objectives are callables `(model, batch, generator, evaluate) -> (loss, metrics)`; one Lightning module runs
either, so the verifier, the AR drafter and the diffusion drafter share the loop. Both objectives are a
`losses.LossMix` over the shared loss terms (next-token "ar", window "ce", "streak", "mdlm"), and in evaluation
both report the greedy acceptance proxy α_j (`losses.prefix_match`) on held-out windows (anchors evenly spaced
over each validation row): the fraction of windows whose argmax matches the true tokens at positions 1..j
(SpecDiff-2 Fig. 2). For an AR model the teacher-forced argmax equals its greedy rollout for as long as it
matches, so its α_j is exact too.

The diffusion drafter (`DenseDrafterObjective`) is trained in the layout it drafts in: a causal clean stream
(the whole row) followed by one MASK block of γ per window anchor (`data.windows.shared_layout`), so one forward
trains every window of the row and the clean stream is shared by all of them.

Optimiser and trainer arrive as factories of the conf/optim and conf/trainer kind (`pretrain_optim`,
`pretrain_trainer`: the pocket spec feeds each model's lr, warmup, steps, device and validation cadence); metrics
go through Lightning's logger, the CSV logger train.py writes (`<stage>/csv/version_0/metrics.csv`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning as L
import torch

from specdiff2.data.windows import shared_layout
from specdiff2.losses import AR_STREAM, MDLM_PASS, LossMix
from specdiff2.losses.diffusion import mdlm_noise
from specdiff2.losses.prefix_match import alpha_metrics
from specdiff2.pocket.spec import ModelSpec, PocketSpec
from specdiff2.training.loggers import ContinuedCSVLogger

Objective = Callable[..., tuple[torch.Tensor, dict]]


def val_anchors(batch: int, length: int, gamma: int, k: int, device=None) -> torch.Tensor:
    """(batch, k) window offsets evenly spaced over 1..length−γ: the same held-out windows every round."""
    return torch.linspace(1, length - gamma, k, device=device).round().long().expand(batch, k)


def train_anchors(batch: int, length: int, gamma: int, k: int, generator=None, device=None) -> torch.Tensor:
    """(batch, k) distinct offsets in 1..length−γ, one drawn uniformly from each of k integer strata."""
    edges = torch.linspace(0, length - gamma, k + 1, device=device).round().long()  # (k+1,) stratum bounds
    u = torch.rand(batch, k, device=device, generator=generator)  # (B, k)
    return 1 + edges[:-1] + (u * (edges[1:] - edges[:-1])).floor().long()  # (B, k)


def _metrics(out) -> dict[str, torch.Tensor]:
    return {**out.components, **out.metrics}


@dataclass
class ARObjective:
    """Next-token CE (the "ar" loss); in evaluation also α_1..α_window at `windows_per_row` anchors per row
    (teacher-forced)."""

    window: int = 16
    windows_per_row: int = 8
    loss: LossMix = field(default_factory=lambda: LossMix({"ar": 1.0}))

    def __call__(self, model, input_ids, generator=None, evaluate: bool = False) -> tuple[torch.Tensor, dict]:
        logits = model(input_ids=input_ids).logits  # (B, L, V)
        out = self.loss({"ar_logits": logits[:, :-1].float(), "ar_targets": input_ids[:, 1:]})  # (B, L−1, ·)
        metrics = _metrics(out)
        if evaluate:
            B, L = input_ids.shape
            at = val_anchors(B, L, self.window, self.windows_per_row, input_ids.device)[..., None] \
                + torch.arange(self.window, device=input_ids.device)  # (B, K, γ) target positions
            rows = torch.arange(B, device=input_ids.device)[:, None, None]
            hits = logits[rows, at - 1].argmax(-1) == input_ids[rows, at]  # (B, K, γ)
            metrics.update(alpha_metrics(hits.flatten(0, 1)))
        return out.loss, metrics


@dataclass
class DenseDrafterObjective:
    """Dense drafting-condition training of a causal-prefix, shifted-logit diffusion drafter.

    Each row [x_0..x_{L−1}] becomes [clean x (causal) ‖ K blocks of γ MASKs]; block k sits at RoPE positions
    o_k..o_k+γ−1, sees the clean tokens < o_k and itself, and scores x_{o_k..o_k+γ−1} (q_1 from the clean token
    o_k − 1, q_j from its mask j − 2). Loss, a LossMix in this order (the order of the sum):
        "ce"     window CE (mean over the K·γ positions)
      + streak_weight · "streak": −E[streak] of the window blocks against the data tokens
      + ar_weight · "ar": the clean stream's next-token CE (the same head: every position of the row as a q_1)
      + mdlm_weight · "mdlm": MDLM over `mdlm_windows_per_row` extra blocks per row whose positions are each
        masked w.p. t ~ U(0, 1] (the rest show the true token: later denoising steps), CE/t over the masked ones.
    """

    mask_token_id: int
    window: int = 16
    windows_per_row: int = 8
    ar_weight: float = 1.0
    mdlm_weight: float = 0.0
    mdlm_windows_per_row: int = 2
    streak_weight: float = 0.0

    def __post_init__(self):
        self.loss = LossMix({"ce": 1.0, "streak": self.streak_weight, "ar": self.ar_weight,
                             "mdlm": self.mdlm_weight})

    def __call__(self, model, input_ids, generator=None, evaluate: bool = False) -> tuple[torch.Tensor, dict]:
        B, L = input_ids.shape
        dev, gamma, K = input_ids.device, self.window, self.windows_per_row
        extra = self.mdlm_windows_per_row if self.loss.needs(MDLM_PASS) else 0
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

        batch = {"drafter_logits": logits[:, :K].flatten(0, 1), "targets": targets[:, :K].flatten(0, 1)}  # (B·K, γ, ·)
        if self.loss.needs(AR_STREAM):  # clean token i predicts i + 1
            batch.update(ar_logits=head(hidden[:, : L - 1]).float(), ar_targets=input_ids[:, 1:])  # (B, L−1, ·)
        if extra:
            batch.update(mdlm_logits=logits[:, K:].flatten(0, 1), mdlm_targets=targets[:, K:].flatten(0, 1),
                         mdlm_masked=masked, mdlm_t=t)  # (B·extra, γ, ·)
        out = self.loss(batch)
        metrics = _metrics(out)
        if evaluate:
            metrics.update(alpha_metrics(batch["drafter_logits"].argmax(-1) == batch["targets"]))
        return out.loss, metrics

    def _anchors(self, B: int, L: int, k: int, evaluate: bool, generator, device) -> torch.Tensor:
        if evaluate:
            return val_anchors(B, L, self.window, k, device)
        return train_anchors(B, L, self.window, k, generator, device)  # (B, k)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int,
                           min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the optimizer's lr over num_warmup_steps (the first step already at 1/num_warmup_steps),
    then cosine down to min_ratio · lr at num_training_steps (conf/optim's scheduler interface)."""

    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return (step + 1) / num_warmup_steps
        frac = min(1.0, (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# The pretraining recipe all pocket models share; the spec of each model feeds lr, warmup and steps.
PRETRAIN_ADAMW = {"betas": (0.9, 0.95), "weight_decay": 0.1}  # decay on matrices only (PretrainModule's groups)
PRETRAIN_MIN_LR_RATIO = 0.1
PRETRAIN_TRAINER = {"devices": 1, "gradient_clip_val": 1.0, "check_val_every_n_epoch": None,
                    "num_sanity_val_steps": 0, "enable_checkpointing": False, "enable_model_summary": False,
                    "enable_progress_bar": False}  # no checkpoints: each stage saves its model itself


def pretrain_optim(m: ModelSpec) -> tuple[Callable, Callable]:
    """(optimizer, scheduler) factories of conf/optim's kind for model spec m: optimizer(param_groups),
    scheduler(optimizer, num_training_steps=...)."""
    return (partial(torch.optim.AdamW, lr=m.lr, **PRETRAIN_ADAMW),
            partial(warmup_cosine_schedule, num_warmup_steps=m.warmup_steps, min_ratio=PRETRAIN_MIN_LR_RATIO))


def pretrain_trainer(spec: PocketSpec, m: ModelSpec) -> Callable[..., L.Trainer]:
    """A lightning.Trainer factory of conf/trainer's kind (the caller adds the logger), from the pocket spec."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no device banners and tips per stage
    return partial(L.Trainer, max_steps=m.steps, accelerator=spec.accelerator, precision=spec.precision,
                   val_check_interval=min(spec.val_every, m.steps), limit_val_batches=spec.val_batches,
                   log_every_n_steps=min(spec.val_every, m.steps), **PRETRAIN_TRAINER)


def pretrain_logger(out: Path) -> ContinuedCSVLogger:
    """train.py's CSV logger, under the stage directory: <out>/csv/version_0/metrics.csv."""
    return ContinuedCSVLogger(str(out), name="csv", flush_logs_every_n_steps=1)


class PretrainModule(L.LightningModule):
    """Runs an objective; each validation round goes to `val_history`, the trainer's logger and one progress line.

    optimizer(param_groups) and scheduler(optimizer, num_training_steps=max_steps) are conf/optim's factories
    (`pretrain_optim`). Between validations a training line (step/total, loss, elapsed) goes to `progress` every
    `progress_every_s` seconds, so a build on a loaded machine is never silent for long (the Lightning bar is off
    in stage logs).
    """

    def __init__(self, model: torch.nn.Module, objective: Objective, optimizer: Callable, max_steps: int,
                 scheduler: Callable | None = None, seed: int = 0, progress: Callable[[str], None] | None = None,
                 name: str = "model", progress_every_s: float = 30.0):
        super().__init__()
        self.model = model
        self.objective = objective
        self.optimizer_factory, self.scheduler_factory, self.max_steps = optimizer, scheduler, max_steps
        self.seed = seed
        self.progress, self.name = progress, name
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
        if self.progress is not None:
            alphas = "".join(f" α{j} {means[f'alpha_{j}']:.3f}" for j in (1, 4) if f"alpha_{j}" in means)
            self.progress(f"{self.name} step {row['step']}/{self.max_steps} val/loss {means['loss']:.3f}{alphas}"
                          f" ({row['wall_s']:.0f} s)")

    def configure_optimizers(self):
        # Weight decay on matrices only: norms and biases get a group of their own with 0.
        named = list(self.model.named_parameters())
        groups = [{"params": [p for _, p in named if p.ndim >= 2]},
                  {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}]
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, num_training_steps=self.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
