"""The drafting-strategy protocol, what every strategy gets at start-up, and small shared helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from specdiff2.decode.acceptance import sample_probs
from specdiff2.decode.draft import Draft
from specdiff2.decode.sampling import SamplingParams
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


@runtime_checkable
class DraftStrategy(Protocol):
    """How a method proposes tokens. The engine (`decode/engine.py`) owns everything else.

    A strategy receives its models already built (`decode.loading`; conf/decode/*.yaml `models`) and never
    loads a checkpoint. The engine calls, in order: `prepare` once, then per prompt `reset`, and per step
    `draft` followed by `observe`. The engine owns the token buffer, the verifier and its KV cache, the
    acceptance rule and the stop conditions; a strategy owns only its drafters' state (their caches).
    """

    name: str  # method name used in outputs (ar, sd_ar, specdiff, self_select, diffuspec)

    def prepare(self, ctx: EngineContext) -> None:
        """Once, at engine start-up: remember the device / verifier facts it needs (EOS id, vocabulary rows) and
        check that its models fit them. May allocate its own buffers. Must not load checkpoints (they come
        built), touch the verifier, or draw random numbers."""

    def reset(self) -> None:
        """Before each prompt: forget per-prompt state (drafter caches, adaptive lengths). Nothing else."""

    def draft(self, seq: torch.Tensor, length: int, budget: int, sampling: SamplingParams,
              generator: torch.Generator) -> Draft:
        """Propose draft tokens after the committed tokens seq[:length].

        seq (S,) long on the device: read-only here (never write it: the engine commits into it). budget: the
        most tokens a draft may hold *along one path* (chain length / tree depth); the engine appends one bonus
        or correction token itself, so budget + 1 tokens may be committed. budget <= 0: return `Draft.empty`.
        Tokens must be verifier ids the drafter may propose (the drafter adapters' `proposable` mask). At
        temperature > 0 a lossless draft carries q_probs, the distribution each token was drawn from, and
        draws its randomness from `generator` only. May update its own drafters' caches; must not write the
        verifier or its cache. The engine syncs with the host once per step: avoid .item() / .tolist() /
        int(tensor) here where the strategy can (a lattice end or a trie build may need one; say so).
        """

    def observe(self, n_accepted: int) -> None:
        """After the step: how many draft tokens the rule accepted (the bonus/correction token not counted).
        For adaptive strategies (e.g. DiffuSpec's draft length); must not touch the verifier or seq."""


def check_gamma(gamma: int) -> None:
    if gamma <= 0:
        raise ConfigError(f"draft length gamma={gamma} must be >= 1; set decode.strategy.gamma to a positive int")


def pick_tokens(logits: torch.Tensor, sampling: SamplingParams, generator):
    """Greedy or sampled tokens from drafter logits (..., V); q is returned only when sampling."""
    if sampling.temperature == 0:
        return logits.argmax(-1), None
    q_probs = sampling.probs(logits)  # (..., V)
    return sample_probs(q_probs, generator), q_probs
