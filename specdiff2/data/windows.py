"""Training windows of streak distillation and their packing into few forwards.

A window is (prefix s = trajectory[:o], targets x = the next γ verifier tokens trajectory[o:o+γ]); the drafter
sees prefix ‖ MASK×γ and its γ marginals q_j are scored against x. Windows start at continuation offsets
o ≥ prompt length (targets are always verifier samples), every `stride` tokens.

The drafter's prefix attention (`models.diffusion.prefix_attention`, from its config.json) decides what the
drafting pass computes. A `bidirectional` drafter (Dream, DiffuCoder) lets prefix tokens attend to the γ masks
(whose RoPE positions o..o+γ−1 depend on o): every window has its own prefix hidden states. A `causal` drafter
(the pocket drafter) encodes the prefix causally, so the prefix states of all windows of one sequence are the
states of one causal pass over it. Packings:
  exact   several independent [prefix ‖ MASK×γ] segments per row, block-diagonal attention (the prefix
          causal inside its segment for a causal drafter), positions restarting at 0 per segment: bit-for-bit
          the one-window-per-forward computation, minus padding.
  none    one segment per row (the unpacked baseline, padded to the longest).
  shared  one clean sequence per row, attended causally, then several MASK blocks; block k attends to the
          clean tokens < o_k and bidirectionally to itself, positions o_k..o_k+γ−1 (`shared_layout`). EXACT for
          a causal drafter (the clean stream is computed once for all its windows); for a bidirectional one an
          APPROXIMATION (its deployed prefix would also see the masks).
Logit shift (Dream/DiffuCoder/pocket): q_j is read from the logits one position earlier; for j = 0 that is the
last prefix token (in `shared`, the clean token o_k − 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from specdiff2.errors import ConfigError, require
from specdiff2.models.diffusion import PREFIX_ATTENTION, window_logit_index

PACKINGS = ("exact", "shared", "none")


def default_packing(prefix_attention: str) -> str:
    """`shared` for a causal drafter (exact and the prefix is encoded once per sequence), else `exact`."""
    return "shared" if prefix_attention == "causal" else "exact"


@dataclass(frozen=True)
class Trajectory:
    tokens: Tensor  # (T,) long: prompt ‖ continuation
    prompt_len: int
    topk_ids: Tensor | None = None  # (C, k) verifier top-k per continuation position
    topk_logprobs: Tensor | None = None  # (C, k)


def window_offsets(prompt_len: int, total_len: int, gamma: int, stride: int, max_len: int) -> list[int]:
    """Prefix lengths o with at least one target, o ≥ max(prompt_len, 1), and o + γ ≤ max_len."""
    require(stride > 0 and gamma > 0, f"stride and gamma must be > 0, got {stride}, {gamma}", ConfigError)
    return list(range(max(prompt_len, 1), min(total_len, max_len - gamma + 1), stride))


def window_targets(traj: Trajectory, offset: int, gamma: int) -> tuple[Tensor, Tensor]:
    """targets (γ,) long (0 past the end) and valid (γ,) bool for the window at `offset`."""
    tail = traj.tokens[offset: offset + gamma]
    targets = torch.zeros(gamma, dtype=torch.long)
    targets[: len(tail)] = tail
    return targets, torch.arange(gamma) < len(tail)


def window_topk(traj: Trajectory, offset: int, gamma: int) -> tuple[Tensor, Tensor]:
    """Stored verifier top-k (γ, k) ids and log-probs at the window's targets; padding has log-prob −inf."""
    k = traj.topk_ids.shape[1]
    ids = torch.zeros(gamma, k, dtype=torch.long)
    lps = torch.full((gamma, k), float("-inf"))
    lo = offset - traj.prompt_len
    rows = traj.topk_ids[lo: lo + gamma]
    ids[: len(rows)], lps[: len(rows)] = rows, traj.topk_logprobs[lo: lo + gamma]
    return ids, lps


def _first_fit(lengths: list[int], capacity: int, one_per_row: bool) -> list[list[int]]:
    rows: list[list[int]] = []
    fill: list[int] = []
    for i, n in enumerate(lengths):
        require(n <= capacity, f"a window segment of {n} tokens exceeds data.windows.row_tokens={capacity}; "
                "raise data.windows.row_tokens or lower data.windows.max_len", ConfigError)
        slot = None if one_per_row else next((r for r, f in enumerate(fill) if f + n <= capacity), None)
        if slot is None:
            rows.append([])
            fill.append(0)
            slot = len(rows) - 1
        rows[slot].append(i)
        fill[slot] += n
    return rows


