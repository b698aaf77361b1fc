"""The pocket world: corpus → tokenizer → token dataset → verifier, AR drafter, diffusion drafter.

Every artefact is written like a real Hugging Face checkpoint (config.json + safetensors +
tokenizer + train_metrics.json), so later loaders treat pocket models exactly like Qwen2.5 or
Dream checkpoints. The build is resumable per stage: a stage is finished once its `.done`
marker exists, so a killed build restarts at the first unfinished stage.

The diffusion drafter is built last: it starts from the AR drafter's weights (`pocket.drafter.init_from`)
and trains in its drafting layout, a causal clean prefix plus MASK blocks (config.json
`prefix_attention: causal`; `pocket/pretrain.py`). Each model stage prints one line per validation
round and logs through train.py's CSV logger, `<stage>/csv/version_0/metrics.csv` (train/ and val/ losses,
val/alpha_1..γ: greedy acceptance of held-out windows); world.json records each stage's figures, wall time
and final α curve. The corpus
leaves out `pocket.corpus.heldout_packages`, the source of the held-out prompt set (`data=heldout`).

Once built, the world's verify:draft cost ratio c is measured on the build device and printed (pocket/cost.py;
world.json `cost`). A world may link the finished stages of sibling worlds (`pocket.share_stages_from`) whose spec
equals its own except the name and the verifier: two verifiers at different cost ratios then share one corpus,
tokenizer and pair of drafters, and the second costs only its verifier's pretraining.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from specdiff2.errors import ConfigError, require
from specdiff2.pocket import build
from specdiff2.pocket.spec import STAGES, PocketSpec, PocketWorld

OWN_STAGES = ("verifier",)  # stages a world never links from a sibling: what makes it a different world

# Stage name -> builder; the order of STAGES is the build order.
BUILDERS = {
    "corpus": build.build_corpus_stage,
    "tokenizer": build.build_tokenizer_stage,
    "tokens": build.build_tokens_stage,
    "verifier": build.build_verifier_stage,
    "ar_drafter": build.build_ar_drafter_stage,
    "drafter": build.build_drafter_stage,  # may start from the AR drafter's weights
}


def _check_spec(root: Path, spec: PocketSpec) -> None:
    path = root / "spec.json"
    want = spec.to_dict()
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(want, indent=2))
        return
    have = json.loads(path.read_text())
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ConfigError(
            f"pocket world at {root} was built from a different spec (differs in: {', '.join(diff)}); "
            "delete that directory or choose another pocket.name"
        )


def _write_summary(root: Path, summary: dict) -> None:
    tmp = root / f"world.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(root / "world.json")  # readers (other processes, tests) never see a half-written file


def _record(root: Path, key: str, info: dict) -> None:
    """Set world.json[key] = info. Stages of one world may build in parallel processes (`build_parallel`): the
    read-modify-write holds a lock, so one stage's entry never overwrites another's."""
    with open(root / ".world.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _write_summary(root, {**PocketWorld(root).summary(), key: info})


def sibling_with(spec: PocketSpec, root: Path, stage: str) -> Path | None:
    """A world named in pocket.share_stages_from (beside `root`) that finished `stage` from the same inputs: its
    spec.json equals this spec except the name and the verifier."""
    if stage in OWN_STAGES:
        return None
    want = {k: v for k, v in spec.to_dict().items() if k not in ("name", *OWN_STAGES)}
    for name in spec.share_stages_from:
        other = root.parent / name
        if other != root and (other / f"{stage}.done").exists() and (other / "spec.json").exists():
            have = json.loads((other / "spec.json").read_text())
            if {k: v for k, v in have.items() if k not in ("name", *OWN_STAGES)} == want:
                return other
    return None


def _link_stage(root: Path, other: Path, stage: str) -> dict:
    (root / stage).symlink_to(Path("..") / other.name / stage, target_is_directory=True)
    return {**PocketWorld(other).summary().get(stage, {}), "shared_from": other.name}


def _remove(path: Path) -> None:
    if path.is_symlink():  # a linked stage: drop the link, never the sibling's files
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _log(line: str) -> None:
    print(line, flush=True)  # progress must show at once, also when stdout is a file


# What each model stage reads from earlier stages (the data stages run in order before any of them).
NEEDS = {"verifier": ("tokens",), "ar_drafter": ("tokens",), "drafter": ("tokens", "ar_drafter")}
DATA_STAGES = ("corpus", "tokenizer", "tokens")


def ensure_pocket_world(spec: PocketSpec, root: str | Path, log=_log, stages: tuple[str, ...] | None = None
                        ) -> PocketWorld:
    """Build every unfinished stage of the pocket world under `root` (or only `stages`, whose inputs must be
    built: one process of `build_parallel`); return its paths. The cost ratio is measured once the world is
    whole."""
    root = Path(root)
    world = PocketWorld(root)
    _check_spec(root, spec)
    for stage in STAGES:
        if (root / f"{stage}.done").exists() or (stages is not None and stage not in stages):
            continue
        if stages is not None:
            missing = [s for s in NEEDS.get(stage, ()) if not (root / f"{s}.done").exists()]
            require(not missing, f"pocket stage {stage} needs {', '.join(missing)} built first", ConfigError)
        _remove(root / stage)  # a stage killed half-way leaves debris: redo it from scratch
        other = sibling_with(spec, root, stage)
        if other is not None:
            _record(root, stage, _link_stage(root, other, stage))
            log(f"[pocket:{spec.name}] {stage}: linked from {other} (same inputs)")
        else:
            log(f"[pocket:{spec.name}] building {stage} ...")
            t0 = time.perf_counter()
            info = BUILDERS[stage](spec, world, log)
            info["wall_s"] = round(time.perf_counter() - t0, 2)
            _record(root, stage, info)
            log(f"[pocket:{spec.name}] {stage} done in {info['wall_s']} s")
        (root / f"{stage}.done").touch()
    if stages is None and all((root / f"{s}.done").exists() for s in STAGES):
        _measure_cost(spec, world, log)  # alone on the device; also worlds built before it existed, once
    return world


def build_parallel(jobs: list[tuple[PocketSpec, Path, tuple[str, ...]]], log_dir: Path, workers: int,
                   log=_log) -> None:
    """Run each job (spec, root, stages) in its own process, at most `workers` at once: model stages that do not
    read each other (a verifier, the drafters, another world's verifier) pretrain side by side on one GPU, whose
    small models leave most of it idle. Their data stages must be built already."""
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = []
    for i, (spec, root, stages) in enumerate(jobs):
        spec_file = log_dir / f"job{i}.spec.json"
        spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
        commands.append((f"[pocket] {spec.name}: {', '.join(stages)}",
                         [sys.executable, "-m", "specdiff2.pocket.world", str(spec_file), str(root), *stages],
                         log_dir / f"job{i}.{spec.name}.{'+'.join(stages)}.log"))
    run_side_by_side(commands, workers, log)


def run_side_by_side(commands: list[tuple[str, list[str], Path]], workers: int, log=_log,
                     split_threads: bool = False) -> None:
    """Run each (label, argv, log file) as a process, at most `workers` at once (a batch is waited for before
    the next starts). split_threads: each process of a batch gets OMP_NUM_THREADS = cores / batch size. A failed
    process stops the others and raises with its log's last line."""
    for i in range(0, len(commands), max(1, workers)):
        batch = commands[i:i + max(1, workers)]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(batch)))} \
            if split_threads else None
        procs = []
        for label, cmd, out in batch:
            out.parent.mkdir(parents=True, exist_ok=True)
            procs.append((out, subprocess.Popen(cmd, stdout=out.open("w"), stderr=subprocess.STDOUT, env=env)))
            log(f"{label} in a process of its own (log {out})")
        wait_all(procs)


