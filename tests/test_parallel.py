"""Tensor-parallel verifier (models/parallel.py) on CPU: 2 gloo processes against one process.

The same code runs with NCCL on GPUs (bench/tp_verify.py, decode.py under torchrun); here it must give the
single-process logits to fp32 rounding and the same greedy tokens for every method.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from specdiff2.decode.acceptance.rules import auto_rule
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_ar_drafter, load_diffusion_drafter, load_verifier
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.ar import ARDraftStrategy, Autoregressive
from specdiff2.decode.strategies.specdiff import SpecDiffStrategy
from specdiff2.errors import CheckpointError, ConfigError
from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.config import ModelArgs
from specdiff2.models.parallel import TensorParallel, check_divisible, load_sharded_transformer, shard_dim
from specdiff2.models.refs import CheckpointRef

TEXTS = ["def add(a, b):\n    return", "class Foo:\n    def __init__(self"]
CPU = torch.device("cpu")


def _methods(world_paths: dict, ctx):
    ar_ref = CheckpointRef("ar_drafter", world_paths["ar_drafter"])
    dr_ref = CheckpointRef("drafter", world_paths["drafter"], logit_shift=True)
    return {"ar": lambda: Autoregressive(),
            "sd_ar": lambda: ARDraftStrategy(load_ar_drafter(ar_ref, ctx), gamma=4),
            "specdiff": lambda: SpecDiffStrategy(load_diffusion_drafter(dr_ref, ctx, "exact"), gamma=5, steps=2)}


def decode_all(world_paths: dict, max_seq_len: int = 128) -> dict:
    """Greedy tokens of every method, and the verifier's logits for a 12-token block, in this process."""
    verifier, tok = load_verifier(CheckpointRef("verifier", world_paths["verifier"]), CPU, max_seq_len)
    ids = torch.tensor(tok(TEXTS[0] * 2, add_special_tokens=False)["input_ids"][:12])
    logits = verifier.model.forward_block(ids, torch.tensor(0), 12)  # (12, V)
    ctx = engine_context(verifier, tok)
    out = {"logits": logits.tolist()}
    for name, make in _methods(world_paths, ctx).items():
        engine = DecodeEngine(verifier, tok, make(), auto_rule(SamplingParams()), SamplingParams(0.0), seed=0)
        out[name] = [engine.generate(tok(t, add_special_tokens=False)["input_ids"], 20).token_ids for t in TEXTS]
    return out


def _worker(rank: int, world: int, port: int, world_paths: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = decode_all(world_paths)
    result["kv_heads"] = None
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 12 s: two gloo processes (GPU TP == 1 GPU was measured with bench/multi_gpu.sh)
def test_two_rank_verifier_matches_one_process(tiny_world, tmp_path, monkeypatch):
    paths = {k: str(getattr(tiny_world, k)) for k in ("verifier", "ar_drafter", "drafter")}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    single = decode_all(paths)
    mp.start_processes(_worker, args=(2, _free_port(), paths, str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        diff = (torch.tensor(result["logits"]) - torch.tensor(single["logits"])).abs().max().item()
        assert diff < 1e-4, f"rank {rank}: TP logits differ from one process by {diff}"
        for method in ("ar", "sd_ar", "specdiff"):
            assert result[method] == single[method], f"rank {rank} {method}: greedy tokens differ"


def test_shard_plan_and_divisibility(tiny_world):
    model, _ = load_transformer(tiny_world.verifier)
    split = {name: shard_dim(name) for name, _ in model.named_parameters()}
    assert split["model.layers.0.self_attn.q_proj.weight"] == 0
    assert split["model.layers.0.self_attn.o_proj.weight"] == 1
    assert split["model.layers.0.mlp.down_proj.weight"] == 1
    assert split["model.embed_tokens.weight"] is None and split["lm_head.weight"] is None
    args = ModelArgs.from_hf_config(json.loads((Path(tiny_world.verifier) / "config.json").read_text()))
    check_divisible(args, 2)
    with pytest.raises(ConfigError, match="num_key_value_heads .* divisible by 4"):
        check_divisible(args, 4)
    assert TensorParallel(0, 2).world == 2


def _nan_copy(verifier: Path, out: Path, row: int) -> Path:
    """The verifier with one NaN in q_proj row `row` of layer 0 (rows 0..half-1 are rank 0's under 2-way TP)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(verifier, out)
    state = load_file(out / "model.safetensors")
    state["model.layers.0.self_attn.q_proj.weight"][row, 0] = float("nan")
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_tensor_parallel_load_refuses_nonfinite_weights_like_the_one_gpu_load(tiny_world, tmp_path):
    """Issue 22 item 10: the sliced loader runs the finiteness check of load_transformer (on its own slices)."""
    bad = _nan_copy(Path(tiny_world.verifier), tmp_path / "nan", row=0)
    with pytest.raises(CheckpointError, match="q_proj.weight .* NaN or inf"):
        load_transformer(bad)
    with pytest.raises(CheckpointError, match="q_proj.weight .* NaN or inf"):
        load_sharded_transformer(bad, TensorParallel(0, 2), torch.float32, CPU)
    load_sharded_transformer(bad, TensorParallel(1, 2), torch.float32, CPU)  # rank 1's slice alone is finite


def _nan_worker(rank: int, world: int, port: int, path: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        load_verifier(CheckpointRef("verifier", path), CPU, 64)
        outcome = "loaded"
    except CheckpointError as err:
        outcome = str(err)
    Path(out_dir, f"rank{rank}.txt").write_text(outcome)
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two gloo processes (~8 s)
def test_a_nan_in_one_ranks_slice_stops_every_rank(tiny_world, tmp_path, monkeypatch):
    bad = _nan_copy(Path(tiny_world.verifier), tmp_path / "nan", row=-1)  # the last row: rank 1's slice
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    mp.start_processes(_nan_worker, args=(2, _free_port(), str(bad), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in range(2):
        assert "q_proj.weight" in (tmp_path / f"rank{rank}.txt").read_text(), rank
