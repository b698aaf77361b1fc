"""The processes of one trajectory run: tensor-parallel groups x data-parallel groups under torchrun.

world = TP x DP. Ranks r·TP .. r·TP + TP − 1 hold one verifier replica split TP ways (models/parallel.py) and run
the same sampling loop on the same logits (SPMD); data-parallel group r takes every DP-th pending shard, and only
its first rank writes. A single process is TP = DP = 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from specdiff2.errors import ConfigError, require
from specdiff2.models.parallel import TensorParallel, launched_world, tensor_parallel_groups

TP_KEY = "data.generation.tensor_parallel_size"


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    group: object = None  # gloo over every rank: host-side barriers and rank 0's plan, whatever training uses
    tp: TensorParallel | None = None  # this rank's verifier shard (None: the whole verifier)
    dp_rank: int = 0
    dp_world: int = 1

    @property
    def writer(self) -> bool:
        """The one rank of a data-parallel group that writes its shards and progress file."""
        return self.tp is None or self.tp.rank == 0

    @classmethod
    def join(cls, tp_size: int, device: torch.device) -> Ranks:
        world = launched_world()
        if world == 1:
            require(tp_size == 1, f"{TP_KEY}={tp_size} needs {tp_size} processes: launch with torchrun "
                    f"--nproc-per-node {tp_size} (or a multiple: data-parallel groups), or set {TP_KEY}=1")
            return cls()
        cuda = device.type == "cuda"
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible; use "
                                  "torchrun --nproc-per-node at most the GPU count")
            torch.cuda.set_device(local)  # the backend's device "cuda" is this rank's GPU
        if not dist.is_initialized():  # the group training (Lightning, DeepSpeed) reuses: NCCL for CUDA tensors
            dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
        tp = tensor_parallel_groups(tp_size, device.type, TP_KEY)
        rank, world = dist.get_rank(), dist.get_world_size()
        return cls(rank, world, dist.new_group(backend="gloo"), tp, rank // tp_size, world // tp_size)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=self.group)

    def share(self, value):
        """Rank 0's `value` on every rank (one broadcast: everyone then acts on the same plan)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]
