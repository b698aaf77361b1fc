"""Tensor parallelism for the inference transformer (the gpt-fast / Megatron layout).

Each of N ranks holds 1/N of every layer: q/k/v and gate/up are split by output rows (whole heads, whole
intermediate channels: column-parallel), o_proj and down_proj by input columns (row-parallel), so a layer
needs exactly one all-reduce after attention and one after the MLP. The KV cache holds only the rank's own
KV heads. Embeddings, norms and the LM head are replicated: every rank ends a forward with the same full
logits, so the decode loop runs unchanged on every rank (SPMD) and no logits are ever gathered.

The all-reduce is a functional collective (`_functional_collectives.all_reduce`): traceable by
torch.compile and capturable in a CUDA graph (NCCL), so the runner's graph mode works under TP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from safetensors import safe_open

from specdiff2.errors import CheckpointError, ConfigError
from specdiff2.models.archs import arch_for
from specdiff2.models.checkpoint import _checkpoint_dir, _weight_files, check_finite, read_config
from specdiff2.models.config import ModelArgs
from specdiff2.models.transformer import Transformer

# Parameter-name suffix -> dim split across ranks (0: output rows, 1: input columns). Everything else is replicated.
_COLUMN = ("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias",
           "gate_proj.weight", "up_proj.weight")
_ROW = ("o_proj.weight", "down_proj.weight")


@dataclass(frozen=True)
class TensorParallel:
    """This process's place in a tensor-parallel group."""

    rank: int
    world: int
    group: object = None  # a torch.distributed ProcessGroup (None: the default group)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return funcol.all_reduce(x, "sum", self.group if self.group is not None else dist.group.WORLD)


