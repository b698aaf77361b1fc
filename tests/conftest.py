import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPECDIFF2_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(1)  # tiny models: one intra-op thread is faster, and far faster on a loaded machine


def micro_spec(**overrides):
    """A pocket world small enough to build in seconds inside the test suite."""
    from specdiff2.pocket.spec import CorpusSpec, DrafterSpec, ModelSpec, PocketSpec

    small = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                 steps=40, batch_size=8, lr=3e-3, warmup_steps=5)
    spec = dict(
        name="micro", vocab_size=512, seq_len=64,
        corpus=CorpusSpec(max_bytes=600_000, max_file_bytes=60_000, tokenizer_train_bytes=300_000),
        verifier=ModelSpec(**small), drafter=DrafterSpec(**{**small, "num_layers": 1}, window=8),
        ar_drafter=ModelSpec(**{**small, "num_layers": 1}), val_batches=2, val_every=20,
    )
    spec.update(overrides)
    return PocketSpec(**spec)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory):
    from specdiff2.pocket.world import ensure_pocket_world

    return ensure_pocket_world(micro_spec(), tmp_path_factory.mktemp("pocket") / "micro", log=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Random-init tiny verifier / drafters / token dataset for the decode tests (specdiff2/bench/random_world.py)."""
    from specdiff2.bench.random_world import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("tiny_world"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny decode models run faster on one intra-op thread: at hidden size 64, splitting a matmul costs more
    than it saves, and on a loaded machine spinning OpenMP threads cost 10-20x. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