def pack_exact(prefixes: list[Tensor], gamma: int, mask_id: int, shifted: bool, row_tokens: int,
               one_per_row: bool = False, pad_id: int = 0, causal_prefix: bool = False) -> dict[str, Tensor]:
    """Rows of independent [prefix ‖ MASK×γ] segments (see module doc). Returns input_ids, position_ids (R, L),
    attention_mask (R, 1, L, L) bool, logit_rows (W,), logit_cols (W, γ): q of window w = logits[rows, cols].
    causal_prefix: a prefix token sees only the prefix tokens up to itself (a causal drafter)."""
    lengths = [len(p) + gamma for p in prefixes]
    rows = _first_fit(lengths, row_tokens, one_per_row)
    width = max(sum(lengths[i] for i in r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (R, L)
    position_ids = torch.zeros(len(rows), width, dtype=torch.long)  # (R, L)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # (R, L): window id, -1 = padding
    is_prefix = torch.zeros(len(rows), width, dtype=torch.bool)  # (R, L)
    logit_rows = torch.zeros(len(prefixes), dtype=torch.long)  # (W,)
    logit_cols = torch.zeros(len(prefixes), gamma, dtype=torch.long)  # (W, γ)
    for r, members in enumerate(rows):
        cursor = 0
        for w in members:
            s, n = len(prefixes[w]), lengths[w]
            input_ids[r, cursor: cursor + s] = prefixes[w]
            input_ids[r, cursor + s: cursor + n] = mask_id
            position_ids[r, cursor: cursor + n] = torch.arange(n)
            segment[r, cursor: cursor + n] = w
            is_prefix[r, cursor: cursor + s] = True
            logit_rows[w] = r
            logit_cols[w] = cursor + window_logit_index(s, gamma, shifted)
            cursor += n
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)  # (R, L, L)
    if causal_prefix:  # within a segment the prefix comes first: a prefix query's earlier keys are prefix keys
        later = torch.ones(width, width, dtype=torch.bool).triu(1)  # (L, L) key after query
        same &= ~(is_prefix[:, :, None] & later)
    attn = same | torch.eye(width, dtype=torch.bool)  # pad queries see themselves: no all-masked row (NaN)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": attn[:, None],
            "logit_rows": logit_rows, "logit_cols": logit_cols}


def shared_layout(clean_len: int, offsets: Tensor, gamma: int, shifted: bool) -> dict[str, Tensor]:
    """Layout of rows [clean stream of clean_len tokens ‖ K MASK blocks of γ], block k for the window at
    offsets[:, k] (1 ≤ o ≤ clean_len). The one layout of `shared` packing and of dense drafter pretraining.

    Returns position_ids (B, N) (clean 0..clean_len−1, block k o_k..o_k+γ−1), group (B, N) (−1 clean, k block k),
    limit (B, N) (a query sees the clean columns < limit: i+1 for clean token i, o_k for block k), logit_cols
    (B, K, γ) (the columns carrying q_1..q_γ; shifted: q_1 from clean column o_k − 1, q_j from block column j − 2)
    and attention_mask (B, 1, N, N) bool; N = clean_len + K·γ.
    """
    B, K = offsets.shape
    dev = offsets.device
    span = torch.arange(gamma, device=dev)  # (γ,)
    clean = torch.arange(clean_len, device=dev).expand(B, clean_len)  # (B, C)
    position_ids = torch.cat([clean, (offsets[..., None] + span).flatten(1)], 1)  # (B, N)
    blocks = torch.arange(K, device=dev).repeat_interleave(gamma).expand(B, K * gamma)  # (B, K·γ)
    group = torch.cat([torch.full_like(clean, -1), blocks], 1)  # (B, N)
    limit = torch.cat([clean + 1, offsets.repeat_interleave(gamma, dim=1)], 1)  # (B, N): clean part causal
    cols = (clean_len + torch.arange(K * gamma, device=dev).view(K, gamma)).expand(B, K, gamma)  # (B, K, γ)
    if shifted:
        cols = torch.cat([offsets[..., None] - 1, cols[..., :-1]], -1)  # (B, K, γ)
    return {"position_ids": position_ids, "group": group, "limit": limit, "logit_cols": cols,
            "attention_mask": shared_attention(group, limit)}


def shared_attention(group: Tensor, limit: Tensor) -> Tensor:
    """(B, 1, N, N) bool from group/limit (B, N) of `shared_layout` (group −2 = padding, sees only itself)."""
    column = torch.arange(group.shape[1], device=group.device)
    sees_clean = (group == -1)[:, None, :] & (column[None, None, :] < limit[:, :, None])  # (B, N, N)
    same_block = (group >= 0)[:, :, None] & (group[:, :, None] == group[:, None, :])  # (B, N, N)
    return (sees_clean | same_block | torch.eye(group.shape[1], dtype=torch.bool, device=group.device))[:, None]


