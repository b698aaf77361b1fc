"""Trajectories under torchrun with 2 gloo processes: a tensor-parallel verifier (TP=2) samples the same tokens as one
process (fp32), and a run killed mid-way resumes, with another layout, to the same store: no duplicate, no gap."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from specdiff2.data.trajectories import GenerationSpec, generate_trajectories, load_trajectories

SPEC = {"num_prompts": 6, "prompt_tokens": 16, "prompts_per_shard": 1, "samples_per_prompt": 2, "max_new_tokens": 12,
        "topk_logprobs": 3, "batch_size": 3, "temperature": 0.8, "top_p": 0.95, "device": "cpu"}
EXACT = ("prompt_id", "sample", "prompt_ids", "continuation_ids", "finished", "topk_ids")


def _torchrun(world, tmp_path, store: str, tp: int, kill_rank: int = -1, kill_after: int = 0):
    script = textwrap.dedent(f"""
        import os, signal
        from specdiff2.data.trajectories import GenerationSpec, generate_trajectories
        done = []
        def on_done(k):
            done.append(k)
            if int(os.environ["RANK"]) == {kill_rank} and len(done) == {kill_after}:
                os.kill(os.getpid(), signal.SIGKILL)
        generate_trajectories(GenerationSpec(**{SPEC!r}, tensor_parallel_size={tp}), {str(world.verifier)!r},
                              {str(tmp_path / store)!r}, tokens_dir={str(world.tokens)!r}, on_shard_done=on_done,
                              log=lambda *_: None)
    """)
    path = tmp_path / f"run_{store}_{tp}_{kill_rank}.py"
    path.write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=127.0.0.1:0", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _same(rows: dict, ref: dict) -> None:
    for col in EXACT:
        assert rows[col] == ref[col], col
    assert torch.allclose(torch.tensor(rows["topk_logprobs"]), torch.tensor(ref["topk_logprobs"]), atol=1e-5)


@pytest.mark.slow  # three torchrun launches of 2 processes: ~40 s on 2 busy cores
def test_tp2_samples_like_one_process_and_a_killed_rank_resumes(micro_world, tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    one = load_trajectories(generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, tmp_path / "one",
                                                  tokens_dir=micro_world.tokens, log=lambda *_: None)).to_dict()
    tp = _torchrun(micro_world, tmp_path, "tp", tp=2)
    assert tp.returncode == 0, tp.stderr[-3000:]
    _same(load_trajectories(tmp_path / "tp").to_dict(), one)  # TP=2, DP=1: token for token

    # Rank 1 holds half of every layer and writes nothing; killing it after its 2nd shard stops the run.
    killed = _torchrun(micro_world, tmp_path, "k", tp=2, kill_rank=1, kill_after=2)
    assert killed.returncode != 0
    store = tmp_path / "k"
    assert not json.loads((store / "manifest.json").read_text())["complete"]
    listed = json.loads((store / "progress-0.json").read_text())["shards"]
    assert 1 <= len(listed) < 6
    resumed = _torchrun(micro_world, tmp_path, "k", tp=1)  # the same store, now 2 data-parallel groups
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    merged = load_trajectories(store).to_dict()
    keys = list(zip(merged["prompt_id"], merged["sample"]))
    assert len(keys) == len(set(keys)) == 12  # no duplicate, no gap
    _same(merged, one)
    assert not list(store.glob("progress-*.json"))
