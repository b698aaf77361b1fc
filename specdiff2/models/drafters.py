"""Drafter adapters: a masked-diffusion drafter (one pass → γ marginals) and an AR drafter with its own cache.

Both return logits already mapped to the verifier's vocabulary (drafter-only ids at −inf), so every
strategy and acceptance rule works in one id space. Both run their forwards through a `BlockRunner`
(eager on CPU, CUDA graphs on GPU).
"""

from __future__ import annotations

import torch

from specdiff2.errors import ConfigError
from specdiff2.models.diffusion import window_logit_index
from specdiff2.models.runner import DRAFT_SLOTS, BlockRunner
from specdiff2.models.transformer import Transformer
from specdiff2.models.vocab import to_verifier_vocab

PREFIX_ATTENTION = ("causal", "bidirectional")
CACHE_MODES = ("auto", "exact", "prefix")


class DiffusionDrafter:
    """prefix ‖ window (MASK or fixed tokens)×γ → q_1..q_γ in one pass.

    prefix_attention (a property of the checkpoint, read from its config.json):
      "causal"         a prefix token sees earlier prefix tokens only (the pocket drafter's layout); the
                       window sees the prefix and itself. Committed tokens are then encoded once, exactly,
                       in a KV cache, and a pass costs O(new tokens + γ).
      "bidirectional"  Dream/DiffuCoder: prefix tokens also see the window.
    cache:
      "exact"   recompute the whole context every pass: O(context), what a bidirectional drafter was
                trained on.
      "prefix"  keep the committed tokens' KV. Exact for a causal drafter; for a bidirectional one, the
                usual dLLM approximation (a committed token is encoded seeing committed tokens only; the
                last one is re-fed every pass and sees the window, since with a shifted head it carries q_1).
      "auto"    prefix for causal drafters (exact and O(γ)), exact for bidirectional ones.
    """

    def __init__(self, model: Transformer, mask_token_id: int, shifted: bool, proposable: torch.Tensor,
                 max_seq_len: int, cache: str = "auto", prefix_attention: str = "bidirectional",
                 compile: str = "eager", kernels: str = "eager", draft_slots: int = DRAFT_SLOTS):
        if cache not in CACHE_MODES:
            raise ConfigError(f"drafter cache={cache!r} is unknown; use one of {CACHE_MODES}")
        if prefix_attention not in PREFIX_ATTENTION:
            raise ConfigError(f"drafter prefix_attention={prefix_attention!r} is unknown; use one of "
                              f"{PREFIX_ATTENTION} (config.json key prefix_attention)")
        self.model = model.eval()
        self.mask_token_id, self.shifted, self.proposable = mask_token_id, shifted, proposable
        self.causal = prefix_attention == "causal"
        self.cache = ("prefix" if self.causal else "exact") if cache == "auto" else cache
        self.device = model.model.embed_tokens.weight.device
        self.max_seq_len, self.cache_len = max_seq_len, max_seq_len + draft_slots
        model.setup_cache(1, self.cache_len, check_window=max_seq_len)
        self.runner = BlockRunner(model, self.cache_len, compile, kv_step=128, kernels=kernels)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> None:
        """Encode the prompt ids (P,) once (prefix cache only): slots below a step's block must hold it."""
        if self.cache != "prefix" or ids.shape[0] == 0:
            return
        n = ids.shape[0]
        intra = None if self.causal else torch.ones(n, n, dtype=torch.bool, device=self.device)
        start = torch.zeros((), dtype=torch.long, device=self.device)
        self.runner.direct(ids, start, n, torch.arange(n, device=self.device), intra)

    @torch.no_grad()
    def window_logits_at(self, seq: torch.Tensor, length: torch.Tensor, canvas: torch.Tensor, kv_len: int,
                         recent: int, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (γ, V_verifier) for the window `canvas` (γ,) after seq[:length] (0-d device tensor), at fixed
        shapes: no host sync, capturable.

        The block is the last `recent` committed slots (prefix cache; `recent` ≥ the most tokens one step commits,
        so every new token is encoded before it drops below the block) or the whole live cache minus the window
        (exact), then the window. Block rows past `length` (a short prompt) are inert: they see only themselves.
        visible (0-d, optional): window rows see only the first `visible` window tokens, which gives exactly the
        marginals of a window of that length (DiffuSpec's adaptive length at a fixed shape).
        """
        gamma, dev = canvas.shape[0], self.device
        size = kv_len - gamma if self.cache == "exact" else recent  # committed rows in the block
        start = torch.zeros_like(length) if self.cache == "exact" else (length - size).clamp_min(0)
        slots = start + torch.arange(size, device=dev)  # (C,)
        ids = torch.cat([seq[slots.clamp_max(seq.shape[0] - 1)], canvas])  # (C+γ,)
        positions = torch.cat([slots, length + torch.arange(gamma, device=dev)])  # (C+γ,)
        rel = self._relation(slots < length, slots == length - 1, gamma, visible)  # (C+γ, C+γ)
        logits = self.runner.direct(ids, start, kv_len, positions, rel)  # (C+γ, V_d)
        rows = window_logit_index(size, gamma, self.shifted, dev)  # (γ,) as if `size` committed rows preceded it
        if self.shifted:  # q_1 is on the last committed token's row, which is not row size−1 for a short prompt
            rows = torch.where(torch.arange(gamma, device=dev) == 0, length - 1 - start, rows)
        return to_verifier_vocab(logits[rows], self.proposable)  # (γ, V)

    def _relation(self, real: torch.Tensor, last: torch.Tensor, gamma: int, visible) -> torch.Tensor:
        """(C+γ, C+γ) bool: which block tokens each committed row (real: a committed token) and window row sees."""
        c, dev = real.shape[0], self.device
        pair = real[:, None] & real[None, :]  # (C, C)
        committed = pair.tril() if self.causal else pair
        win_cols = torch.ones(gamma, dtype=torch.bool, device=dev) if visible is None else (
            torch.arange(gamma, device=dev) < visible)  # (γ,)
        if self.causal:
            sees_window = torch.zeros_like(real)
        else:  # exact: every committed token sees the window; prefix: only the last, re-fed each pass
            sees_window = real if self.cache == "exact" else last
        top = torch.cat([committed, sees_window[:, None] & win_cols[None]], 1)  # (C, C+γ)
        bottom = torch.cat([real[None].expand(gamma, c), win_cols[None].expand(gamma, gamma)], 1)  # (γ, C+γ)
        return torch.cat([top, bottom]) | torch.eye(c + gamma, dtype=torch.bool, device=dev)

    @torch.no_grad()
    def window_logits(self, seq: torch.Tensor, length: int, canvas: torch.Tensor) -> torch.Tensor:
        """Host-side convenience (tests, tools): the window after seq[:length] from a fresh prefix cache."""
        self.prefill(seq[:length])
        kv_len = min(self.cache_len, length + 2 * canvas.shape[0] + 1)
        length_t = torch.tensor(length, device=self.device)
        return self.window_logits_at(seq, length_t, canvas, kv_len, canvas.shape[0] + 1)


class ARDrafter:
    """Autoregressive drafter with a static cache: re-encode the last committed slots, then γ single steps."""

    def __init__(self, model: Transformer, proposable: torch.Tensor, max_seq_len: int, compile: str = "eager",
                 kernels: str = "eager", draft_slots: int = DRAFT_SLOTS):
        self.model = model.eval()
        self.proposable = proposable
        self.device = model.model.embed_tokens.weight.device
        self.max_seq_len, self.cache_len = max_seq_len, max_seq_len + draft_slots
        model.setup_cache(1, self.cache_len, check_window=max_seq_len)
        self.runner = BlockRunner(model, self.cache_len, compile, kernels=kernels)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> None:
        if ids.shape[0]:
            self.runner.direct(ids, torch.zeros((), dtype=torch.long, device=self.device), ids.shape[0])

    @torch.no_grad()
    def catch_up(self, seq: torch.Tensor, length: torch.Tensor, kv_len: int, recent: int) -> torch.Tensor:
        """Re-encode the last `recent` committed slots (≥ the most one step commits); logits (V,) predicting
        token `length`. Rows past `length` (short prompts) hold junk that later steps overwrite."""
        start = (length - recent).clamp_min(0)
        slots = start + torch.arange(recent, device=self.device)  # (C,)
        logits = self.runner.direct(seq[slots.clamp_max(seq.shape[0] - 1)], start, kv_len)  # (C, V_d) a chain
        last = logits.index_select(0, (length - 1 - start).view(1))[0]  # (V_d,) no host sync (a 0-d index has one)
        return to_verifier_vocab(last, self.proposable)

    @torch.no_grad()
    def step_logits(self, token: torch.Tensor, slot: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Feed one token at a device slot; logits (V,) of the next."""
        logits = self.runner.direct(token.view(1), slot, kv_len)[0]  # (V_d,)
        return to_verifier_vocab(logits, self.proposable)
