"""What a pocket world is: its spec (sizes, steps, corpus selection) and its on-disk layout."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from specdiff2.errors import ConfigError

# Build order: the AR drafter before the diffusion drafter, which may start from its weights.
STAGES = ("corpus", "tokenizer", "tokens", "verifier", "ar_drafter", "drafter")
INIT_FROM = ("ar_drafter", "scratch")
HELDOUT_PACKAGES = ["networkx", "statistics", "heapq", "bisect", "textwrap", "difflib", "fnmatch", "shlex",
                    "calendar", "json", "ipaddress"]


@dataclass
class CorpusSpec:
    roots: list[str] | None = None  # None: the interpreter's stdlib and site-packages
    max_bytes: int = 4_000_000
    max_file_bytes: int = 200_000
    validation_fraction: float = 0.05
    tokenizer_train_bytes: int = 4_000_000
    # Whole packages kept out of the corpus: the held-out prompt set (data/heldout.py) is cut from them.
    heldout_packages: list[str] = field(default_factory=lambda: list(HELDOUT_PACKAGES))


@dataclass
class ModelSpec:
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20


@dataclass
class DrafterSpec(ModelSpec):
    """The diffusion drafter's recipe (see `pocket/pretrain.py`, DenseDrafterObjective)."""

    window: int = 16  # γ: MASK block length of the drafting condition; decode with gamma = window
    windows_per_row: int = 8  # fully masked blocks per training row, all sharing the row's causal clean stream
    ar_weight: float = 1.0  # weight of the clean stream's own next-token loss (every position as q_1)
    mdlm_weight: float = 0.0  # weight of the MDLM term: extra blocks with a random share t of masks, CE / t
    mdlm_windows_per_row: int = 2  # extra partly masked blocks per row when mdlm_weight > 0
    streak_weight: float = 0.0  # weight of −E[streak] of the window blocks (data tokens as the trajectory)
    init_from: str = "ar_drafter"  # ar_drafter: start from the pocket AR drafter's weights (same shape) | scratch


@dataclass
class CostSpec:
    """How the build measures the verify:draft cost ratio c (pocket/cost.py). Not part of spec.json: it changes
    no artefact, so a world built before it existed keeps matching its spec."""

    prefix: int = 256  # committed tokens before the timed step (a prompt plus some output)
    iters: int = 20  # timed repetitions (median)
    warmup: int = 3
    # models/runner.py KERNEL_MODES, or auto: layer on CUDA (one compiled decoder layer shared by every layer:
    # seconds to compile at any depth), eager on CPU; block = the whole forward compiled (grows with depth)
    kernels: str = "auto"
    min_ratio: float = 0.0  # > 0: the build says so in one line when the measured c is below (the world is kept)


# PocketSpec fields that change no built artefact: left out of spec.json (and of the "same spec" check).
BUILD_ONLY = ("cost", "share_stages_from")


@dataclass
class PocketSpec:
    name: str = "tiny"
    seed: int = 0
    vocab_size: int = 1024
    seq_len: int = 128
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    verifier: ModelSpec = field(default_factory=lambda: ModelSpec(num_layers=4))
    drafter: DrafterSpec = field(default_factory=lambda: DrafterSpec(num_layers=1))
    ar_drafter: ModelSpec = field(default_factory=lambda: ModelSpec(num_layers=1))
    val_batches: int = 8
    val_every: int = 100
    accelerator: str = "cpu"
    precision: str = "32-true"
    num_workers: int = 0
    cost: CostSpec = field(default_factory=CostSpec)
    # Sibling worlds (names under the same parent directory) whose finished stages this world links instead of
    # building, when their spec equals this one except the name and the verifier: a second verifier at another
    # cost ratio then costs only its own pretraining (world.py).
    share_stages_from: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in BUILD_ONLY}

    def __post_init__(self):
        for name in ("corpus", "verifier", "drafter", "ar_drafter", "cost"):
            value, cls = getattr(self, name), {"corpus": CorpusSpec, "drafter": DrafterSpec,
                                               "cost": CostSpec}.get(name, ModelSpec)
            if isinstance(value, dict):  # built from plain YAML
                setattr(self, name, cls(**value))
        for role in ("verifier", "drafter", "ar_drafter"):
            m = getattr(self, role)
            if m.hidden_size % m.num_heads or m.num_heads % m.num_kv_heads:
                raise ConfigError(
                    f"pocket.{role}: hidden_size {m.hidden_size}, num_heads {m.num_heads}, num_kv_heads "
                    f"{m.num_kv_heads} must divide evenly; fix the pocket config"
                )
        d = self.drafter
        if d.window >= self.seq_len or not 0 < d.windows_per_row <= self.seq_len - d.window:
            raise ConfigError(f"pocket.drafter: window {d.window} must be < seq_len {self.seq_len} and "
                              f"windows_per_row {d.windows_per_row} in 1..seq_len - window")
        if d.init_from not in INIT_FROM:
            raise ConfigError(f"pocket.drafter.init_from={d.init_from!r}; use one of {INIT_FROM}")
        shape = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")
        if d.init_from == "ar_drafter" and any(getattr(d, k) != getattr(self.ar_drafter, k) for k in shape):
            raise ConfigError("pocket.drafter.init_from=ar_drafter needs the drafter and ar_drafter to share "
                              f"{', '.join(shape)}; make them equal or set pocket.drafter.init_from=scratch")


@dataclass(frozen=True)
class PocketWorld:
    root: Path

    @property
    def verifier(self) -> Path:
        return self.root / "verifier"

    @property
    def drafter(self) -> Path:
        return self.root / "drafter"

    @property
    def ar_drafter(self) -> Path:
        return self.root / "ar_drafter"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    def summary(self) -> dict:
        path = self.root / "world.json"
        return json.loads(path.read_text()) if path.exists() else {}
