"""What a pocket world is: its spec (sizes, steps, corpus selection) and its on-disk layout."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from specdiff2.errors import ConfigError

STAGES = ("corpus", "tokenizer", "tokens", "verifier", "drafter", "ar_drafter")


@dataclass
class CorpusSpec:
    roots: list[str] | None = None  # None: the interpreter's stdlib and site-packages
    max_bytes: int = 4_000_000
    max_file_bytes: int = 200_000
    validation_fraction: float = 0.05
    tokenizer_train_bytes: int = 4_000_000


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
    window: int = 8  # masked window length of the drafting condition
    window_fraction: float = 0.5  # share of rows trained in the drafting condition


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __post_init__(self):
        for name in ("corpus", "verifier", "drafter", "ar_drafter"):
            value, cls = getattr(self, name), {"corpus": CorpusSpec, "drafter": DrafterSpec}.get(name, ModelSpec)
            if isinstance(value, dict):  # built from plain YAML
                setattr(self, name, cls(**value))
        for role in ("verifier", "drafter", "ar_drafter"):
            m = getattr(self, role)
            if m.hidden_size % m.num_heads or m.num_heads % m.num_kv_heads:
                raise ConfigError(
                    f"pocket.{role}: hidden_size {m.hidden_size}, num_heads {m.num_heads}, num_kv_heads "
                    f"{m.num_kv_heads} must divide evenly; fix the pocket config"
                )
        if self.drafter.window >= self.seq_len:
            raise ConfigError(f"pocket.drafter.window {self.drafter.window} must be < seq_len {self.seq_len}")


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
