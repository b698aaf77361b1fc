"""The batched trajectory sampler (data/ar_sampler.py over models/row_runner.py), the storage bound and the
TP x DP layout checks, on CPU."""

import pytest
import torch

from specdiff2.data.ar_sampler import StopFlags, TrajectoryLimits, sample_rows, sample_tokens
from specdiff2.data.trajectories import GenerationSpec, generate_trajectories
from specdiff2.data.trajectory_storage import ROW_OVERHEAD, SHARD_OVERHEAD, bytes_per_token, estimate
from specdiff2.decode.sampling import SamplingParams
from specdiff2.errors import ConfigError, DataError
from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.parallel import check_layout
from specdiff2.models.row_runner import RowRunner
from tests.nosync import host_syncs

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [20, 21, 22, 23], [30, 31, 32], [40]]  # ragged; 5 rows: bucket 8
LIMITS = TrajectoryLimits(max_new_tokens=20, topk_logprobs=3, vocab_limit=500)
SPEC = {"num_prompts": 4, "prompt_tokens": 16, "prompts_per_shard": 2, "samples_per_prompt": 2,
        "max_new_tokens": 12, "topk_logprobs": 4, "batch_size": 3, "device": "cpu"}


def _runs(world, mode: str, sampling: SamplingParams, **kw):
    model, _ = load_transformer(world.verifier)
    runner = RowRunner(model, mode, kv_step=8)  # live-cache buckets of 8 slots: the run crosses several
    return [sample_rows(runner, PROMPTS[:n], sampling, LIMITS, 0, torch.Generator().manual_seed(3), **kw)
            for n in (5, 2)]  # a second, smaller batch reuses the cache (and in graph mode, the graphs)


@pytest.mark.parametrize("sampling", [SamplingParams(0.0), SamplingParams(0.9, 0, 0.95)])
def test_bucketed_runner_samples_what_the_eager_one_does(micro_world, sampling):
    """Pad rows of a batch bucket and the live-cache buckets of the graph path change no real row's tokens."""
    eager, padded = _runs(micro_world, "eager", sampling), _runs(micro_world, "padded", sampling)
    for a_batch, b_batch in zip(eager, padded):
        for a, b in zip(a_batch, b_batch):
            assert a.continuation_ids == b.continuation_ids and a.topk_ids == b.topk_ids
            assert torch.allclose(torch.tensor(a.topk_logprobs), torch.tensor(b.topk_logprobs), atol=1e-4)


def test_sampling_loop_has_no_host_sync(micro_world):
    """What runs on CUDA (bucketed step, stop flag read one step late) never reads a device value on the host."""
    model, _ = load_transformer(micro_world.verifier)
    runner = RowRunner(model, "padded", kv_step=8)
    run = lambda: sample_tokens(runner, PROMPTS, SamplingParams(0.9, 0, 0.95), LIMITS, 0,
                                torch.Generator().manual_seed(0), stop_lag=1)
    assert host_syncs(run) == []
    assert "aten::is_nonzero" in host_syncs(lambda: bool(torch.tensor(True)))  # the probe does see syncs


def test_stop_flag_read_late_costs_one_step_and_changes_no_sample(micro_world):
    flags = StopFlags(torch.device("cpu"), lag=1)
    assert [flags(torch.tensor(v)) for v in (False, False, True, True)] == [False, False, False, True]
    model, _ = load_transformer(micro_world.verifier)
    greedy = sample_rows(RowRunner(model), PROMPTS[:2], SamplingParams(0.0), LIMITS, 0)
    stop = greedy[0].continuation_ids[1]  # every row stops once it emits this token (or at max_new_tokens)
    runs = {lag: sample_tokens(RowRunner(model), PROMPTS[:2], SamplingParams(0.0), LIMITS, stop, stop_lag=lag)
            for lag in (0, 1)}
    steps = {lag: out[0].shape[1] for lag, out in runs.items()}
    assert steps[0] < LIMITS.max_new_tokens and steps[1] == steps[0] + 1
    for lag in (0, 1):
        assert [s.continuation_ids for s in sample_rows(RowRunner(model), PROMPTS[:2], SamplingParams(0.0), LIMITS,
                                                        stop, stop_lag=lag)] == \
            [g.continuation_ids[: g.continuation_ids.index(stop) + 1] if stop in g.continuation_ids
             else g.continuation_ids for g in greedy]


def _disk_bytes(store):
    return sum(f.stat().st_size for d in store.glob("shard-*") for f in d.rglob("*") if f.is_file())


def test_storage_estimate_bounds_and_matches_the_disk(micro_world, tmp_path):
    assert bytes_per_token(0) == 4 and bytes_per_token(16) == 140  # int32 ids, float32 log-probs, 2 offsets
    lines = []
    store = generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, tmp_path / "s",
                                  tokens_dir=micro_world.tokens, log=lines.append)
    assert any("4 prompts x 2 samples x <= 12 tokens, top-4 log-probs: 44 B/token" in line and "free at" in line
               for line in lines)
    from specdiff2.data.trajectories import load_trajectories

    rows = load_trajectories(store).to_dict()
    realised = (sum(len(c) for c in rows["continuation_ids"]) * bytes_per_token(4) + ROW_OVERHEAD * 8
                + 4 * sum(len(p) for p in rows["prompt_ids"]) + 2 * SHARD_OVERHEAD)
    on_disk = _disk_bytes(store)
    assert 0.7 < on_disk / realised < 1.3, (on_disk, realised)  # at scale the per-row model is within 0.2%
    bound = estimate([16] * 4, 2, 12, 4, shards=2).bytes  # every row at max_new_tokens
    assert on_disk <= bound
    assert rows["topk_logprobs"][0][0][0] == float(torch.tensor(rows["topk_logprobs"][0][0][0]).float())


def test_a_run_that_does_not_fit_stops_in_one_line_before_sampling(micro_world, tmp_path, monkeypatch):
    import shutil

    import specdiff2.data.trajectory_storage as storage
    from specdiff2.data import trajectories

    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 5000, 5000))
    monkeypatch.setattr(trajectories, "make_backend", lambda *a: pytest.fail("sampling started"))
    with pytest.raises(DataError) as err:
        generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, tmp_path / "s",
                              tokens_dir=micro_world.tokens, log=lambda *_: None)
    line = str(err.value)
    assert "\n" not in line and "0.00 GB free" in line and "data.store_dir=DIR" in line
    assert not list((tmp_path / "s").glob("shard-*"))


@pytest.mark.parametrize("over,needle", [
    ({"tensor_parallel_size": 2}, "needs 2 processes: launch with torchrun --nproc-per-node 2"),
    ({"tensor_parallel_size": 4}, "num_key_value_heads (2) divisible by 4; set data.generation.tensor_parallel_size"),
    ({"compile": "fast"}, "data.generation.compile='fast'"),
])
def test_layout_refusals_are_one_line(micro_world, tmp_path, monkeypatch, over, needle):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError) as err:
        generate_trajectories(GenerationSpec(**{**SPEC, **over}), micro_world.verifier, tmp_path / "s",
                              tokens_dir=micro_world.tokens, log=lambda *_: None)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "s").exists()  # refused before the store was made


def test_world_must_factor_as_tp_times_dp():
    check_layout(8, 4, "k", local_world=8)
    with pytest.raises(ConfigError, match=r"k=4 does not divide the 6 processes"):
        check_layout(6, 4, "k")
    with pytest.raises(ConfigError, match="would span hosts"):
        check_layout(8, 4, "k", local_world=2)
