"""Drafter adapters: a masked-diffusion drafter (one pass → γ marginals) and an AR drafter with its own cache.

Both return logits already mapped to the verifier's vocabulary (drafter-only ids at −inf), so every
strategy and acceptance rule works in one id space. Both run their forwards through a `BlockRunner`
(eager on CPU, CUDA graphs on GPU).
"""

from __future__ import annotations

import torch

from specdiff2.errors import ConfigError
from specdiff2.models.diffusion import window_logit_index
from specdiff2.models.runner import BlockRunner
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
                 compile: str = "eager", kernels: str = "eager"):
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
        self.max_seq_len = max_seq_len
        self.n_cached = 0
        model.setup_cache(1, max_seq_len)
        self.runner = BlockRunner(model, max_seq_len, compile, kv_step=128, kernels=kernels)

    def reset(self) -> None:
        self.n_cached = 0

    @torch.no_grad()
    def window_logits(self, seq: torch.Tensor, length: int, canvas: torch.Tensor) -> torch.Tensor:
        """Logits (γ, V_verifier) for the window `canvas` (γ,) (MASK or fixed tokens) after seq[:length]."""
        gamma = canvas.shape[0]
        start = 0 if self.cache == "exact" else min(self.n_cached, length - 1)
        ids = torch.cat([seq[start:length], canvas])  # (m+γ,) uncached committed tokens, then the window
        m = length - start
        positions = torch.arange(start, length + gamma, device=self.device)  # (m+γ,)
        logits = self.runner(ids, start, positions, self._relation(m, gamma))  # (m+γ, V_d)
        if self.cache == "prefix":
            # A causal drafter's committed tokens never see the window: all of them are final. A bidirectional
            # one's last committed token saw the window, so it is re-encoded next pass.
            self.n_cached = length if self.causal else length - 1
        rows = window_logit_index(length, gamma, self.shifted, self.device) - start  # (γ,)
        return to_verifier_vocab(logits[rows], self.proposable)  # (γ, V)

    def _relation(self, m: int, gamma: int) -> torch.Tensor:
        """(m+γ, m+γ) bool: which block tokens each of the m committed + γ window tokens sees."""
        n = m + gamma
        rel = torch.ones(n, n, dtype=torch.bool, device=self.device)  # the window sees everything
        if self.causal:
            rel[:m] = torch.ones(m, n, dtype=torch.bool, device=self.device).tril()  # (m, n) causal prefix
        elif self.cache == "prefix":
            rel[: m - 1, m:] = False  # committed tokens but the last: never the window
        return rel


class ARDrafter:
    """Autoregressive drafter with a static cache: catch up on committed tokens, then γ single steps."""

    def __init__(self, model: Transformer, proposable: torch.Tensor, max_seq_len: int, compile: str = "eager",
                 kernels: str = "eager"):
        self.model = model.eval()
        self.proposable = proposable
        self.device = model.model.embed_tokens.weight.device
        self.max_seq_len = max_seq_len
        self.n_cached = 0
        model.setup_cache(1, max_seq_len)
        self.runner = BlockRunner(model, max_seq_len, compile, kernels=kernels)

    def reset(self) -> None:
        self.n_cached = 0

    @torch.no_grad()
    def step_logits(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Feed ids (n,) at slots start..start+n−1; logits (V_verifier,) of the last one."""
        logits = self.runner(ids, start)[-1]  # (V_d,) a chain

        return to_verifier_vocab(logits, self.proposable)

    def catch_up(self, seq: torch.Tensor, length: int) -> torch.Tensor:
        """Encode committed tokens not yet in the cache; logits predicting token `length`."""
        logits = self.step_logits(seq[self.n_cached:length], self.n_cached)
        self.n_cached = length  # drafted tokens written beyond `length` are overwritten next step
        return logits