def pack_shared(rows: list[tuple[Tensor, list[int]]], gamma: int, mask_id: int, shifted: bool,
                pad_id: int = 0) -> dict[str, Tensor]:
    """One row per (trajectory tokens (T,), offsets): causal clean part + MASK blocks (see module doc).
    Windows are numbered row by row, offsets in the given order. Same outputs as `pack_exact`."""
    lengths = [max(offs) + len(offs) * gamma for _, offs in rows]
    width = max(lengths)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (R, L)
    position_ids = torch.zeros(len(rows), width, dtype=torch.long)  # (R, L)
    group = torch.full((len(rows), width), -2, dtype=torch.long)  # (R, L): -1 clean, k block k, -2 padding
    limit = torch.zeros(len(rows), width, dtype=torch.long)  # (R, L)
    logit_rows, logit_cols = [], []
    for r, (tokens, offsets) in enumerate(rows):
        clean, n = max(offsets), lengths[r]
        layout = shared_layout(clean, torch.tensor([offsets]), gamma, shifted)
        input_ids[r, :clean] = tokens[:clean]
        input_ids[r, clean:n] = mask_id
        position_ids[r, :n], group[r, :n], limit[r, :n] = layout["position_ids"][0], layout["group"][0], \
            layout["limit"][0]
        logit_rows.append(torch.full((len(offsets),), r, dtype=torch.long))
        logit_cols.append(layout["logit_cols"][0])  # (K, γ)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": shared_attention(group, limit),
            "logit_rows": torch.cat(logit_rows), "logit_cols": torch.cat(logit_cols)}


def window_logits(model, batch: dict[str, Tensor]) -> Tensor:
    """Drafter logits (W, γ, V) of a packed batch from an HF causal-LM (or PEFT-wrapped) model.

    Only the W·γ needed hidden states go through the LM head: with V ≈ 152k, full (R, L, V) logits would
    dominate memory.
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 position_ids=batch["position_ids"], use_cache=False).last_hidden_state  # (R, L, H)
    picked = hidden[batch["logit_rows"][:, None], batch["logit_cols"]]  # (W, γ, H)
    return model.get_output_embeddings()(picked)  # (W, γ, V)


class WindowCollator:
    """Collate groups of windows [(trajectory index, offset), ...] into one packed batch dict.

    With packing="shared" every group is one row and must hold windows of a single trajectory (exact for a
    causal drafter: `prefix_attention`, read with `models.diffusion.prefix_attention`). Besides the
    packing tensors the batch has targets (W, γ), mask (W, γ), window_traj (W,) / window_offset (W,) into
    clean_ids (N, T) / clean_len (N,) (the batch's trajectories, for online verifier targets and MDLM), and
    verifier_topk_ids / verifier_topk_logprobs (W, γ, k) when the store has them.
    """

    def __init__(self, trajectories: list[Trajectory], gamma: int, mask_id: int, shifted: bool = True,
                 packing: str = "exact", row_tokens: int = 1024, pad_id: int = 0,
                 prefix_attention: str = "bidirectional"):
        require(packing in PACKINGS, f"data.windows.packing={packing!r}; choose one of {PACKINGS}", ConfigError)
        require(prefix_attention in PREFIX_ATTENTION, f"prefix_attention={prefix_attention!r}; choose one of "
                f"{PREFIX_ATTENTION}", ConfigError)
        self.trajectories, self.gamma, self.mask_id, self.shifted = trajectories, gamma, mask_id, shifted
        self.packing, self.row_tokens, self.pad_id = packing, row_tokens, pad_id
        self.causal_prefix = prefix_attention == "causal"

    def __call__(self, groups: list[list[tuple[int, int]]]) -> dict[str, Tensor]:
        windows = [w for g in groups for w in g]
        trajs = self.trajectories
        if self.packing == "shared":
            require(all(len({t for t, _ in g}) == 1 for g in groups),
                    "shared packing needs each group to hold windows of one trajectory", ConfigError)
            batch = pack_shared([(trajs[g[0][0]].tokens, [o for _, o in g]) for g in groups], self.gamma,
                                self.mask_id, self.shifted, self.pad_id)
        else:
            batch = pack_exact([trajs[t].tokens[:o] for t, o in windows], self.gamma, self.mask_id, self.shifted,
                               self.row_tokens, one_per_row=self.packing == "none", pad_id=self.pad_id,
                               causal_prefix=self.causal_prefix)
        targets = [window_targets(trajs[t], o, self.gamma) for t, o in windows]
        batch["targets"] = torch.stack([x for x, _ in targets])  # (W, γ)
        batch["mask"] = torch.stack([v for _, v in targets])  # (W, γ)
        if all(trajs[t].topk_ids is not None for t, _ in windows):
            topk = [window_topk(trajs[t], o, self.gamma) for t, o in windows]
            batch["verifier_topk_ids"] = torch.stack([i for i, _ in topk])  # (W, γ, k)
            batch["verifier_topk_logprobs"] = torch.stack([lp for _, lp in topk])  # (W, γ, k)
        batch.update(self._clean(windows))
        return batch

    def _clean(self, windows: list[tuple[int, int]]) -> dict[str, Tensor]:
        local = {t: i for i, t in enumerate(dict.fromkeys(t for t, _ in windows))}
        seqs = [self.trajectories[t].tokens for t in local]
        clean_ids = torch.full((len(seqs), max(len(s) for s in seqs)), self.pad_id, dtype=torch.long)  # (N, T)
        for i, s in enumerate(seqs):
            clean_ids[i, : len(s)] = s
        return {"clean_ids": clean_ids, "clean_len": torch.tensor([len(s) for s in seqs]),
                "window_traj": torch.tensor([local[t] for t, _ in windows]),
                "window_offset": torch.tensor([o for _, o in windows])}
