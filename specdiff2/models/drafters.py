"""Drafter adapters: a masked-diffusion drafter (one pass → γ marginals) and an AR drafter with its own cache.

Both return logits already mapped to the verifier's vocabulary (drafter-only ids at −inf), so every
strategy and acceptance rule works in one id space.
"""

from __future__ import annotations

import torch

from specdiff2.errors import ConfigError
from specdiff2.models.diffusion import window_logit_index
from specdiff2.models.masks import causal_cache_mask
from specdiff2.models.transformer import Transformer
from specdiff2.models.vocab import to_verifier_vocab


class DiffusionDrafter:
    """prefix ‖ MASK×γ → q_1..q_γ in one bidirectional pass.

    cache="exact" recomputes the whole context every step (what the drafter was trained on).
    cache="prefix" keeps the committed tokens' KV: a committed token is encoded once, seeing the
    committed tokens and not the masks of later steps — the usual dLLM prefix-cache approximation;
    the masked window always sees everything.
    """

    def __init__(self, model: Transformer, mask_token_id: int, shifted: bool, proposable: torch.Tensor,
                 max_seq_len: int, cache: str = "exact"):
        if cache not in ("exact", "prefix"):
            raise ConfigError(f"drafter cache={cache!r} is unknown; use exact or prefix")
        self.model = model.eval()
        self.mask_token_id, self.shifted, self.proposable, self.cache = mask_token_id, shifted, proposable, cache
        self.device = model.model.embed_tokens.weight.device
        self.max_seq_len = max_seq_len
        self.n_cached = 0
        if cache == "prefix":
            model.setup_cache(1, max_seq_len)

    def reset(self) -> None:
        self.n_cached = 0

    @torch.no_grad()
    def window_logits(self, seq: torch.Tensor, length: int, canvas: torch.Tensor) -> torch.Tensor:
        """Logits (γ, V_verifier) for the window `canvas` (γ,) (MASK or fixed tokens) after seq[:length]."""
        gamma = canvas.shape[0]
        if self.cache == "exact":
            first = 0
            ids = torch.cat([seq[:length], canvas])  # (L+γ,)
            pos = torch.arange(ids.shape[0], device=self.device)
            full = torch.ones(1, 1, ids.shape[0], ids.shape[0], dtype=torch.bool, device=self.device)
            logits = self.model(ids[None], pos[None], full)[0]  # (L+γ, V_d)
        else:
            first, logits = self._cached_forward(seq, length, canvas)
        rows = window_logit_index(length, gamma, self.shifted, self.device) - first  # (γ,)
        return to_verifier_vocab(logits[rows], self.proposable)  # (γ, V)

    def _cached_forward(self, seq: torch.Tensor, length: int, canvas: torch.Tensor):
        # Committed tokens not yet cached are encoded seeing committed tokens only. The last committed
        # token is always re-fed and sees the window too: with a shifted head it carries q_1.
        start, gamma = min(self.n_cached, length - 1), canvas.shape[0]
        ids = torch.cat([seq[start:length], canvas])  # (n_new+γ,)
        slots = torch.arange(start, length + gamma, device=self.device)  # (n_new+γ,)
        s = torch.arange(self.max_seq_len, device=self.device)  # (S,)
        limit = torch.where(slots < length - 1, length, length + gamma)  # (n_new+γ,)
        mask = (s[None, :] < limit[:, None])[None, None]  # (1, 1, n_new+γ, S)
        logits = self.model(ids[None], slots[None], mask, slots)[0]  # (n_new+γ, V_d)
        self.n_cached = length - 1  # the last token saw masks: re-encode it once it is not last
        return start, logits


class ARDrafter:
    """Autoregressive drafter with a static cache: catch up on committed tokens, then γ single steps."""

    def __init__(self, model: Transformer, proposable: torch.Tensor, max_seq_len: int):
        self.model = model.eval()
        self.proposable = proposable
        self.device = model.model.embed_tokens.weight.device
        self.max_seq_len = max_seq_len
        self.n_cached = 0
        model.setup_cache(1, max_seq_len)

    def reset(self) -> None:
        self.n_cached = 0

    @torch.no_grad()
    def step_logits(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Feed ids (n,) at slots start..start+n−1; logits (V_verifier,) of the last one."""
        n = ids.shape[0]
        slots = start + torch.arange(n, device=self.device)  # (n,)
        mask = causal_cache_mask(start, n, self.max_seq_len, self.device)  # (1, 1, n, S)
        logits = self.model(ids[None], slots[None], mask, slots)[0, -1]  # (V_d,)
        return to_verifier_vocab(logits, self.proposable)

    def catch_up(self, seq: torch.Tensor, length: int) -> torch.Tensor:
        """Encode committed tokens not yet in the cache; logits predicting token `length`."""
        logits = self.step_logits(seq[self.n_cached:length], self.n_cached)
        self.n_cached = length  # drafted tokens written beyond `length` are overwritten next step
        return logits
