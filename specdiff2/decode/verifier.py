"""Verifier adapter: one static, slot-indexed KV cache and one forward for prefill, blocks and trees.

Cache convention: slots [0, L−1) hold the committed tokens except the last one, whose logits have
not been computed yet. Each step feeds that last token (the "root", slot L−1) plus the draft nodes
(slots L..L+N−1); rollback after a rejection is nothing more than a smaller L next step.
"""

from __future__ import annotations

import torch

from specdiff2.decode.draft import Draft
from specdiff2.errors import ConfigError
from specdiff2.models.masks import tree_ancestors
from specdiff2.models.runner import BlockRunner
from specdiff2.models.transformer import Transformer


class Verifier:
    def __init__(self, model: Transformer, max_seq_len: int, compile: str = "eager", kernels: str = "eager"):
        limit = model.args.max_position_embeddings
        if max_seq_len > limit:
            raise ConfigError(f"max_seq_len {max_seq_len} exceeds the verifier's context {limit}; lower it")
        self.model = model.eval()
        self.max_seq_len = max_seq_len
        self.device = model.model.embed_tokens.weight.device
        self.vocab_rows = model.args.vocab_size
        model.setup_cache(1, max_seq_len)
        self.runner = BlockRunner(model, max_seq_len, compile, kernels=kernels)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> None:
        """Write the KV of `ids` (P,) at slots 0..P−1 (once per prompt: eager, exact size)."""
        n = ids.shape[0]
        if n == 0:
            return
        start = torch.zeros((), dtype=torch.long, device=self.device)
        self.model.forward_block(ids, start, n)  # a chain at slot 0

    @torch.no_grad()
    def verify(self, root: torch.Tensor, draft: Draft, start: int) -> torch.Tensor:
        """Logits (N+1, V) for the root token at slot `start` followed by the draft nodes."""
        ids = torch.cat([root.view(1), draft.tokens]) if draft.size else root.view(1)  # (N+1,)
        n = ids.shape[0]
        if draft.is_chain:
            return self.runner(ids, start)
        # The root becomes node 0 of the tree; draft roots hang under it.
        parents = torch.cat([draft.parents.new_full((1,), -1), torch.where(draft.parents >= 0,
                                                                            draft.parents + 1, 0)])  # (N+1,)
        intra = tree_ancestors(parents)  # (N+1, N+1) a node sees its ancestors and itself
        positions = start + intra.sum(1) - 1  # (N+1,) depth-based
        return self.runner(ids, start, positions, intra)

    def commit(self, start: int, path: torch.Tensor) -> None:
        """Make the accepted tree nodes' KV contiguous after the root (a chain prefix already is)."""
        if path.numel() == 0:
            return
        dst = torch.arange(path.numel(), device=self.device)  # (a,)
        if not torch.equal(path, dst):
            self.model.copy_cache_slots(start + 1 + path, start + 1 + dst)
