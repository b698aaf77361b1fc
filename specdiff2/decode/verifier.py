"""Verifier adapter: one static, slot-indexed KV cache and one forward for prefill, blocks and trees.

Cache convention: slots [0, L−1) hold the committed tokens except the last one, whose logits have
not been computed yet. Each step feeds that last token (the "root", slot L−1) plus the draft nodes
(slots L..L+N−1); rollback after a rejection is nothing more than a smaller L next step.
"""

from __future__ import annotations

import torch

from specdiff2.decode.draft import Draft
from specdiff2.errors import ConfigError
from specdiff2.models.masks import causal_cache_mask, tree_cache_mask, tree_depths
from specdiff2.models.transformer import Transformer


class Verifier:
    def __init__(self, model: Transformer, max_seq_len: int):
        limit = model.args.max_position_embeddings
        if max_seq_len > limit:
            raise ConfigError(f"decode.max_seq_len {max_seq_len} exceeds the verifier's context {limit}; lower it")
        self.model = model.eval()
        self.max_seq_len = max_seq_len
        self.device = model.model.embed_tokens.weight.device
        self.vocab_rows = model.args.vocab_size
        model.setup_cache(1, max_seq_len)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> None:
        """Write the KV of `ids` (P,) at slots 0..P−1."""
        n = ids.shape[0]
        if n == 0:
            return
        slots = torch.arange(n, device=self.device)  # (P,)
        mask = causal_cache_mask(0, n, self.max_seq_len, self.device)  # (1, 1, P, S)
        self.model(ids[None], slots[None], mask, slots)

    @torch.no_grad()
    def verify(self, root: torch.Tensor, draft: Draft, start: int) -> torch.Tensor:
        """Logits (N+1, V) for the root token at slot `start` followed by the draft nodes."""
        ids = torch.cat([root.view(1), draft.tokens])  # (N+1,)
        n = ids.shape[0]
        slots = start + torch.arange(n, device=self.device)  # (N+1,)
        if draft.is_chain:
            mask = causal_cache_mask(start, n, self.max_seq_len, self.device)  # (1, 1, N+1, S)
            positions = slots
        else:
            # The root becomes node 0 of the tree; draft roots hang under it.
            parents = torch.cat([draft.parents.new_full((1,), -1), torch.where(draft.parents >= 0,
                                                                                draft.parents + 1, 0)])  # (N+1,)
            mask = tree_cache_mask(start, parents, self.max_seq_len)  # (1, 1, N+1, S)
            positions = start + tree_depths(parents)  # (N+1,) depth-based
        return self.model(ids[None], positions[None], mask, slots)[0]  # (N+1, V)

    def commit(self, start: int, path: torch.Tensor) -> None:
        """Make the accepted tree nodes' KV contiguous after the root (a chain prefix already is)."""
        if path.numel() == 0:
            return
        dst = torch.arange(path.numel(), device=self.device)  # (a,)
        if not torch.equal(path, dst):
            self.model.copy_cache_slots(start + 1 + path, start + 1 + dst)
