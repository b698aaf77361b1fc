"""Training losses: streak distillation, AR-distillation baselines, masked diffusion, and their weighted mix.

Every loss is a pure function returning `LossOutput(loss, metrics, per_row, per_position)`; `loss` is a scalar
to minimise, metrics carry plain names (the caller namespaces them, e.g. "train/expected_streak").

`LossMix` reads its inputs from a batch dict with these keys:
    window losses ("streak", "streak_soft", "ce", "kl", "rkl", "tvd"):
        "drafter_logits" (B, γ, V), "targets" (B, γ) long, "mask" (B, γ) bool (optional);
        losses that need VERIFIER_DIST ("streak_soft", "kl", "rkl", "tvd") also read "verifier_probs" (B, γ, V) or
        "verifier_topk_ids" + "verifier_topk_logprobs" (B, γ, k).
    "mdlm" (needs MDLM_PASS): "mdlm_logits" (B, L, V), "mdlm_targets" (B, L), "mdlm_masked" (B, L) bool,
        "mdlm_t" (B,), "mdlm_loss_mask" (B, L) bool (optional).
    "ar" (needs AR_STREAM): "ar_logits" (B, L, V) of a causal pass over clean sequences, "ar_targets" (B, L) the
        next tokens, "ar_mask" (B, L) bool (optional): next-token CE (pocket pretraining).
Each loss declares those extra inputs in its `LossTerm`; callers ask `LossMix.needs(...)`, never a list of names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor

from specdiff2.errors import ConfigError, is_real, require
from specdiff2.losses.diffusion import mdlm_loss, mdlm_noise, sample_mask
from specdiff2.losses.distill import ce_loss, forward_kl_loss, reverse_kl_loss, tvd_loss
from specdiff2.losses.streak import LossOutput, expected_streak, prefix_mask, streak_loss, streak_soft_loss

__all__ = [
    "AR_STREAM",
    "LOSSES",
    "MDLM_PASS",
    "VERIFIER_DIST",
    "LossMix",
    "LossOutput",
    "LossTerm",
    "MixOutput",
    "ce_loss",
    "expected_streak",
    "forward_kl_loss",
    "mdlm_loss",
    "mdlm_noise",
    "mix_losses",
    "prefix_mask",
    "reverse_kl_loss",
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



# Inputs a loss may need beyond the window batch ("drafter_logits", "targets", "mask"); the caller produces each
# only when an enabled loss asks for it (`LossMix.needs`).
VERIFIER_DIST = "verifier_dist"  # "verifier_probs", or "verifier_topk_ids" + "verifier_topk_logprobs"
MDLM_PASS = "mdlm_pass"  # the "mdlm_*" keys: a separate forward pass over a noised copy of the sequences
AR_STREAM = "ar_stream"  # the "ar_*" keys: next-token logits of a causal pass over the clean sequences


@dataclass(frozen=True)
class LossTerm:
    """One loss LossMix can weight: how it is computed from the batch dict, and what that batch must carry."""

    compute: Callable[[LossMix, Mapping[str, Tensor], str], LossOutput]
    needs: frozenset[str] = frozenset()  # of VERIFIER_DIST, MDLM_PASS, AR_STREAM


class LossMix:
    """Weighted sum of named losses, e.g. LossMix({"streak": 1.0, "ce": 0.1}).

    Components with weight 0 are not computed. temperature applies to the drafter in every window loss
    ("match deployment"); normalize_streak divides the streak losses by γ.
    """

    def __init__(self, weights: Mapping[str, float], *, temperature: float = 1.0, normalize_streak: bool = False):
        unknown = sorted(set(weights) - set(LOSSES))
        require(not unknown, f"unknown losses {unknown}; choose from {list(LOSSES)}", ConfigError)
        require(all(is_real(w) and math.isfinite(w) and w >= 0 for w in weights.values()),
                f"loss.weights={dict(weights)}; each weight must be a finite number >= 0 (0 switches a loss off)",
                ConfigError)
        require(is_real(temperature) and temperature > 0, f"loss.temperature={temperature!r}; set a number > 0",
                ConfigError)
        self.weights = {name: float(w) for name, w in weights.items() if w != 0}
        require(bool(self.weights), f"all loss weights are 0 in {dict(weights)}; enable at least one loss", ConfigError)
        self.temperature = temperature
        self.normalize_streak = normalize_streak

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def needs(self, inputs: str) -> tuple[str, ...]:
        """The enabled losses that read `inputs` (VERIFIER_DIST, MDLM_PASS, AR_STREAM); empty: the caller may skip
        producing it."""
        return tuple(name for name in self.weights if inputs in LOSSES[name].needs)

    def __call__(self, batch: Mapping[str, Tensor]) -> MixOutput:
        outputs = {name: LOSSES[name].compute(self, batch, name) for name in self.weights}
        total, components = mix_losses(outputs, self.weights)
        metrics = {key: value for out in outputs.values() for key, value in out.metrics.items()}
        return MixOutput(total, components, metrics)


def _streak(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    return streak_loss(_get(batch, "drafter_logits", name), _get(batch, "targets", name), batch.get("mask"),
                       temperature=mix.temperature, normalize=mix.normalize_streak)


def _streak_soft(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    return streak_soft_loss(_get(batch, "drafter_logits", name), mask=batch.get("mask"),
                            temperature=mix.temperature, normalize=mix.normalize_streak, **_verifier(batch, name))


def _ce(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    return ce_loss(_get(batch, "drafter_logits", name), _get(batch, "targets", name), batch.get("mask"),
                   temperature=mix.temperature)


def _kl(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    return forward_kl_loss(_get(batch, "drafter_logits", name), mask=batch.get("mask"),
                           temperature=mix.temperature, **_verifier(batch, name))


def _rkl(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    return reverse_kl_loss(_get(batch, "drafter_logits", name), mask=batch.get("mask"),
                           temperature=mix.temperature, **_verifier(batch, name))


def _tvd(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    return tvd_loss(_get(batch, "drafter_logits", name), mask=batch.get("mask"),
                    temperature=mix.temperature, **_verifier(batch, name))


def _mdlm(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    return mdlm_loss(_get(batch, "mdlm_logits", name), _get(batch, "mdlm_targets", name),
                     _get(batch, "mdlm_masked", name), _get(batch, "mdlm_t", name), batch.get("mdlm_loss_mask"))


def _ar(mix: LossMix, batch: Mapping[str, Tensor], name: str) -> LossOutput:
    out = ce_loss(_get(batch, "ar_logits", name), _get(batch, "ar_targets", name), batch.get("ar_mask"))
    return LossOutput(out.loss, {f"ar_{key}": value for key, value in out.metrics.items()}, out.per_row)


# The losses LossMix weights may name. A new loss: its function beside the others, one entry here, a conf/loss YAML.
LOSSES: dict[str, LossTerm] = {
    "streak": LossTerm(_streak),
    "streak_soft": LossTerm(_streak_soft, frozenset({VERIFIER_DIST})),
    "ce": LossTerm(_ce),
    "kl": LossTerm(_kl, frozenset({VERIFIER_DIST})),
    "rkl": LossTerm(_rkl, frozenset({VERIFIER_DIST})),
    "tvd": LossTerm(_tvd, frozenset({VERIFIER_DIST})),
    "mdlm": LossTerm(_mdlm, frozenset({MDLM_PASS})),
    "ar": LossTerm(_ar, frozenset({AR_STREAM})),
}