def launched_world() -> int:
    """WORLD_SIZE set by torchrun (1 when started as a plain process)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from None


def init_tensor_parallel(device_type: str) -> TensorParallel | None:
    """Join the torchrun group (NCCL on CUDA, gloo on CPU); None for a single process."""
    world = launched_world()
    if world == 1:
        return None
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible; "
                              "use torchrun --nproc-per-node at most the GPU count")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    tp = TensorParallel(dist.get_rank(), dist.get_world_size())
    # The first collective creates the communicator; it must not happen inside a CUDA-graph capture.
    warm = torch.ones(1, device=f"cuda:{torch.cuda.current_device()}" if device_type == "cuda" else "cpu")
    dist.all_reduce(warm)
    return tp


def check_divisible(args: ModelArgs, world: int, fix: str = "use a GPU count that divides it") -> None:
    for name, value in (("num_attention_heads", args.num_heads), ("num_key_value_heads", args.num_kv_heads),
                        ("intermediate_size", args.intermediate_size)):
        if value % world:
            raise ConfigError(f"tensor parallelism over {world} GPUs needs {name} ({value}) divisible by {world}; "
                              f"{fix}")


def check_layout(world: int, tp_size: int, key: str, local_world: int | None = None) -> None:
    """world processes = tp_size-wide tensor-parallel groups x data-parallel groups, each group on one host."""
    if world % tp_size:
        raise ConfigError(f"{key}={tp_size} does not divide the {world} processes torchrun started; launch a "
                          f"multiple of {tp_size} (world = tensor-parallel x data-parallel groups) or change {key}")
    if local_world is not None and local_world % tp_size:
        raise ConfigError(f"{key}={tp_size} does not divide the {local_world} processes per host: a tensor-parallel "
                          f"group would span hosts; use --nproc-per-node a multiple of {tp_size}")


def tensor_parallel_groups(tp_size: int, device_type: str, key: str = "tensor_parallel_size") -> TensorParallel | None:
    """Split the torchrun world into world / tp_size groups of consecutive ranks (one host each under torchrun)
    and return this rank's (None when tp_size is 1). The default process group must exist; every rank creates
    every group, in the same order, as torch.distributed requires."""
    world, rank = dist.get_world_size(), dist.get_rank()
    local = os.environ.get("LOCAL_WORLD_SIZE")
    check_layout(world, tp_size, key, int(local) if local and local.isdigit() else None)
    if tp_size == 1:
        return None
    mine = None
    for first in range(0, world, tp_size):
        ranks = list(range(first, first + tp_size))
        group = dist.new_group(ranks, backend="nccl" if device_type == "cuda" else "gloo")
        if rank in ranks:
            mine = TensorParallel(rank - first, tp_size, group)
    # The first collective creates the communicator; it must not happen inside a CUDA-graph capture.
    warm = torch.ones(1, device=f"cuda:{torch.cuda.current_device()}" if device_type == "cuda" else "cpu")
    dist.all_reduce(warm, group=mine.group)
    return mine


def shard_dim(name: str) -> int | None:
    """The dim of parameter `name` split across ranks, None when replicated."""
    if name.endswith(_COLUMN):
        return 0
    if name.endswith(_ROW):
        return 1
    return None


def local_slice(full: int, tp: TensorParallel) -> slice:
    part = full // tp.world
    return slice(tp.rank * part, (tp.rank + 1) * part)


def shard_module(model: Transformer, tp: TensorParallel) -> Transformer:
    """Split an unfused model in place (meta or real tensors); layers learn their group and local head counts."""
    check_divisible(model.args, tp.world)
    if model.model.layers[0].self_attn.qkv_weight is not None:
        raise ConfigError("shard the model before fusing its projections (BlockRunner fuses in graph mode)")
    for name, param in list(model.named_parameters()):
        dim = shard_dim(name)
        if dim is None:
            continue
        path, _, attr = name.rpartition(".")
        owner = model.get_submodule(path)
        part = param.data.narrow(dim, local_slice(param.shape[dim], tp).start, param.shape[dim] // tp.world)
        setattr(owner, attr, torch.nn.Parameter(part.contiguous(), requires_grad=False))
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.num_heads //= tp.world
        attn.num_kv_heads //= tp.world
        attn.tp = layer.mlp.tp = tp
    model.tp = tp
    _bias_once(model, tp)
    return model


def _bias_once(model: Transformer, tp: TensorParallel) -> None:
    """The row-parallel o_proj bias is added once, after the sum: only rank 0 keeps it."""
    for layer in model.model.layers:
        if layer.self_attn.o_proj.bias is not None and tp.rank != 0:
            layer.self_attn.o_proj.bias.data.zero_()


def load_sharded_transformer(path: str | Path, tp: TensorParallel, dtype: torch.dtype,
                             device: torch.device) -> tuple[Transformer, dict]:
    """This rank's shard of an HF checkpoint, reading only its slices (a 72B checkpoint never sits whole in RAM)."""
    root = _checkpoint_dir(path)
    config = read_config(root)
    args = ModelArgs.from_hf_config(config)
    rename = arch_for(config).tensor_name
    with torch.device("meta"):
        model = Transformer(args)
    shard_module(model, tp)
    model.to(dtype).to_empty(device=device)  # dtype first: a meta model allocates nothing
    wanted = dict(model.named_parameters())
    seen, bad = set(), None
    for file in _weight_files(root):
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                name = rename(key)  # the family's tensor names onto Transformer's (LLaDA differs)
                if name not in wanted:
                    continue
                dim, tensor = shard_dim(name), handle.get_slice(key)
                if dim is not None:
                    index = [slice(None)] * len(tensor.get_shape())
                    index[dim] = local_slice(tensor.get_shape()[dim], tp)
                    tensor = tensor[tuple(index)]
                else:
                    tensor = tensor[:]
                bad = bad or _nonfinite(name, tensor, root)
                with torch.no_grad():
                    wanted[name].copy_(tensor.to(dtype))
                seen.add(name)
    _agree_finite(bad, tp)
    if args.tie_word_embeddings:
        model.tie_weights()
        seen.add("lm_head.weight")
    missing = sorted(set(wanted) - seen)
    if missing:
        raise ConfigError(f"{root} lacks {len(missing)} tensors for tensor-parallel loading (first: {missing[0]}); "
                          "pass an unmodified checkpoint directory")
    _bias_once(model, tp)  # the loaded biases replaced the ones shard_module zeroed
    return model, config


def _nonfinite(name: str, tensor: torch.Tensor, root: Path) -> str | None:
    """check_finite's line for this rank's slice of one tensor (the one-GPU load checks every weight too)."""
    try:
        check_finite([(name, tensor)], root)
    except CheckpointError as err:
        return str(err)
    return None


def _agree_finite(bad: str | None, tp: TensorParallel) -> None:
    """Raise on every rank when any rank read a NaN/inf slice: a rank that raised alone would leave the others
    waiting in their first all-reduce."""
    found = [bad]
    if dist.is_initialized():
        found = [None] * dist.get_world_size(tp.group)
        dist.all_gather_object(found, bad, group=tp.group)
    first = next((line for line in found if line), None)
    if first:
        raise CheckpointError(first)


def random_sharded_transformer(args: ModelArgs, tp: TensorParallel | None, dtype: torch.dtype,
                               device: torch.device, seed: int = 0) -> Transformer:
    """A real-shape model with random weights, built directly as this rank's shard (speed benchmarks)."""
    with torch.device("meta"):
        model = Transformer(args)
    if tp is not None:
        shard_module(model, tp)
    model.to(dtype).to_empty(device=device)
    # One seed on every rank: replicated tensors (embeddings, norms, head) must agree across ranks.
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    if args.tie_word_embeddings:
        model.tie_weights()
    return model
