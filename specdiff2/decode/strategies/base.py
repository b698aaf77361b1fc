"""The drafting-strategy protocol, what every strategy gets at start-up, and small shared helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.sampling import SamplingParams, sample_probs
from specdiff2.errors import ConfigError


@dataclass
class EngineContext:
    """The verifier side a strategy (and the drafter factory, `decode.loading`) needs to know about."""

    verifier_tokenizer: object
    verifier_rows: int  # verifier embedding rows: the id space every draft and q lives in
    device: torch.device
    max_seq_len: int  # the verifier's static cache size; drafter caches match it
    compile: str = "eager"  # execution of the drafters' forwards, as the verifier's: eager | graph
    kernels: str = "eager"  # eager | elementwise | block (see models/runner.py)


@dataclass
class StepInput:
    """What a strategy reads each step: device tensors the engine owns, plus the static live-cache length.

    seq (S + slots,) long: committed tokens in seq[:length] (read-only for strategies); length 0-d long;
    budget 0-d long: the most draft tokens one path may have accepted this step (max_new_tokens and the context
    limit); kv_len: the static cache bucket every forward of this step reads (≥ length + the layout's nodes).
    """

    seq: torch.Tensor
    length: torch.Tensor
    budget: torch.Tensor
    kv_len: int


@runtime_checkable
class DraftStrategy(Protocol):
    """How a method proposes tokens. The engine (`decode/engine.py`) owns everything else.

    A strategy receives its models already built (`decode.loading`; conf/decode/*.yaml `models`) and never
    loads a checkpoint. The engine calls, in order: `prepare` once, then per prompt `reset`, and per step
    `draft` followed by `observe`. The engine owns the token buffer, the verifier and its KV cache, the
    acceptance rule and the stop conditions; a strategy owns only its drafters' state (their caches).

    `draft` and `observe` run inside the engine's captured step: pure device code at fixed shapes. No .item(),
    .tolist(), int(tensor), no Python branch on a tensor value, no new persistent tensors: per-step variation
    (an adaptive length, the budget, a tree built from this step's marginals) lives in device tensors, and the
    sizes `layout` states (nodes, depth) never change.
    """

    name: str  # method name used in outputs (ar, sd_ar, specdiff, self_select, diffuspec)
    # `layout` (decode.draft.Layout): the fixed verify layout of every draft, an attribute set by `prepare`.

    def prepare(self, ctx: EngineContext) -> None:
        """Once, at engine start-up: remember the device / verifier facts it needs (EOS id, vocabulary rows),
        check that its models fit them and set `layout`. Must not load checkpoints (they come built), touch the
        verifier, or draw random numbers."""

    def reset(self, prompt: torch.Tensor) -> None:
        """Before each prompt (P,) on the device: prefill its drafters' caches, reset adaptive state."""

    def draft(self, step: StepInput, sampling: SamplingParams, generator) -> Draft:
        """Propose draft tokens after seq[:length] in `layout`, with `limit` ≤ step.budget.

        Tokens must be verifier ids the drafter may propose (the drafter adapters' `proposable` mask). At
        temperature > 0 a lossless draft carries q_probs, the distribution each token was drawn from, and
        draws its randomness from `generator` only. May update its own drafters' caches; must not write the
        verifier or its cache.
        """

    def observe(self, n_accepted: torch.Tensor, live: torch.Tensor) -> None:
        """After the step: accepted draft tokens (0-d, the bonus/correction token not counted) and whether the
        request was still running. For adaptive strategies (DiffuSpec's draft length); device-side only."""

    def state_tensors(self) -> list[torch.Tensor]:
        """Device tensors `draft`/`observe` mutate (adaptive state): saved and restored around graph warm-up."""


def check_gamma(gamma: int) -> None:
    if gamma <= 0:
        raise ConfigError(f"draft length gamma={gamma} must be >= 1; set decode.strategy.gamma to a positive int")


PROPOSALS = ("sample", "argmax")


def check_proposal(proposal: str) -> None:
    if proposal not in PROPOSALS:
        raise ConfigError(f"decode.strategy.proposal={proposal!r} is unknown; use one of {PROPOSALS}")


def clamp_limit(depth: int, step: StepInput) -> torch.Tensor:
    """0-d long: a fixed-depth draft's limit this step (its depth, or less near max_new_tokens / the context)."""
    return step.budget.clamp(0, depth)


class OneDrafter:
    """The preamble of every strategy with one drafter and a draft window of γ (sd_ar, specdiff, self_select, tree,
    diffuspec), written once: γ checked, a chain layout of γ, the drafter prefilled per prompt, the window's MASK
    canvas and one drafter pass over it, and the step's limit (γ clamped to the budget). A strategy whose layout is
    not a chain of γ sets its own `layout` after `OneDrafter.prepare`."""

    def __init__(self, drafter, gamma: int):
        check_gamma(gamma)
        self.drafter, self.gamma = drafter, gamma

    def prepare(self, ctx: EngineContext) -> None:
        self.device = ctx.device
        self.layout = Layout.chain(self.gamma, ctx.device)

    def reset(self, prompt: torch.Tensor) -> None:
        self.drafter.prefill(prompt)

    def mask_canvas(self) -> torch.Tensor:
        """(γ,) long: the window before any token is drafted, all MASK (made in the step: no persistent tensor)."""
        return torch.full((self.gamma,), self.drafter.mask_token_id, dtype=torch.long, device=self.device)

    def window_logits(self, step: StepInput, canvas: torch.Tensor | None = None,
                      visible: torch.Tensor | None = None) -> torch.Tensor:
        """(γ, V) drafter logits of the window `canvas` (default: all MASK) after the committed tokens; `visible`
        (0-d): window rows see only its first `visible` tokens (`DiffusionDrafter.window_logits_at`)."""
        canvas = self.mask_canvas() if canvas is None else canvas
        return self.drafter.window_logits_at(step.seq, step.length, canvas, step.kv_len, self.gamma + 1, visible)

    def limit(self, step: StepInput) -> torch.Tensor:
        return clamp_limit(self.gamma, step)


class Stateless:
    """Default `observe` / `state_tensors` for strategies with no adaptive state."""

    def observe(self, n_accepted: torch.Tensor, live: torch.Tensor) -> None:
        pass

    def state_tensors(self) -> list[torch.Tensor]:
        return []


def pick_tokens(logits: torch.Tensor, sampling: SamplingParams, generator):
    """Greedy or sampled tokens from drafter logits (..., V); q is returned only when sampling."""
    if sampling.temperature == 0:
        return logits.argmax(-1), None
    q_probs = sampling.probs(logits)  # (..., V)
    return sample_probs(q_probs, generator), q_probs
