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
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from specdiff2.errors import ConfigError
from specdiff2.pocket import build
from specdiff2.pocket.spec import STAGES, PocketSpec, PocketWorld

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


def _log(line: str) -> None:
    print(line, flush=True)  # progress must show at once, also when stdout is a file


def ensure_pocket_world(spec: PocketSpec, root: str | Path, log=_log) -> PocketWorld:
    """Build every unfinished stage of the pocket world under `root`; return its paths."""
    root = Path(root)
    world = PocketWorld(root)
    if all((root / f"{s}.done").exists() for s in STAGES):
        _check_spec(root, spec)
        return world
    _check_spec(root, spec)
    summary = world.summary()
    for stage in STAGES:
        if (root / f"{stage}.done").exists():
            continue
        out = root / stage
        if out.exists():  # a stage killed half-way leaves debris: redo it from scratch
            shutil.rmtree(out)
        log(f"[pocket:{spec.name}] building {stage} ...")
        t0 = time.perf_counter()
        info = BUILDERS[stage](spec, world, log)
        info["wall_s"] = round(time.perf_counter() - t0, 2)
        summary[stage] = info
        (root / "world.json").write_text(json.dumps(summary, indent=2))
        (root / f"{stage}.done").touch()
        log(f"[pocket:{spec.name}] {stage} done in {info['wall_s']} s")
    return world
