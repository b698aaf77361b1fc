"""Pocket world: the verify:draft cost ratio measured at build time (world.json `cost`), and a second world at another
ratio that links its sibling's finished stages instead of rebuilding them (issue 25)."""

import json

import pytest

from specdiff2.pocket.spec import ModelSpec
from specdiff2.pocket.world import ensure_pocket_world
from tests.conftest import micro_spec


def test_the_build_measures_and_records_the_cost_ratio(micro_world):
    cost = micro_world.summary()["cost"]
    assert cost["device"] == "cpu" and cost["timer"] == "perf_counter, eager" and cost["gamma"] == 8
    assert set(cost["verify_ms"]) == {"1", "9"} and cost["draft_ms"] > 0
    assert cost["ratio"] == pytest.approx(cost["verify_ms"]["1"] / cost["draft_ms"])
    assert cost["ratio_verify_window"] == pytest.approx(cost["verify_ms"]["9"] / cost["draft_ms"])
    spec = json.loads((micro_world.root / "spec.json").read_text())
    assert "cost" not in spec and "share_stages_from" not in spec  # build-only fields: old worlds keep matching


def test_a_deeper_verifier_world_links_every_stage_but_its_verifier(micro_world, capsys):
    deep = micro_spec(name="micro_deep", share_stages_from=["micro"],
                      verifier=ModelSpec(hidden_size=64, num_layers=6, num_heads=4, num_kv_heads=2,
                                         intermediate_size=128, steps=4, batch_size=8, lr=3e-3, warmup_steps=1))
    lines = []
    world = ensure_pocket_world(deep, micro_world.root.parent / "micro_deep", log=lines.append)
    linked = {s for s in ("corpus", "tokenizer", "tokens", "ar_drafter", "drafter")
              if (world.root / s).is_symlink() and (world.root / s).resolve() == (micro_world.root / s).resolve()}
    assert linked == {"corpus", "tokenizer", "tokens", "ar_drafter", "drafter"}
    assert not (world.root / "verifier").is_symlink() and (world.root / "verifier" / "config.json").is_file()
    summary = world.summary()
    assert summary["drafter"]["shared_from"] == "micro" and "shared_from" not in summary["verifier"]
    assert summary["verifier"]["params"] > micro_world.summary()["verifier"]["params"]
    assert any("verify:draft cost ratio c = " in line for line in lines)
    assert summary["cost"]["ratio"] > 0
    # a rerun finds everything done; a world with another corpus links nothing
    assert ensure_pocket_world(deep, world.root, log=lines.append) == world
    other = micro_spec(name="micro_other", share_stages_from=["micro"], vocab_size=384)
    assert [s for s in ("corpus",) if _linked(micro_world.root.parent / "micro_other", other, s)] == []


def _linked(root, spec, stage) -> bool:
    from specdiff2.pocket.world import sibling_with

    return sibling_with(spec, root, stage) is not None
