"""Windows of a trajectory store as a LightningDataModule, with exactly resumable batch order.

Validation holds out whole prompts (all samples of a prompt are on one side), so held-out windows never share a
prefix with training windows. Validation always uses exact packing and non-overlapping windows (stride γ
unless set), so its metrics mean the same thing whatever the training packing. A second validation loader
re-scores `val_train_windows` training windows (evenly spaced over the training groups) the same way: the module
logs them as val_train/..., so train vs held-out (overfitting) is visible on one curve.

Batch order is one endless stream: batch i comes from the permutation of epoch i // batches_per_epoch (seeded
by seed and that epoch). The stream position (batches consumed by the training loop) is saved in the
checkpoint, so a resumed run continues the stream where the interrupted one stopped, without depending on
Lightning's epoch bookkeeping or on prefetching.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from specdiff2.data.trajectories import load_trajectories
from specdiff2.data.windows import PACKINGS, Trajectory, WindowCollator, default_packing, window_offsets
from specdiff2.errors import ConfigError, DataError, require

# Lightning cannot see that the stream position lives in the datamodule's state, and warns on mid-epoch resume.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


class StreamBatchSampler:
    """Yields `len(self)` batches of item indices starting at stream position `cursor()`."""

    def __init__(self, n_items: int, batch_size: int, seed: int, cursor: Callable[[], int], rank: int = 0,
                 world_size: int = 1):
        self.n_items, self.batch_size, self.seed, self.cursor = n_items, batch_size, seed, cursor
        self.rank, self.world_size = rank, world_size
        self.per_epoch = n_items // (batch_size * world_size)
        require(self.per_epoch > 0, f"{n_items} training groups cannot fill one batch of {batch_size} x "
                f"{world_size} ranks; lower data.windows.windows_per_batch or generate more trajectories", DataError)
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.per_epoch

    def batch(self, i: int) -> list[int]:
        epoch, j = divmod(i, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n_items, generator=gen))
        span = self.batch_size * self.world_size
        global_batch = self._perm[1][j * span: (j + 1) * span]
        return global_batch[self.rank * self.batch_size: (self.rank + 1) * self.batch_size].tolist()

    def __iter__(self):
        start = self.cursor()
        for i in range(start, start + self.per_epoch):
            yield self.batch(i)


def _trajectories(ds) -> tuple[list[Trajectory], list[str]]:
    has_topk = "topk_ids" in ds.column_names
    out, prompt_ids = [], []
    for row in ds:
        tokens = torch.tensor(row["prompt_ids"] + row["continuation_ids"], dtype=torch.long)  # (T,)
        topk = (torch.tensor(row["topk_ids"], dtype=torch.long).reshape(-1, len(row["topk_ids"][0])),
                torch.tensor(row["topk_logprobs"], dtype=torch.float32).reshape(-1, len(row["topk_ids"][0]))) \
            if has_topk and row["topk_ids"] else (None, None)
        out.append(Trajectory(tokens, len(row["prompt_ids"]), *topk))
        prompt_ids.append(row["prompt_id"])
    return out, prompt_ids


def _evenly(items: list, n: int) -> list:
    """At most n items, evenly spaced and deterministic."""
    if n == 0:
        return []
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def held_out_prompts(prompt_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The ceil(fraction · #prompts) prompts with the smallest seeded hash (at least 1, never all)."""
    unique = sorted(set(prompt_ids))
    require(len(unique) >= 2, f"the trajectory store has {len(unique)} prompt(s); validation needs at least 2 "
            "(raise data.generation.num_prompts)", DataError)
    n_val = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    ranked = sorted(unique, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    return set(ranked[:n_val])


class TrajectoryDataModule(L.LightningDataModule):
    def __init__(self, store_dir: str, gamma: int, mask_token_id: int, shifted: bool = True, packing: str = "exact",
                 stride: int = 1, max_len: int = 512, windows_per_batch: int = 32, blocks_per_row: int = 8,
                 row_tokens: int = 1024, val_fraction: float = 0.1, val_stride: int | None = None,
                 max_val_windows: int = 256, val_windows_per_batch: int | None = None, seed: int = 0,
                 num_workers: int = 0, pad_id: int = 0, prefix_attention: str = "bidirectional",
                 val_train_windows: int = 128):
        super().__init__()
        # auto: shared for a causal-prefix drafter (exact, prefix encoded once), exact otherwise (data/windows.py)
        packing = default_packing(prefix_attention) if packing == "auto" else packing
        require(packing in PACKINGS, f"data.windows.packing={packing!r}; choose auto or one of {PACKINGS}",
                ConfigError)
        self.prefix_attention = prefix_attention
        require(packing != "shared" or windows_per_batch % blocks_per_row == 0,
                f"windows_per_batch {windows_per_batch} must be a multiple of blocks_per_row {blocks_per_row}")
        self.store_dir, self.gamma, self.mask_token_id, self.shifted = store_dir, gamma, mask_token_id, shifted
        self.packing, self.stride, self.max_len, self.seed = packing, stride, max_len, seed
        self.windows_per_batch, self.blocks_per_row, self.row_tokens = windows_per_batch, blocks_per_row, row_tokens
        self.val_fraction, self.val_stride, self.max_val_windows = val_fraction, val_stride or gamma, max_val_windows
        self.val_windows_per_batch = val_windows_per_batch or windows_per_batch
        self.num_workers, self.pad_id = num_workers, pad_id
        require(isinstance(val_train_windows, int) and val_train_windows >= 0, f"data.windows.val_train_windows="
                f"{val_train_windows!r}; set an integer >= 0 (0: no train-slice validation)", ConfigError)
        self.val_train_windows = val_train_windows
        self.batches_consumed = 0  # training stream position; saved in checkpoints
        self.trajectories: list[Trajectory] = []
        self.train_groups: list[list[tuple[int, int]]] = []
        self.val_windows: list[tuple[int, int]] = []
        self.val_train: list[tuple[int, int]] = []  # training windows re-scored at each validation

    def setup(self, stage: str | None = None) -> None:
        if self.trajectories:
            return
        self.trajectories, prompt_ids = _trajectories(load_trajectories(self.store_dir))
        val_prompts = held_out_prompts(prompt_ids, self.val_fraction, self.seed)
        per_group = self.blocks_per_row if self.packing == "shared" else 1
        for t, traj in enumerate(self.trajectories):
            total = len(traj.tokens)
            if prompt_ids[t] in val_prompts:
                offs = window_offsets(traj.prompt_len, total, self.gamma, self.val_stride, self.max_len)
                self.val_windows += [(t, o) for o in offs]
                continue
            offs = window_offsets(traj.prompt_len, total, self.gamma, self.stride, self.max_len)
            self.train_groups += [[(t, o) for o in offs[i: i + per_group]] for i in range(0, len(offs), per_group)]
        require(self.train_groups and self.val_windows, f"no windows in {self.store_dir} (train groups "
                f"{len(self.train_groups)}, val windows {len(self.val_windows)}); raise data.windows.max_len "
                "or generate longer trajectories", DataError)
        self.val_windows = _evenly(self.val_windows, self.max_val_windows)
        self.val_train = _evenly([group[0] for group in self.train_groups], self.val_train_windows)

    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def _collator(self, packing: str) -> WindowCollator:
        return WindowCollator(self.trajectories, self.gamma, self.mask_token_id, self.shifted, packing,
                              self.row_tokens, self.pad_id, self.prefix_attention)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        per_group = self.blocks_per_row if self.packing == "shared" else 1
        sampler = StreamBatchSampler(len(self.train_groups), self.windows_per_batch // per_group, self.seed,
                                     lambda: self.batches_consumed, rank, world)
        return DataLoader(self.train_groups, batch_sampler=sampler, collate_fn=self._collator(self.packing),
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Held-out windows; then, when val_train_windows > 0, the training slice (dataloader_idx 1)."""
        rank, world = self._rank()
        loaders = [DataLoader([[w] for w in windows[rank::world]], batch_size=self.val_windows_per_batch,
                              shuffle=False, collate_fn=self._collator("exact"), num_workers=self.num_workers)
                   for windows in (self.val_windows, self.val_train)]
        return loaders if self.val_train else loaders[0]

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            self.batches_consumed += 1  # called once per batch the training loop consumes (not per prefetch)
        return batch

    def state_dict(self) -> dict:
        return {"batches_consumed": self.batches_consumed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches_consumed = int(state_dict["batches_consumed"])

    def stats(self) -> dict:
        return {"trajectories": len(self.trajectories), "train_groups": len(self.train_groups),
                "val_windows": len(self.val_windows), "val_train_windows": len(self.val_train),
                "packing": self.packing, "gamma": self.gamma}
