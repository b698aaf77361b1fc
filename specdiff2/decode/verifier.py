"""Verifier adapter: one static, slot-indexed KV cache and one forward for prefill, blocks and trees.

Cache convention: slots [0, L−1) hold the committed tokens except the last one, whose logits have
not been computed yet. Each step feeds that last token (the "root", slot L−1) plus the draft nodes
(slots L..L+N−1); rollback after a rejection is nothing more than a smaller L next step.
"""

from __future__ import annotations

import torch

from specdiff2.decode.draft import Draft
from specdiff2.errors import ConfigError
from specdiff2.models.runner import DRAFT_SLOTS, BlockRunner
from specdiff2.models.transformer import Transformer


class Verifier:
    def __init__(self, model: Transformer, max_seq_len: int, compile: str = "eager", kernels: str = "eager",
                 draft_slots: int = DRAFT_SLOTS):
        limit = model.args.max_position_embeddings
        if max_seq_len > limit:
            raise ConfigError(f"max_seq_len {max_seq_len} exceeds the verifier's context {limit}; lower it")
        self.model = model.eval()
        self.max_seq_len, self.draft_slots = max_seq_len, draft_slots
        self.cache_len = max_seq_len + draft_slots
        self.device = model.model.embed_tokens.weight.device
        self.vocab_rows = model.args.vocab_size
        model.setup_cache(1, self.cache_len, check_window=max_seq_len)
        self.runner = BlockRunner(model, self.cache_len, compile, kernels=kernels)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> None:
        """Write the KV of `ids` (P,) at slots 0..P−1 (once per prompt, exact size: through the compiled block when
        kernels=block, which launches ~3x fewer kernels than the eager layers)."""
        n = ids.shape[0]
        if n == 0:
            return
        start = torch.zeros((), dtype=torch.long, device=self.device)
        self.runner.direct(ids, start, n)  # a chain at slot 0

    @torch.no_grad()
    def verify(self, root: torch.Tensor, draft: Draft, start: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Logits (N+1, V) for the root token at slot `start` (0-d device tensor) followed by the draft nodes."""
        ids = torch.cat([root.view(1), draft.tokens])  # (N+1,)
        layout = draft.layout
        if layout.is_chain:
            return self.runner.direct(ids, start, kv_len)
        return self.runner.direct(ids, start, kv_len, start + layout.depth, layout.intra)

    def commit(self, start: torch.Tensor, draft: Draft, nodes: torch.Tensor) -> None:
        """Make the accepted nodes' KV contiguous after the root: nodes (D,) of the winning path (a chain's
        nodes already are). Fixed size: slots past the accepted count get copies nobody reads."""
        if draft.is_chain or draft.size == 0:
            return
        dst = torch.arange(nodes.shape[0], device=self.device)  # (D,)
        self.model.copy_cache_slots(start + 1 + nodes, start + 1 + dst)