def wait_all(procs: list[tuple[Path, subprocess.Popen]]) -> None:
    """Wait for every process; on the first failure stop the rest and raise with that log's last line."""
    pending = list(procs)
    while pending:
        for out, proc in list(pending):
            code = proc.poll()
            if code is None:
                continue
            pending.remove((out, proc))
            if code != 0:
                for _, other in pending:
                    other.kill()
                lines = [ln for ln in out.read_text().splitlines() if ln.strip()]
                raise ConfigError(f"{out.name} failed (exit {code}): {lines[-1] if lines else 'no output'}; "
                                  f"full log: {out}")
        time.sleep(1.0)


def main(argv: list[str]) -> None:
    """python -m specdiff2.pocket.world SPEC_JSON ROOT STAGE...: one process of `build_parallel`."""
    spec_file, root, *stages = argv
    spec = PocketSpec(**json.loads(Path(spec_file).read_text()))
    ensure_pocket_world(spec, Path(root), stages=tuple(stages))


def _measure_cost(spec: PocketSpec, world: PocketWorld, log) -> None:
    """The verify:draft cost ratio, measured once on the build device and kept in world.json (`cost`)."""
    from specdiff2.pocket.cost import measure_world

    summary = world.summary()
    if "cost" in summary:
        return
    info = measure_world(spec, world, log)
    if info is not None:
        _record(world.root, "cost", info)


if __name__ == "__main__":
    main(sys.argv[1:])
