"""Streak distillation of a masked-diffusion drafter to a verifier, as a LightningModule.

The drafter is an HF Qwen2ForCausalLM (Dream layout, `load_hf_drafter`), trained in full or through LoRA.
Batches come from `TrajectoryDataModule` (packed windows); the loss is a `LossMix` (streak, streak_soft, ce,
kl, tvd, mdlm). The verifier is loaded only for online soft targets (`verifier_path` with `online_topk` > 0)
and never trained or checkpointed.

Validation (held-out prompts, exact packing) logs, whatever the training loss:
    val/expected_streak  mean over windows of Σ_m Π_{j≤m} q_j(x_j), drafter temperature `val_temperature`:
                         the streak objective itself, ModelCheckpoint's monitor;
    val/alpha_j          joint prefix-match acceptance (losses/prefix_match.py): among windows with ≥ j targets,
                         the fraction whose drafter argmax (greedy, so temperature-free) matches the verifier
                         tokens at all of positions 1..j, i.e. a greedy verification of the one-pass draft accepts
                         ≥ j tokens. Non-increasing in j; vLLM speculators' reference_acc_at_pos_{j−1};
    val/marginal_prod_at_pos_j  Π_{i≤j} m_i of the per-position match rates m_i: what α_j would be if positions
                         hit independently. α_j − this = how much hits cluster within windows;
    val/greedy_streak    mean number of leading argmax matches (Σ_j α_j when every window has γ targets);
    val/ce, val/loss     per-position CE on verifier tokens, and the training loss mix.
The same metrics on a slice of training windows (the datamodule's second validation loader) go to val_train/...:
val_train/expected_streak above val/expected_streak is overfitting to the training prompts.
Every training step reseeds torch from (seed, batches seen) so dropout and MDLM masks replay identically when
a run resumes from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from specdiff2.data.windows import window_logits
from specdiff2.errors import ConfigError, TrainingError, is_int, is_real, require
from specdiff2.losses import (
    AR_STREAM,
    MDLM_PASS,
    VERIFIER_DIST,
    LossMix,
    ce_loss,
    mdlm_noise,
    prefix_mask,
    streak_loss,
)
from specdiff2.losses.prefix_match import PrefixMatchCounts, prefix_match_counts, prefix_match_metrics
from specdiff2.models.diffusion import align_logits
from specdiff2.models.dtypes import check_dtype, torch_dtype

VAL_VIEWS = ("val", "val_train")  # validation dataloader index -> metric namespace (TrajectoryDataModule's order)



def lora_config(**settings):
    """peft.LoraConfig of conf/peft (`peft.lora`), with one line for the values peft refuses in a traceback."""
    from peft import LoraConfig

    r = settings.get("r")
    require(is_int(r, 1), f"peft.lora.r={r!r}; set an integer >= 1 "
            "(the adapter rank)", ConfigError)
    alpha, dropout = settings.get("lora_alpha", 8), settings.get("lora_dropout", 0.0)
    require(is_real(alpha) and alpha > 0, f"peft.lora.lora_alpha={alpha!r}; set a number > 0", ConfigError)
    require(is_real(dropout) and 0 <= dropout < 1, f"peft.lora.lora_dropout={dropout!r}; set a number in [0, 1)",
            ConfigError)
    try:
        return LoraConfig(**settings)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"peft.lora is invalid ({err}); fix that value under peft.lora") from None


class DistillModule(L.LightningModule):
    def __init__(self, drafter_path: str, loss: LossMix, optimizer: Callable, scheduler: Callable | None = None,
                 lora: Any | None = None, dtype: str = "float32", shifted: bool = True, mask_token_id: int = 0,
                 seed: int = 0, val_temperature: float = 1.0, verifier_path: str | None = None,
                 online_topk: int = 0, gradient_checkpointing: bool = False):
        super().__init__()
        check_dtype(dtype, "drafter.dtype")
        require(online_topk == 0 or verifier_path is not None, "online_topk > 0 needs verifier_path", ConfigError)
        require(not loss.needs(AR_STREAM), f"losses {list(loss.needs(AR_STREAM))} need a clean-stream pass, which "
                "only pocket pretraining runs; set their loss.weights to 0", ConfigError)
        self.drafter_path, self.loss, self.optimizer_factory, self.scheduler_factory = drafter_path, loss, \
            optimizer, scheduler
        self.lora, self.dtype_name, self.shifted, self.mask_token_id = lora, dtype, shifted, mask_token_id
        self.seed, self.val_temperature, self.gradient_checkpointing = seed, val_temperature, gradient_checkpointing
        self.verifier_path, self.online_topk = verifier_path, online_topk
        self.drafter = None
        self.strict_loading = lora is None  # LoRA checkpoints hold only the adapter (see on_save_checkpoint)
        self.batches_seen = 0
        self.val_history: list[dict] = []
        self._val_sums: dict[str, torch.Tensor] = {}

    # ---- model -------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.drafter is not None:
            return
        from specdiff2.models.hf import load_hf_drafter

        model = load_hf_drafter(self.drafter_path, torch_dtype(self.dtype_name))
        model.train()  # from_pretrained returns eval mode, and Lightning keeps submodule modes as found
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if self.lora is not None:
            from peft import get_peft_model

            try:
                model = get_peft_model(model, self.lora)
            except ValueError as err:  # peft's NoMatchingPeftModuleError: no module has a target name
                modules = sorted(self.lora.target_modules or [])
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ConfigError(f"peft.lora.target_modules={modules} match no module of the drafter ({reason}); "
                                  "use its projection names (q_proj, v_proj, gate_proj, ...)") from None
        self.drafter = model

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def _verifier(self):
        """The frozen verifier (our inference Transformer), loaded on first use, never a registered submodule."""
        if self.__dict__.get("_verifier_model") is None:
            from specdiff2.models.checkpoint import load_transformer

            model, _ = load_transformer(self.verifier_path, torch_dtype(self.dtype_name), self.device)
            self.__dict__["_verifier_model"] = model.eval().requires_grad_(False)
        return self.__dict__["_verifier_model"]

    # ---- loss --------------------------------------------------------------------------------------------
    def _loss_inputs(self, batch: dict) -> dict:
        logits = window_logits(self.drafter, batch).float()  # (W, γ, V)
        inputs = {"drafter_logits": logits, "targets": batch["targets"], "mask": batch["mask"]}
        if self.online_topk:
            inputs["verifier_topk_ids"], inputs["verifier_topk_logprobs"] = self._online_topk(batch, logits.shape[-1])
        elif "verifier_topk_ids" in batch:
            inputs["verifier_topk_ids"] = batch["verifier_topk_ids"]
            inputs["verifier_topk_logprobs"] = batch["verifier_topk_logprobs"]
        if self.loss.needs(MDLM_PASS):
            inputs.update(self._mdlm_inputs(batch))
        return inputs

    @torch.no_grad()
    def _online_topk(self, batch: dict, drafter_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Verifier top-k (W, γ, k) at each window target, from one causal pass over the batch's trajectories."""
        clean = batch["clean_ids"]  # (N, T)
        positions = torch.arange(clean.shape[1], device=clean.device)[None].expand_as(clean)  # (N, T)
        verifier = self._verifier()
        hidden = verifier.hidden_states(clean, positions)  # (N, T, H)
        gamma = batch["targets"].shape[1]
        # Logits at t − 1 predict token t: the window's target j sits at offset + j.
        at = (batch["window_offset"][:, None] + torch.arange(gamma, device=clean.device) - 1)  # (W, γ)
        at = at.clamp_max(clean.shape[1] - 1)
        # Only the W·γ needed rows go through the head; normalised over the ids both models have (the drafter
        # can never propose the others).
        logits = verifier.lm_head(hidden[batch["window_traj"][:, None], at])[..., :drafter_vocab]  # (W, γ, V)
        lp, ids = torch.log_softmax(logits.float(), dim=-1).topk(self.online_topk, dim=-1)  # (W, γ, k)
        return ids, lp

    def _mdlm_inputs(self, batch: dict) -> dict:
        clean, lengths = batch["clean_ids"], batch["clean_len"]  # (N, T), (N,)
        n, width = clean.shape
        valid = torch.arange(width, device=clean.device)[None] < lengths[:, None]  # (N, T)
        protect = ~valid
        protect[:, 0] |= self.shifted  # a shifted drafter has no predictor for position 0
        noisy, masked, t = mdlm_noise(clean, self.mask_token_id, protect=protect)  # (N, T), (N, T), (N,)
        attn = (valid[:, None, :] | torch.eye(width, dtype=torch.bool, device=clean.device))[:, None]  # (N,1,T,T)
        positions = torch.arange(width, device=clean.device)[None].expand(n, -1)  # (N, T)
        logits = self.drafter(input_ids=noisy, attention_mask=attn, position_ids=positions).logits
        return {"mdlm_logits": align_logits(logits, self.shifted).float(), "mdlm_targets": clean,
                "mdlm_masked": masked, "mdlm_t": t, "mdlm_loss_mask": valid}

    def on_fit_start(self) -> None:
        missing = not self.online_topk and not self._has_stored_topk()
        needs = list(self.loss.needs(VERIFIER_DIST))
        require(not (needs and missing), f"losses {needs} need verifier distributions: set "
                "data.generation.topk_logprobs > 0 (stored) or module.online_topk > 0 (online)", ConfigError)

    def _has_stored_topk(self) -> bool:
        dm = self.trainer.datamodule if self.trainer is not None else None
        trajs = getattr(dm, "trajectories", None) or []
        return bool(trajs) and trajs[0].topk_ids is not None

    # ---- steps -------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        torch.manual_seed(self.seed * 1_000_003 + self.batches_seen)  # dropout / MDLM masks replay on resume
        self.batches_seen += 1
        out = self.loss(self._loss_inputs(batch))
        self._stop_if_not_finite(out)
        windows = batch["targets"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=windows)
        for name, value in {**out.components, **out.metrics}.items():
            self.log(f"train/{name}", value, batch_size=windows)
        return out.loss

    def _stop_if_not_finite(self, out) -> None:
        """A NaN/inf loss ends the run here, before the optimizer writes it into the weights (one line)."""
        if bool(torch.isfinite(out.loss)):
            return
        loss = float(out.loss.detach())
        terms = ", ".join(f"{name}={float(value):.4g}" for name, value in out.components.items())
        raise TrainingError(f"train/loss={loss} at step {self.global_step + 1} ({terms}): training diverged; "
                            "lower optim.optimizer.lr or trainer.gradient_clip_val")

    def _stop_if_val_not_finite(self, metrics: dict[str, torch.Tensor]) -> None:
        """Finite weights can still give NaN logits (a huge step: every weight ~1e29); stop before the checkpoint."""
        bad = {k: float(v) for k, v in metrics.items() if k in ("ce", "loss") and not bool(torch.isfinite(v))}
        if bad:
            shown = ", ".join(f"val/{k}={v}" for k, v in bad.items())
            raise TrainingError(f"{shown} at step {self.global_step}: training diverged (non-finite drafter "
                                "logits); lower optim.optimizer.lr or trainer.gradient_clip_val")

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def _accumulate(self, view: str, **values: torch.Tensor) -> None:
        sums = self._val_sums.setdefault(view, {})
        for k, v in values.items():
            v = v.detach().double()
            sums[k] = sums[k] + v if k in sums else v

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        inputs = self._loss_inputs(batch)
        logits, targets, mask = inputs["drafter_logits"], batch["targets"], batch["mask"]
        valid = prefix_mask(mask, targets)  # (W, γ)
        streak = streak_loss(logits, targets, valid, temperature=self.val_temperature).per_row  # (W,)
        match = prefix_match_counts(logits.argmax(dim=-1) == targets, valid)  # (γ,) sums over windows
        ce = ce_loss(logits, targets, valid).loss * valid.sum()
        windows = valid[:, 0].sum()
        self._accumulate(VAL_VIEWS[dataloader_idx], streak=streak.sum(), windows=windows, greedy=match.joint.sum(),
                         joint=match.joint, marginal=match.marginal, reached=match.windows, ce=ce,
                         tokens=valid.sum(), loss=self.loss(inputs).loss * windows)

    def _view_metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sums = {k: self.trainer.strategy.reduce(v, reduce_op="sum") for k, v in sums.items()}
        windows, tokens = sums["windows"].clamp_min(1), sums["tokens"].clamp_min(1)
        return {"expected_streak": sums["streak"] / windows, "greedy_streak": sums["greedy"] / windows,
                "ce": sums["ce"] / tokens, "loss": sums["loss"] / windows,
                **prefix_match_metrics(PrefixMatchCounts(sums["joint"], sums["marginal"], sums["reached"]))}

    def on_validation_epoch_end(self) -> None:
        if not self._val_sums:
            return
        views = {view: self._view_metrics(sums) for view, sums in self._val_sums.items()}
        self._stop_if_val_not_finite(views.get("val", {}))
        for view, metrics in views.items():
            for name, value in metrics.items():
                self.log(f"{view}/{name}", value.float(), prog_bar=f"{view}/{name}" == "val/expected_streak")
        row = {k: float(v) for k, v in views.get("val", {}).items()}  # held-out keys stay plain ("alpha_1")
        row.update({f"{view}/{k}": float(v) for view, m in views.items() if view != "val" for k, v in m.items()})
        self.val_history.append({"step": int(self.global_step), **row})

    # ---- optimisation and checkpoints ------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for _, p in self.trainable_parameters()]
        require(bool(params), "the drafter has no trainable parameters; check peft.lora.target_modules", ConfigError)
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["batches_seen"] = self.batches_seen
        checkpoint["val_history"] = self.val_history
        if self.lora is not None and "state_dict" in checkpoint:  # frozen base weights are in drafter_path
            trainable = {n for n, _ in self.trainable_parameters()}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.batches_seen = int(checkpoint.get("batches_seen", 0))
        self.val_history = list(checkpoint.get("val_history", []))

