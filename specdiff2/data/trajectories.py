"""Verifier trajectories: sampled continuations of prompts, stored as token ids in resumable Arrow shards.

Layout of a store directory:
    manifest.json       {"fingerprint", "spec", "num_shards", "shards": [{"name", "rows"}...], "complete"}
    shard-00000/ ...    `datasets` Arrow shards (save_to_disk), columns:
        prompt_id str, sample int, prompt_ids list<int>, continuation_ids list<int>, finished bool,
        [topk_ids list<list<int>>, topk_logprobs list<list<float>>]  (C, k) per continuation position
Prompts are fixed by the seed and cut into shards of `prompts_per_shard`; shard k is sampled with its own
generator seeded from (seed, k), so any shard can be (re)made alone and a resumed run equals an uninterrupted
one. A shard is written to a temp dir, renamed, then the manifest is replaced atomically: a killed run leaves
at most debris that the next run deletes, never a half-listed shard.

Several processes (torchrun, one per GPU) share one store: world = TP x DP (data/trajectory_ranks.py). Each
data-parallel group (one verifier, split over TP GPUs) takes every DP-th pending shard, its first rank records
what it finished in `progress-<group>.json`, and rank 0 merges them into the manifest at the end. A resumed run
(any layout) redoes only shards no file lists, so nothing is duplicated or lost. Before sampling, rank 0 prints
the storage bound of the pending shards and refuses, in one line, a run that would not fit on the disk.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from specdiff2.data.ar_sampler import TrajectoryLimits
from specdiff2.data.prompts import PromptSource, load_prompts
from specdiff2.data.trajectory_backends import device_of, make_backend
from specdiff2.data.trajectory_ranks import Ranks
from specdiff2.data.trajectory_storage import check_room, estimate, features
from specdiff2.decode.sampling import SamplingParams
from specdiff2.errors import ConfigError, DataError, SpecDiffError, is_int, is_real, require
from specdiff2.models.runner import KERNEL_MODES, MODES
from specdiff2.models.tokenizer import encode_prompt, load_tokenizer, stop_ids

MANIFEST = "manifest.json"
_LAYOUT_FIELDS = ("tensor_parallel_size", "compile", "kernels")  # how, not what: outside the fingerprint
SHARD_NAME = re.compile(r"shard-\d{5}(\.tmp)?")  # shard dirs and their temp dirs: all this module ever writes


@dataclass
class GenerationSpec:
    """How to sample verifier trajectories (conf/data/*.yaml `generation`)."""

    source: str = "corpus"  # corpus (pocket token dataset) | prompts (humaneval, gsm8k, spec_bench, jsonl)
    split: str = "train"  # corpus split the prompts come from
    prompt_tokens: int = 32  # corpus: each prompt is the first N tokens of a randomly chosen file
    num_prompts: int = 64  # corpus: how many files; prompts: cap on the prompt set (None = all)
    prompts: PromptSource | None = None  # source=prompts: which prompt set
    chat_template: bool = False  # wrap text prompts as one user turn with the tokenizer's chat template
    max_prompt_tokens: int = 1024  # text prompts longer than this keep their last tokens
    samples_per_prompt: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.5
    top_p: float = 0.95
    top_k: int = 0
    topk_logprobs: int = 0  # store the verifier's top-k log-probs per continuation position
    logprob_temperature: float = 1.0
    prompts_per_shard: int = 16
    batch_size: int = 64  # rows per forward of the engine backend
    seed: int = 0
    backend: str = "engine"  # engine | vllm
    tensor_parallel_size: int = 1  # GPUs per verifier: engine = torchrun ranks per TP group; vllm = its own TP
    dtype: str = "float32"
    device: str = "auto"  # engine backend: auto = cuda when available
    compile: str = "auto"  # engine backend: auto = CUDA graphs on CUDA, eager on CPU (models/row_runner.py)
    kernels: str = "auto"  # engine backend: auto = compiled step on CUDA (models/runner.py KERNEL_MODES)

    def __post_init__(self):
        if isinstance(self.prompts, dict):
            self.prompts = PromptSource(**self.prompts)
        require(self.source in ("corpus", "prompts"),
                f"data.generation.source={self.source!r}; use data.generation.source=corpus or prompts")
        require(self.source != "prompts" or self.prompts is not None,
                "data.generation.source=prompts needs data.generation.prompts (name: humaneval|gsm8k|spec_bench|"
                "jsonl)")
        require(self.backend in ("engine", "vllm"),
                f"data.generation.backend={self.backend!r}; use data.generation.backend=engine or vllm")
        require(self.compile in ("auto", *MODES),
                f"data.generation.compile={self.compile!r}; use auto, eager, padded or graph")
        require(self.kernels in ("auto", *KERNEL_MODES),
                f"data.generation.kernels={self.kernels!r}; use auto, {', '.join(KERNEL_MODES)}")
        self._check_numbers()

    def _check_numbers(self) -> None:
        # A string from the command line (seed=abc) must not reach numpy/torch as a TypeError traceback.
        require(is_int(self.seed), f"seed={self.seed!r} (data.generation.seed) must be an integer; set seed=0")
        for name in ("temperature", "top_p", "logprob_temperature"):
            value = getattr(self, name)
            require(is_real(value),
                    f"data.generation.{name}={value!r} must be a number")
        positive = ("samples_per_prompt", "max_new_tokens", "prompts_per_shard", "batch_size", "prompt_tokens",
                    "max_prompt_tokens", "tensor_parallel_size")
        for name in (*positive, "num_prompts", "top_k", "topk_logprobs"):
            value, least = getattr(self, name), 1 if name in positive or name == "num_prompts" else 0
            if name == "num_prompts" and value is None and self.source == "prompts":
                continue  # the whole prompt set
            require(is_int(value) and value >= least,
                    f"data.generation.{name}={value!r}; set data.generation.{name} to an integer >= {least}")

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p)

    def limits(self, vocab_limit: int | None) -> TrajectoryLimits:
        return TrajectoryLimits(self.max_new_tokens, self.topk_logprobs, self.logprob_temperature, vocab_limit)



@dataclass
class PromptSet:
    ids: list[str] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)


def shard_seed(seed: int, shard: int) -> int:
    """Independent 63-bit seed for shard `shard` (SeedSequence mixing, not seed + shard)."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def corpus_prompts(spec: GenerationSpec, tokens_dir: str | Path) -> PromptSet:
    """The first `prompt_tokens` tokens of `num_prompts` random files (long enough) of the corpus split."""
    from datasets import load_from_disk

    require(Path(tokens_dir).is_dir(), f"token dataset {tokens_dir} not found; build the pocket world first "
            "or set data.generation.source=prompts", DataError)
    split = load_from_disk(str(tokens_dir))[spec.split]
    lengths = np.array([len(x) for x in split["input_ids"]])
    eligible = np.flatnonzero(lengths > spec.prompt_tokens)
    require(len(eligible) >= spec.num_prompts,
            f"only {len(eligible)} {spec.split} files have more than {spec.prompt_tokens} tokens, "
            f"{spec.num_prompts} prompts asked; lower data.generation.num_prompts or data.generation.prompt_tokens",
            DataError)
    chosen = np.random.default_rng(spec.seed).choice(eligible, spec.num_prompts, replace=False)
    rows = split.select(chosen.tolist())
    return PromptSet([f"{spec.split}/{sha[:16]}" for sha in rows["sha"]],
                     [ids[: spec.prompt_tokens] for ids in rows["input_ids"]])


def text_prompts(spec: GenerationSpec, tokenizer) -> PromptSet:
    prompts = load_prompts(spec.prompts)[: spec.num_prompts]
    out = PromptSet()
    for prompt in prompts:
        ids = encode_prompt(tokenizer, prompt.text, spec.chat_template)  # the same encoding decode.py uses
        require(len(ids) > 0, f"prompt {prompt.id} tokenizes to nothing; remove it from the prompt set", DataError)
        out.ids.append(prompt.id)
        out.tokens.append(list(ids)[-spec.max_prompt_tokens:])
    return out


def fingerprint(spec: GenerationSpec, verifier_dir: Path, prompts: PromptSet) -> str:
    """Hash of everything that determines the store's content: settings, verifier weights, prompt tokens.

    How the same computation is laid out (tensor-parallel width, graphs, compiled kernels) is left out, so a
    killed run can resume on another GPU count; the hash of a store made before those fields existed is kept."""
    weights = sorted(verifier_dir.glob("*.safetensors"))
    ident = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    settings = {k: v for k, v in dataclasses.asdict(spec).items() if k not in _LAYOUT_FIELDS}
    settings["tensor_parallel_size"] = 1
    payload = json.dumps([settings, str(verifier_dir.resolve()), ident,
                          (verifier_dir / "config.json").read_text(), prompts.ids, prompts.tokens],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # atomic: readers see the old or the new manifest, never half of one


def _open_manifest(out: Path, fp: str, spec: GenerationSpec, num_shards: int, key: str) -> dict:
    path = out / MANIFEST
    require(not out.exists() or out.is_dir(), f"trajectory store {out} is a file, not a directory; "
            f"pass {key}=NEW_DIR", DataError)
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"trajectory store {out} has an unreadable {MANIFEST} ({type(err).__name__}); "
                            f"delete that directory or pass {key}=NEW_DIR") from None
        require(isinstance(manifest, dict) and manifest.get("fingerprint") == fp,
                f"trajectory store {out} was made with other settings or another verifier; "
                f"delete it or pass {key}=NEW_DIR", DataError)
    else:
        # Never take over (and later clean) a directory the project did not create: it may hold user data.
        require(not out.exists() or not any(out.iterdir()),
                f"{out} is a non-empty directory but not a trajectory store (no {MANIFEST}), so it is left "
                f"untouched; pass {key}=NEW_DIR (a new or empty directory)", DataError)
        manifest = {"fingerprint": fp, "spec": dataclasses.asdict(spec), "num_shards": num_shards,
                    "shards": [], "complete": False}
        try:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(path, manifest)
        except OSError as err:
            raise DataError(f"cannot create the trajectory store {out} ({err.strerror or type(err).__name__}); "
                            f"pass {key}=A_WRITABLE_DIR") from None
    listed = set(_done_shards(out, manifest))
    for entry in out.iterdir():  # debris of a killed run (only names this module writes): temp or unlisted shards
        ours = entry.is_dir() and SHARD_NAME.fullmatch(entry.name)
        if ours and (entry.suffix == ".tmp" or entry.name not in listed):
            shutil.rmtree(entry)
    return manifest


def _rows(prompt_ids: list[str], prompts: list[list[int]], samples, n: int, topk: bool) -> dict:
    cols = {"prompt_id": [], "sample": [], "prompt_ids": [], "continuation_ids": [], "finished": []}
    if topk:
        cols.update(topk_ids=[], topk_logprobs=[])
    for i, s in enumerate(samples):
        p = i // n
        cols["prompt_id"].append(prompt_ids[p])
        cols["sample"].append(i % n)
        cols["prompt_ids"].append(prompts[p])
        cols["continuation_ids"].append(s.continuation_ids)
        cols["finished"].append(s.finished)
        if topk:
            cols["topk_ids"].append(s.topk_ids)
            cols["topk_logprobs"].append(s.topk_logprobs)
    return cols


def generate_trajectories(spec: GenerationSpec, verifier_dir: str | Path, out_dir: str | Path,
                          tokens_dir: str | Path | None = None, keyed: bool = False,
                          log: Callable[[str], None] = print,
                          on_shard_done: Callable[[int], None] | None = None) -> Path:
    """Sample (or finish sampling) the trajectory store at `out_dir`; returns the store directory.

    keyed=True puts the store in out_dir/<fingerprint prefix>, so other settings or another verifier get their
    own store. The verifier is loaded only when a shard is missing. `on_shard_done(k)` runs on every rank of
    the group that sampled shard k, after its writer committed it (on the writer) or after sampling (the others).
    """
    import datasets

    datasets.disable_progress_bars()
    verifier_dir, out = Path(verifier_dir), Path(out_dir)
    # Refuses a directory without tokenizer files: AutoTokenizer would build an empty tokenizer (one token,
    # the EOS) and every trajectory would silently stop after one token.
    tokenizer = load_tokenizer(verifier_dir)
    if spec.source == "corpus":
        require(tokens_dir is not None, "data.generation.source=corpus needs the pocket token dataset; use a "
                "pocket verifier or set data.generation.source=prompts", ConfigError)
        prompts = corpus_prompts(spec, tokens_dir)
    else:
        prompts = text_prompts(spec, tokenizer)
    num_shards = -(-len(prompts.ids) // spec.prompts_per_shard)
    fp = fingerprint(spec, verifier_dir, prompts)
    out = out / fp[:16] if keyed else out
    ranks = _join(spec, verifier_dir)
    key = "data.store_root" if keyed else "data.store_dir"
    plan = None
    if ranks.rank == 0:
        try:
            plan = _plan(spec, prompts, out, fp, num_shards, key, log)
        except SpecDiffError as err:  # every rank stops with rank 0's one line (not a broken-pipe traceback)
            plan = None, [], err
    manifest, pending, refusal = ranks.share(plan)  # everyone acts on rank 0's view of the store: no race
    if refusal is not None:
        raise refusal
    progress = None
    if ranks.world > 1:  # keep what an earlier (killed) run of this group number listed
        part = out / f"progress-{ranks.dp_rank}.json"
        progress = json.loads(part.read_text()) if part.is_file() else {"shards": []}
    backend = None
    for k in pending[ranks.dp_rank::ranks.dp_world]:
        if backend is None:
            backend = make_backend(spec, verifier_dir, len(tokenizer), tokenizer.eos_token_id, stop_ids(tokenizer),
                                   ranks.tp)
        lo, hi = k * spec.prompts_per_shard, (k + 1) * spec.prompts_per_shard
        samples = backend.generate(prompts.tokens[lo:hi], spec.samples_per_prompt, shard_seed(spec.seed, k))
        if ranks.writer:  # the other ranks of its group hold the same samples
            _write_shard(out, k, _rows(prompts.ids[lo:hi], prompts.tokens[lo:hi], samples, spec.samples_per_prompt,
                                       spec.topk_logprobs > 0), manifest, progress, ranks.dp_rank)
            log(f"[trajectories] shard {k + 1}/{num_shards}: {len(samples)} trajectories"
                + (f" (group {ranks.dp_rank})" if ranks.world > 1 else ""))
        if on_shard_done is not None:
            on_shard_done(k)
    if backend is not None:  # free the verifier (and its graphs) before training needs the GPU memory
        backend = None
        _free_device_memory()
    ranks.barrier()
    if ranks.rank == 0 and not manifest["complete"]:
        _merge_progress(out, manifest)
    ranks.barrier()  # nobody reads the store before rank 0 has listed every shard
    return out


def _join(spec: GenerationSpec, verifier_dir: Path) -> Ranks:
    """The process layout, checked in one line before any store is touched (vLLM runs its own TP workers)."""
    if spec.backend == "vllm":
        require(int(os.environ.get("WORLD_SIZE", "1")) == 1, "data.generation.backend=vllm runs in one process "
                "(vLLM starts its own tensor-parallel workers: data.generation.tensor_parallel_size); launch with "
                "python, not torchrun, or use data.generation.backend=engine")
        return Ranks()
    if spec.tensor_parallel_size > 1:  # heads and MLP width split evenly: known from config.json alone
        from specdiff2.models.checkpoint import read_config
        from specdiff2.models.config import ModelArgs
        from specdiff2.models.parallel import check_divisible

        check_divisible(ModelArgs.from_hf_config(read_config(verifier_dir)), spec.tensor_parallel_size,
                        "set data.generation.tensor_parallel_size to a divisor of it")
    return Ranks.join(spec.tensor_parallel_size, device_of(spec))


def _plan(spec, prompts: PromptSet, out: Path, fp: str, num_shards: int, key: str, log) -> tuple:
    """Rank 0: open (or create and clean) the store; its manifest, the pending shards and the error to raise
    when their storage bound exceeds the free disk (None when it fits)."""
    manifest = _open_manifest(out, fp, spec, num_shards, key)
    done = _done_shards(out, manifest)
    pending = [k for k in range(num_shards) if f"shard-{k:05d}" not in done]
    if not pending:
        return manifest, pending, None
    per = spec.prompts_per_shard
    lengths = [len(prompts.tokens[i]) for k in pending for i in range(k * per, min((k + 1) * per, len(prompts.ids)))]
    need = estimate(lengths, spec.samples_per_prompt, spec.max_new_tokens, spec.topk_logprobs, len(pending))
    refusal = check_room(out, need, log, key)
    return manifest, pending, DataError(refusal) if refusal else None


def _write_shard(out: Path, k: int, cols: dict, manifest: dict, progress: dict | None, group: int) -> None:
    """Temp dir, rename, then list it (manifest alone, or this group's progress file under torchrun)."""
    import datasets

    name = f"shard-{k:05d}"
    tmp = out / f"{name}.tmp"
    datasets.Dataset.from_dict(cols, features=features("topk_ids" in cols)).save_to_disk(str(tmp))
    os.rename(tmp, out / name)
    entry = {"name": name, "rows": len(cols["prompt_id"])}
    if progress is None:
        manifest["shards"].append(entry)
        _write_json(out / MANIFEST, manifest)
    else:
        progress["shards"].append(entry)
        _write_json(out / f"progress-{group}.json", progress)


def _free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _done_shards(out: Path, manifest: dict) -> dict[str, int]:
    """Shard name -> rows of every shard the manifest or a rank's progress file lists."""
    done = {s["name"]: s["rows"] for s in manifest["shards"]}
    for part in sorted(out.glob("progress-*.json")):
        done.update({s["name"]: s["rows"] for s in json.loads(part.read_text())["shards"]})
    return done


def _merge_progress(out: Path, manifest: dict) -> None:
    done = _done_shards(out, manifest)
    manifest["shards"] = [{"name": name, "rows": rows} for name, rows in sorted(done.items())]
    require(len(done) == manifest["num_shards"], f"trajectory store {out} misses shards after generation; "
            "rerun the same command to finish it", DataError)
    manifest["complete"] = True
    _write_json(out / MANIFEST, manifest)
    for part in out.glob("progress-*.json"):
        part.unlink()


def load_trajectories(store_dir: str | Path):
    """All shards of a complete store as one `datasets.Dataset` (manifest order)."""
    import datasets

    out = Path(store_dir)
    path = out / MANIFEST
    require(path.is_file(), f"no trajectory store at {out} (missing {MANIFEST}); generate trajectories first",
            DataError)
    manifest = json.loads(path.read_text())
    require(manifest.get("complete", False), f"trajectory store {out} is incomplete; rerun generation to finish it",
            DataError)
    return datasets.concatenate_datasets([datasets.load_from_disk(str(out / s["name"]))
                                          for s in manifest["shards"]])
