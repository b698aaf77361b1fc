"""Training losses: streak distillation, AR-distillation baselines, masked diffusion, and their weighted mix.

Every loss is a pure function returning `LossOutput(loss, metrics, per_row, per_position)`; `loss` is a scalar
to minimise, metrics carry plain names (the caller namespaces them, e.g. "train/expected_streak").

`LossMix` reads its inputs from a batch dict with these keys:
    window losses ("streak", "streak_soft", "ce", "kl", "tvd"):
        "drafter_logits" (B, γ, V), "targets" (B, γ) long, "mask" (B, γ) bool (optional);
        "streak_soft"/"kl"/"tvd" also need "verifier_probs" (B, γ, V) or
        "verifier_topk_ids" + "verifier_topk_logprobs" (B, γ, k).
    "mdlm": "mdlm_logits" (B, L, V), "mdlm_targets" (B, L), "mdlm_masked" (B, L) bool, "mdlm_t" (B,),
        "mdlm_loss_mask" (B, L) bool (optional).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor

from specdiff2.errors import ConfigError, require
from specdiff2.losses.diffusion import mdlm_loss, mdlm_noise, sample_mask
from specdiff2.losses.distill import ce_loss, forward_kl_loss, tvd_loss
from specdiff2.losses.streak import LossOutput, expected_streak, prefix_mask, streak_loss, streak_soft_loss

__all__ = [
    "LOSS_NAMES",
    "LossMix",
    "LossOutput",
    "MixOutput",
    "ce_loss",
    "expected_streak",
    "forward_kl_loss",
    "mdlm_loss",
    "mdlm_noise",
    "mix_losses",
    "prefix_mask",
    "sample_mask",
    "streak_loss",
    "streak_soft_loss",
    "tvd_loss",
]


@dataclass(frozen=True)
class MixOutput:
    """loss: () weighted total to minimise; components: detached unweighted losses keyed "<name>_loss";
    metrics: the components' metrics merged (their names are distinct across losses)."""

    loss: Tensor
    components: dict[str, Tensor]
    metrics: dict[str, Tensor]


def mix_losses(outputs: Mapping[str, LossOutput], weights: Mapping[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
    """(Σ_name weights[name] · outputs[name].loss, {"<name>_loss": detached unweighted loss})."""
    require(len(outputs) > 0, "mix_losses needs at least one loss output", ConfigError)
    missing = sorted(set(outputs) - set(weights))
    require(not missing, f"no weight for losses {missing}; add them to the loss weights", ConfigError)
    total = sum(weights[name] * out.loss for name, out in outputs.items())
    components = {f"{name}_loss": out.loss.detach() for name, out in outputs.items()}
    return total, components


def _get(batch: Mapping[str, Tensor], key: str, name: str) -> Tensor:
    require(key in batch, f"loss '{name}' needs batch key '{key}'; produce it or set the '{name}' weight to 0",
            ConfigError)
    return batch[key]


def _verifier(batch: Mapping[str, Tensor], name: str) -> dict[str, Tensor | None]:
    if "verifier_probs" in batch:
        return {"verifier_probs": batch["verifier_probs"]}
    require("verifier_topk_ids" in batch and "verifier_topk_logprobs" in batch,
            f"loss '{name}' needs 'verifier_probs' or 'verifier_topk_ids' + 'verifier_topk_logprobs' in the batch; "
            f"store verifier distributions with the trajectories or set the '{name}' weight to 0", ConfigError)
    return {"verifier_topk_ids": batch["verifier_topk_ids"], "verifier_topk_logprobs": batch["verifier_topk_logprobs"]}


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class LossMix:
    """Weighted sum of named losses, e.g. LossMix({"streak": 1.0, "ce": 0.1}).

    Components with weight 0 are not computed. temperature applies to the drafter in every window loss
    ("match deployment"); normalize_streak divides the streak losses by γ.
    """

    def __init__(self, weights: Mapping[str, float], *, temperature: float = 1.0, normalize_streak: bool = False):
        unknown = sorted(set(weights) - set(LOSS_NAMES))
        require(not unknown, f"unknown losses {unknown}; choose from {list(LOSS_NAMES)}", ConfigError)
        require(all(_real(w) and math.isfinite(w) and w >= 0 for w in weights.values()),
                f"loss.weights={dict(weights)}; each weight must be a finite number >= 0 (0 switches a loss off)",
                ConfigError)
        require(_real(temperature) and temperature > 0, f"loss.temperature={temperature!r}; set a number > 0",
                ConfigError)
        self.weights = {name: float(w) for name, w in weights.items() if w != 0}
        require(bool(self.weights), f"all loss weights are 0 in {dict(weights)}; enable at least one loss", ConfigError)
        self.temperature = temperature
        self.normalize_streak = normalize_streak

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def __call__(self, batch: Mapping[str, Tensor]) -> MixOutput:
        outputs = {name: LOSS_NAMES[name](self, batch, name) for name in self.weights}
        total, components = mix_losses(outputs, self.weights)
        metrics = {key: value for out in outputs.values() for key, value in out.metrics.items()}
        return MixOutput(total, components, metrics)

    def _streak(self, batch: Mapping[str, Tensor], name: str) -> LossOutput:
        return streak_loss(_get(batch, "drafter_logits", name), _get(batch, "targets", name), batch.get("mask"),
                           temperature=self.temperature, normalize=self.normalize_streak)

    def _streak_soft(self, batch: Mapping[str, Tensor], name: str) -> LossOutput:
        return streak_soft_loss(_get(batch, "drafter_logits", name), mask=batch.get("mask"),
                                temperature=self.temperature, normalize=self.normalize_streak,
                                **_verifier(batch, name))

    def _ce(self, batch: Mapping[str, Tensor], name: str) -> LossOutput:
        return ce_loss(_get(batch, "drafter_logits", name), _get(batch, "targets", name), batch.get("mask"),
                       temperature=self.temperature)

    def _kl(self, batch: Mapping[str, Tensor], name: str) -> LossOutput:
        return forward_kl_loss(_get(batch, "drafter_logits", name), mask=batch.get("mask"),
                               temperature=self.temperature, **_verifier(batch, name))

    def _tvd(self, batch: Mapping[str, Tensor], name: str) -> LossOutput:
        return tvd_loss(_get(batch, "drafter_logits", name), mask=batch.get("mask"),
                        temperature=self.temperature, **_verifier(batch, name))

    def _mdlm(self, batch: Mapping[str, Tensor], name: str) -> LossOutput:
        return mdlm_loss(_get(batch, "mdlm_logits", name), _get(batch, "mdlm_targets", name),
                         _get(batch, "mdlm_masked", name), _get(batch, "mdlm_t", name), batch.get("mdlm_loss_mask"))


# Component name -> method computing it from a batch dict (the keys LossMix weights may use).
LOSS_NAMES: dict[str, Callable[[LossMix, Mapping[str, Tensor], str], LossOutput]] = {
    "streak": LossMix._streak,
    "streak_soft": LossMix._streak_soft,
    "ce": LossMix._ce,
    "kl": LossMix._kl,
    "tvd": LossMix._tvd,
    "mdlm": LossMix._mdlm,
}
