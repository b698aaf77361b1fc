"""Verifier trajectories: batched AR sampling, store format, determinism, resume after a crash or a kill."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from specdiff2.data.ar_sampler import TrajectoryLimits, sample_batch
from specdiff2.data.trajectories import GenerationSpec, generate_trajectories, load_trajectories
from specdiff2.decode.sampling import SamplingParams
from specdiff2.errors import ConfigError, DataError
from specdiff2.models.checkpoint import load_transformer

SPEC = dict(num_prompts=6, prompt_tokens=16, prompts_per_shard=2, samples_per_prompt=2, max_new_tokens=12,
            topk_logprobs=3, batch_size=5, temperature=0.8, top_p=0.95, device="cpu")


def rows(store):
    return load_trajectories(store).to_dict()


def test_ar_batch_matches_sequential_greedy_and_stops_at_eos(micro_world):
    model, _ = load_transformer(micro_world.verifier)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [20, 21, 22, 23]]  # ragged: left padding must not leak
    out = sample_batch(model, prompts, SamplingParams(0.0), TrajectoryLimits(max_new_tokens=10), eos_id=0)
    for prompt, sample in zip(prompts, out):
        seq = list(prompt)
        for _ in range(len(sample.continuation_ids)):
            seq.append(int(model(torch.tensor([seq]), torch.arange(len(seq))[None])[0, -1].argmax()))
        assert seq[len(prompt):] == sample.continuation_ids
    seq = out[0].continuation_ids
    first = max(i for i, t in enumerate(seq) if t not in seq[:i])  # pretend that token is EOS: stop there
    stopped = sample_batch(model, prompts[:1], SamplingParams(0.0), TrajectoryLimits(max_new_tokens=10),
                           eos_id=seq[first])
    assert stopped[0].finished and stopped[0].continuation_ids == seq[: first + 1]
    # generation_config.json's extra stop ids (Qwen2.5-Instruct's <|im_end|>) end a row like EOS does
    by_stop = sample_batch(model, prompts[:1], SamplingParams(0.0), TrajectoryLimits(max_new_tokens=10),
                           eos_id=0, stop_ids=[seq[first]])
    assert by_stop[0].finished and by_stop[0].continuation_ids == seq[: first + 1]


def test_store_format_and_determinism(micro_world, tmp_path):
    a = generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, tmp_path / "a",
                              tokens_dir=micro_world.tokens, log=lambda *_: None)
    b = generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, tmp_path / "b",
                              tokens_dir=micro_world.tokens, log=lambda *_: None)
    ra = rows(a)
    assert ra == rows(b)
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_shards"] == 3 and len(manifest["shards"]) == 3
    assert len(ra["prompt_id"]) == 12 and len(set(ra["prompt_id"])) == 6 and ra["sample"][:2] == [0, 1]
    for p, c, done, ids, lps in zip(ra["prompt_ids"], ra["continuation_ids"], ra["finished"], ra["topk_ids"],
                                    ra["topk_logprobs"]):
        assert len(p) == 16 and 0 < len(c) <= 12 and (c[-1] == 0) == done and (0 not in c[:-1])
        assert len(ids) == len(lps) == len(c) and all(len(x) == 3 for x in ids)
        assert all(row[0] >= row[1] >= row[2] for row in lps)
    other = rows(generate_trajectories(GenerationSpec(**{**SPEC, "seed": 1}), micro_world.verifier,
                                       tmp_path / "c", tokens_dir=micro_world.tokens, log=lambda *_: None))
    assert other["continuation_ids"] != ra["continuation_ids"]


def test_resume_after_crash_equals_uninterrupted(micro_world, tmp_path):
    spec = GenerationSpec(**SPEC)
    full = rows(generate_trajectories(spec, micro_world.verifier, tmp_path / "full", tokens_dir=micro_world.tokens,
                                      log=lambda *_: None))

    def crash(k):
        if k == 0:
            raise RuntimeError("simulated crash after shard 0")

    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_trajectories(spec, micro_world.verifier, out, tokens_dir=micro_world.tokens, log=lambda *_: None,
                              on_shard_done=crash)
    # Debris of a kill between writing and listing a shard: a temp dir and a renamed but unlisted shard.
    (out / "shard-00001.tmp").mkdir()
    (out / "shard-00002").mkdir()
    done = []
    generate_trajectories(spec, micro_world.verifier, out, tokens_dir=micro_world.tokens, log=lambda *_: None,
                          on_shard_done=done.append)
    assert done == [1, 2]  # shard 0 was kept, not resampled
    assert rows(out) == full
    assert not (out / "shard-00001.tmp").exists()


@pytest.mark.slow  # a subprocess SIGKILLed mid-run (~5 s); the in-process crash/resume test runs in the suite
def test_resume_after_sigkill_equals_uninterrupted(micro_world, tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from specdiff2.data.trajectories import GenerationSpec, generate_trajectories
        def kill(k):
            if k == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        generate_trajectories(GenerationSpec(**{SPEC!r}), {str(micro_world.verifier)!r}, {str(tmp_path / 'k')!r},
                              tokens_dir={str(micro_world.tokens)!r}, on_shard_done=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 2 and not manifest["complete"]
    with pytest.raises(DataError, match="incomplete"):
        load_trajectories(tmp_path / "k")
    spec = GenerationSpec(**SPEC)
    generate_trajectories(spec, micro_world.verifier, tmp_path / "k", tokens_dir=micro_world.tokens,
                          log=lambda *_: None)
    full = generate_trajectories(spec, micro_world.verifier, tmp_path / "full", tokens_dir=micro_world.tokens,
                                 log=lambda *_: None)
    assert rows(tmp_path / "k") == rows(full)


def test_store_refuses_other_settings_and_keys_by_fingerprint(micro_world, tmp_path):
    generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, tmp_path, tokens_dir=micro_world.tokens,
                          log=lambda *_: None)
    with pytest.raises(DataError, match="other settings"):
        generate_trajectories(GenerationSpec(**{**SPEC, "temperature": 0.3}), micro_world.verifier, tmp_path,
                              tokens_dir=micro_world.tokens, log=lambda *_: None)
    keyed = [generate_trajectories(GenerationSpec(**{**SPEC, "temperature": t}), micro_world.verifier,
                                   tmp_path / "root", tokens_dir=micro_world.tokens, keyed=True,
                                   log=lambda *_: None) for t in (0.3, 0.4)]
    assert keyed[0] != keyed[1] and keyed[0].parent == keyed[1].parent == tmp_path / "root"


def test_text_prompts_and_vllm_selection(micro_world, tmp_path):
    from transformers import AutoTokenizer

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "def add(a, b):"}\n{"text": "import os"}\n')
    spec = GenerationSpec(source="prompts", prompts={"name": "jsonl", "path": str(prompts)}, samples_per_prompt=1,
                          max_new_tokens=4, prompts_per_shard=1, device="cpu")
    ds = rows(generate_trajectories(spec, micro_world.verifier, tmp_path / "s", log=lambda *_: None))
    tok = AutoTokenizer.from_pretrained(str(micro_world.verifier))
    assert ds["prompt_ids"][0] == tok("def add(a, b):", add_special_tokens=False)["input_ids"]
    assert "topk_ids" not in ds
    try:
        import vllm  # noqa: F401
    except ImportError:
        spec = GenerationSpec(**{**SPEC, "backend": "vllm"})
        with pytest.raises(ConfigError, match="pip install vllm"):
            generate_trajectories(spec, micro_world.verifier, tmp_path / "v", tokens_dir=micro_world.tokens,
                                  log=lambda *_: None)


def _user_tree(root):
    """A directory a user might point data.store_dir at by mistake: files and subdirectories of their own."""
    (root / "results" / "run1").mkdir(parents=True)
    (root / "results" / "run1" / "weights.bin").write_bytes(b"precious")
    (root / "shard-notes").mkdir()
    (root / "README.txt").write_text("mine")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_store_refuses_a_non_empty_directory_it_did_not_create(micro_world, tmp_path):
    user = tmp_path / "user"
    before = _user_tree(user)
    with pytest.raises(DataError, match="not a trajectory store") as err:
        generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, user, tokens_dir=micro_world.tokens,
                              log=lambda *_: None)
    assert "\n" not in str(err.value) and "data.store_dir=" in str(err.value)
    assert sorted(str(p.relative_to(user)) for p in user.rglob("*")) == before
    assert (user / "results" / "run1" / "weights.bin").read_bytes() == b"precious"
    # An empty existing directory is fine, and so is a file of the user's beside a store's shards: kept.
    empty = tmp_path / "empty"
    empty.mkdir()
    store = generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, empty,
                                  tokens_dir=micro_world.tokens, log=lambda *_: None)
    (store / "notes").mkdir()
    (store / "shard-00009.tmp").mkdir()  # debris name this module writes: cleaned
    generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, store, tokens_dir=micro_world.tokens,
                          log=lambda *_: None)
    assert (store / "notes").is_dir() and not (store / "shard-00009.tmp").exists()


def test_store_path_that_is_a_file_or_unwritable_is_one_line(micro_world, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile, afile / "sub"):
        with pytest.raises(DataError, match="data.store_dir=") as err:
            generate_trajectories(GenerationSpec(**SPEC), micro_world.verifier, target,
                                  tokens_dir=micro_world.tokens, log=lambda *_: None)
        assert "\n" not in str(err.value)
    assert afile.read_text() == "x"


@pytest.mark.slow  # a train.py process (~15 s of imports alone); the library test above covers the logic
def test_train_with_store_dir_on_user_files_stops_with_one_line(micro_world, tmp_path):
    """The whole entry point: train.py exits 2 with one line naming data.store_dir, and deletes nothing."""
    import os
    from pathlib import Path

    user = tmp_path / "user"
    before = _user_tree(user)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SPECDIFF2_ROOT": str(root)}
    world = micro_world.root
    proc = subprocess.run(
        [sys.executable, str(root / "train.py"), f"data.store_dir={user}", f"verifier.path={world / 'verifier'}",
         f"drafter.path={world / 'drafter'}", "verifier.pocket=false", "drafter.pocket=false",
         f"data.tokens_dir={world / 'tokens'}", "data.generation.num_prompts=4", "logger=csv",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines[-1].startswith("error:") and "data.store_dir=" in lines[-1] and "Traceback" not in proc.stderr
    assert sorted(str(p.relative_to(user)) for p in user.rglob("*")) == before


def test_verifier_without_tokenizer_files_is_refused_not_sampled(micro_world, tmp_path):
    """AutoTokenizer builds an empty tokenizer (one token, the EOS) from a bare config.json: every trajectory
    would stop after one token. The store must refuse with one line and write nothing."""
    import shutil

    from specdiff2.errors import TokenizerError

    bare = tmp_path / "verifier"
    shutil.copytree(micro_world.verifier, bare)
    for f in bare.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(TokenizerError, match="no tokenizer files") as err:
        generate_trajectories(GenerationSpec(**SPEC), bare, tmp_path / "store", tokens_dir=micro_world.tokens,
                              log=lambda *_: None)
    assert "\n" not in str(err.value) and not (tmp_path / "store").exists()


@pytest.mark.parametrize("override,needle", [
    ({"seed": "abc"}, "set seed=0"), ({"num_prompts": 0}, "data.generation.num_prompts=0"),
    ({"samples_per_prompt": "abc"}, "data.generation.samples_per_prompt='abc'"),
    ({"top_k": -1}, "data.generation.top_k"), ({"temperature": "hot"}, "data.generation.temperature"),
])
def test_generation_spec_refuses_bad_numbers_with_one_line(override, needle):
    with pytest.raises(ConfigError) as err:
        GenerationSpec(**{**SPEC, **override})
    assert needle in str(err.value) and "\n" not in str(err.value)
    GenerationSpec(source="prompts", prompts={"name": "humaneval"}, num_prompts=None)  # None: the whole set


def _torchrun(script: str, nproc: int, tmp_path, tag: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{tag}.py"
    path.write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-port=0",
           "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", str(path)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow  # two torchrun launches of 2-3 processes: ~40 s alone on 2 cores
def test_sharded_generation_killed_rank_resumes_without_duplicates(micro_world, tmp_path):
    """Two torchrun processes share one store; one is SIGKILLed mid-run; a resumed run with three processes
    finishes it, and the merged set equals a one-process run with the same seed (no duplicate, none missing)."""
    spec = {**SPEC, "num_prompts": 8, "prompts_per_shard": 1}
    script = textwrap.dedent(f"""
        import os, signal, sys
        from specdiff2.data.trajectories import GenerationSpec, generate_trajectories
        kill = sys.argv[-1] == "kill"
        def on_done(k):
            if kill and int(os.environ["RANK"]) == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        generate_trajectories(GenerationSpec(**{spec!r}), {str(micro_world.verifier)!r}, {str(tmp_path / 's')!r},
                              tokens_dir={str(micro_world.tokens)!r}, on_shard_done=on_done,
                              log=lambda *_: None)
    """)
    killed = _torchrun(script.replace("sys.argv[-1]", "'kill'"), 2, tmp_path, "kill")
    assert killed.returncode != 0
    parts = list((tmp_path / "s").glob("progress-*.json"))
    assert parts and not json.loads((tmp_path / "s" / "manifest.json").read_text())["complete"]
    resumed = _torchrun(script.replace("sys.argv[-1]", "'go'"), 3, tmp_path, "resume")
    assert resumed.returncode == 0, "\n".join(l for l in resumed.stderr.splitlines() if "rank0" in l)[-3000:]
    merged = rows(tmp_path / "s")
    full = rows(generate_trajectories(GenerationSpec(**spec), micro_world.verifier, tmp_path / "full",
                                      tokens_dir=micro_world.tokens, log=lambda *_: None))
    keys = list(zip(merged["prompt_id"], merged["sample"]))
    assert len(keys) == len(set(keys)) == 16
    assert merged == full
    assert not list((tmp_path / "s").glob("progress-*.json"))
