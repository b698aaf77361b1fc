"""bench/reproduce.py: stage resumability, the sweep grids as config (every GPU row composes), the sweep's JSONL
resume on tiny checkpoints, and (slow) the whole reproduce_tiny pipeline on a micro pocket world."""

import json
from pathlib import Path

import pytest
import torch

from specdiff2.bench.common import compose
from specdiff2.bench.decode_methods import Sweep, expand_grid
from specdiff2.bench.reproduce import STAGES, make_plan, run_stages
from specdiff2.errors import ConfigError
from specdiff2.report.rundata import read_jsonl


class Killed(Exception):
    pass


def fake_runners(calls: list[str], kill_at: str | None = None):
    def runner(stage):
        def run(plan, done):
            calls.append(stage)
            if stage == kill_at:
                raise Killed(stage)
            return {"stage": stage, "saw": sorted(done)}
        return run
    return {s: runner(s) for s in STAGES}


def test_a_rerun_after_a_kill_skips_the_finished_stages(tmp_path):
    plan = make_plan(["experiment=reproduce_tiny", f"run_dir={tmp_path}"])
    calls: list[str] = []
    with pytest.raises(Killed):  # killed inside stage 3 (arms): stages 1-2 wrote their markers, 3 did not
        run_stages(plan, fake_runners(calls, kill_at="arms"), log=lambda _: None)
    assert calls == ["pocket", "trajectories", "arms"]
    assert (tmp_path / "trajectories" / "done.json").is_file() and not (tmp_path / "arms" / "done.json").exists()
    calls.clear()
    done = run_stages(plan, fake_runners(calls), log=lambda _: None)
    assert calls == list(STAGES[2:])  # 1-2 skipped, 3 restarted, the rest ran
    assert done["decode"]["saw"] == ["arms", "pocket", "trajectories"]  # later stages see the skipped ones' info
    assert all("wall_s" in json.loads((tmp_path / s / "done.json").read_text()) for s in STAGES)
    calls.clear()
    run_stages(plan, fake_runners(calls), log=lambda _: None)
    assert calls == []


def test_redo_and_stop_after(tmp_path):
    calls: list[str] = []
    plan = make_plan(["experiment=reproduce_tiny", f"run_dir={tmp_path}", "stop_after=trajectories"])
    run_stages(plan, fake_runners(calls), log=lambda _: None)
    assert calls == ["pocket", "trajectories"]
    calls.clear()
    plan = make_plan(["experiment=reproduce_tiny", f"run_dir={tmp_path}", "redo=[pocket]", "stop_after=arms"])
    run_stages(plan, fake_runners(calls), log=lambda _: None)
    assert calls == ["pocket", "arms"]
    with pytest.raises(ConfigError, match="redo"):
        make_plan(["experiment=reproduce_tiny", "redo=[bogus]"])
    with pytest.raises(ConfigError, match="Could not override 'bogus.key'"):
        make_plan(["bogus.key=1"])


def test_plan_forwards_pocket_and_paths_overrides():
    plan = make_plan(["experiment=reproduce_gpu", "paths.data_dir=/data", "pocket.seed=3", "run_dir=/tmp/r"])
    assert plan.forwarded == ["pocket=gpu72", "paths.data_dir=/data", "pocket.seed=3"]
    assert "verifier.dtype=bfloat16" in plan.decode_overrides()
    train = plan.train_overrides(Path("/tmp/r/arms/ce/run"), plan.arms["ce"])
    assert train[:2] == ["experiment=gpu_distill_ce", "paths.output_dir=/tmp/r/arms/ce/run"]
    assert set(plan.arms) == {"unaligned", "ce", "kl", "streak", "streak_soft"}
    # the near-1:1 world: its own pocket option, this command's pocket/paths overrides, linked to the main world
    ratio = plan.ratio_overrides("gpu")
    assert ratio[:4] == ["pocket=gpu", "paths.data_dir=/data", "pocket.seed=3", "++pocket.share_stages_from=[gpu72]"]
    cfg = compose("decode", ratio)
    assert cfg.pocket.name == "gpu" and cfg.pocket.seed == 3 and list(cfg.pocket.share_stages_from) == ["gpu72"]


def test_the_gpu72_world_differs_from_the_gpu_world_in_its_verifier_only():
    """So the ratio world links every other stage (pocket/world.py sibling_with), and c is the knob."""
    from hydra.utils import instantiate

    deep, near = (instantiate(compose("decode", [f"pocket={p}"]).pocket).to_dict() for p in ("gpu72", "gpu"))
    assert sorted(k for k in deep if deep[k] != near[k]) == ["name", "verifier"]
    assert deep["verifier"]["num_layers"] >= 4 * near["verifier"]["num_layers"]


def test_a_shared_override_of_what_an_arms_experiment_sets_is_refused():
    """Issue 22 item 1: reproduce_tiny's shared trainer.max_steps=60 trained the 0-step 'unaligned' arm (the steps
    each arm composes to are checked in test_arms_sets_and_grid_corners_compose)."""
    with pytest.raises(ConfigError, match="train_overrides sets trainer.max_steps, which arm unaligned's "
                                          "experiment=unaligned sets itself"):
        make_plan(["experiment=reproduce_tiny", 'train_overrides=["trainer.max_steps=60"]'])


def test_the_unaligned_arm_exports_the_pocket_drafter_unchanged(micro_world, tmp_path):
    """The unaligned arm of reproduce_tiny, composed as the run composes it (on the micro world): no step taken,
    the exported drafter's weights are the pocket drafter's, tensor for tensor."""
    from safetensors.torch import load_file

    from tests.test_training import micro_cfg, train

    plan = make_plan(["experiment=reproduce_tiny", f"run_dir={tmp_path}"])
    run = tmp_path / "arms" / "unaligned" / "run"
    overrides = plan.train_overrides(run, plan.arms["unaligned"])
    summary = train(micro_cfg(micro_world, tmp_path / "cache", run, *overrides, "logger=tiny"))
    assert summary["sections"]["training"]["steps"] == 0
    exported = load_file(run / "export" / "drafter" / "model.safetensors")
    pocket = load_file(micro_world.drafter / "model.safetensors")
    assert exported.keys() == pocket.keys() and all(torch.equal(exported[k], pocket[k]) for k in pocket)


def test_expand_grid():
    assert expand_grid({"methods": ["decode=ar"]}) == ["decode=ar"]
    grid = {"base": "decode=specdiff", "axes": {"decode.strategy.gamma": [8, 16], "decode.strategy.steps": [1, 2]}}
    assert expand_grid(grid) == [f"decode=specdiff decode.strategy.gamma={g} decode.strategy.steps={s}"
                                 for g in (8, 16) for s in (1, 2)]
    assert expand_grid({"base": "decode=diffuspec", "methods": ["decode.strategy.cps=false"]}) == [
        "decode=diffuspec decode.strategy.cps=false"]


def _compose_rows(experiment: str, every: bool) -> int:
    """Compose every arm's train.py config and the decode config of each grid's methods (all, or the first and
    last of each grid), as the run composes them."""
    plan = make_plan([f"experiment={experiment}", "run_dir=/tmp/unused"])
    for arm, overrides in plan.arms.items():
        cfg = compose("train", plan.train_overrides(Path("/tmp/unused") / arm, overrides))
        assert cfg.pocket.name == plan.pocket.name, arm
        # every arm trains as its experiment says: unaligned not at all (a shared max_steps once trained it)
        assert (cfg.trainer.max_steps == 0) == (arm == "unaligned"), (arm, cfg.trainer.max_steps)
    compose("train", plan.train_overrides(Path("/tmp/unused/t"), plan.trajectories))
    spec, n = plan.sweep, 0
    for over in spec["sets"].values():
        compose("decode", [*plan.decode_overrides(), *over])
    for grid in spec["grids"]:
        assert set(grid.get("sets", spec["sets"])) <= set(spec["sets"]), grid["name"]
        assert set(grid.get("drafters", ["pocket"])) <= {"pocket", *plan.arms}, grid["name"]
        methods = expand_grid(grid)
        for method in methods if every else {methods[0], methods[-1]}:
            t = max(grid.get("temperatures", spec["temperatures"]))
            cfg = compose("decode", [*plan.decode_overrides(), f"temperature={t}", *method.split(),
                                     "drafter.path=/some/arm"])
            assert cfg.decode.method in ("ar", "sd_ar", "specdiff", "self_select", "diffuspec"), method
            n += 1
    return n


@pytest.mark.parametrize("experiment", ["reproduce_tiny", pytest.param("reproduce_gpu", marks=pytest.mark.slow)])
def test_arms_sets_and_grid_corners_compose(experiment):
    assert _compose_rows(experiment, every=False) >= 7


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["reproduce_tiny", "reproduce_gpu"])
def test_every_sweep_row_composes(experiment):
    assert _compose_rows(experiment, every=True) >= 18


def _sweep_spec(prompts):
    return {"prompts": 1, "max_new_tokens": 6, "warmup": "one", "seed": 0, "reference": "decode=ar",
            "sets": {"toy": ["data=jsonl", f"data.prompts.path={prompts}"]}, "temperatures": [0.0],
            "grids": [{"name": "g", "drafters": ["pocket", "mine"],
                       "methods": ["decode=specdiff decode.strategy.gamma=4", "decode=bogus_option_value=1"]}]}


def test_sweep_rows_resume_and_errors_stay_rows(tiny_world, tmp_path):
    w = tiny_world
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "def add(x, y):\n    return"}) + "\n")
    base = [f"verifier.path={w.verifier}", "verifier.pocket=false", f"drafter.path={w.drafter}",
            "drafter.pocket=false", f"ar_drafter.path={w.ar_drafter}", "ar_drafter.pocket=false", "max_seq_len=128",
            "device=cpu"]
    out = tmp_path / "rows.jsonl"
    rows = Sweep(_sweep_spec(prompts), base, {"mine": str(w.causal_drafter)}, out, log=lambda _: None).run()
    ok = [r for r in rows if "error" not in r]
    assert [(r["sweep"], r["drafter"]) for r in ok] == [("reference", "pocket"), ("g", "pocket"), ("g", "mine")]
    assert len([r for r in rows if "error" in r]) == 2  # the bogus method, once per drafter, as rows
    spec = ok[1]
    assert spec["agree_ar"] == 1.0 and spec["speedup_ar"] > 0 and "alpha_1" in spec  # greedy = ar, token for token
    # the resolved fields the report reads (issue 23), beside the override string
    assert spec["config"]["method"] == "specdiff" and spec["config"]["strategy"]["gamma"] == 4
    assert spec["config"]["models"]["drafter"]["checkpoint"] == str(w.drafter)
    assert ok[2]["config"]["models"]["drafter"]["checkpoint"] == str(w.causal_drafter)
    assert ok[0]["config"]["method"] == "ar" and ok[0]["config"]["sampling"]["temperature"] == 0.0
    p = spec["per_prompt"][0]
    assert sum(c for _, c in p["steps"]) == len(p["token_ids"]) == len(p["pieces"]) == 6
    # A kill mid-write leaves a cut line: that row (and only that one) runs again.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    again = Sweep(_sweep_spec(prompts), base, {"mine": str(w.causal_drafter)}, out, log=lambda _: None)
    assert len(again.rows) == 2
    again.run()
    rows = read_jsonl(out)
    assert len([r for r in rows if "error" not in r]) == 3 and len([r for r in rows if "error" in r]) == 2
    Sweep(_sweep_spec(prompts), base, {"mine": str(w.causal_drafter)}, out, log=lambda _: None).run()
    rows = read_jsonl(out)  # a rerun tries the failed rows again (only those)
    assert len([r for r in rows if "error" not in r]) == 3 and len([r for r in rows if "error" in r]) == 4


def test_a_set_may_carry_its_own_prompt_count(tiny_world, tmp_path):
    w = tiny_world
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"def f{i}(x):\n    return"}) + "\n" for i in range(5)))
    spec = _sweep_spec(prompts)
    spec["sets"]["toy3"] = [*spec["sets"]["toy"], "data.prompts.limit=3"]  # the sweep's own count is 1
    base = [f"verifier.path={w.verifier}", "verifier.pocket=false", "max_seq_len=128", "device=cpu"]
    sweep = Sweep(spec, base, {}, tmp_path / "rows.jsonl", log=lambda _: None)
    assert {name: len(p) for name, p in sweep.prompts.items()} == {"toy": 1, "toy3": 3}


MICRO = ["pocket.vocab_size=1024", "pocket.seq_len=512", "pocket.corpus.max_bytes=1500000",
         "pocket.corpus.tokenizer_train_bytes=300000", "pocket.val_batches=2", "pocket.val_every=15",
         *[f"pocket.{m}.{k}={v}" for m in ("verifier", "ar_drafter", "drafter")
           for k, v in (("hidden_size", 64), ("intermediate_size", 128), ("steps", 30), ("batch_size", 4))],
         "pocket.verifier.num_layers=2", "pocket.ar_drafter.num_layers=1", "pocket.drafter.num_layers=1"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 3])
def test_reproduce_tiny_end_to_end_on_a_micro_world(tmp_path, workers):
    """The whole reproduce_tiny path (same code as reproduce_gpu) on a micro pocket world; a rerun skips it all.
    workers=3: the pretrainings (and the ratio world's verifier) and the arms run as processes side by side."""
    from specdiff2.bench.reproduce import main

    argv = ["experiment=reproduce_tiny", f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
            *MICRO, "+ratio_worlds.tiny_near=['pocket=tiny','pocket.name=tiny_near','pocket.verifier.num_layers=1']",
            "ratio_sweep.sets=[humaneval]", f"workers={workers}"]
    main(argv)
    run = tmp_path / "run"
    assert all((run / s / "done.json").is_file() for s in STAGES)
    rows = read_jsonl(run / "decode" / "rows.jsonl")
    assert rows and not [r for r in rows if "error" in r]
    assert {r["sweep"] for r in rows} >= {"reference", "core", "arms", "self_select", "diffuspec"}
    report = (run / "report.md").read_text()
    assert "## Claims" in report and "## Speed-up at both cost ratios" in report
    # the ratio world linked every stage of the run's world but its verifier, and both measured their cost ratio
    near = tmp_path / "cache" / "pocket" / "tiny_near"
    assert (near / "drafter").is_symlink() and not (near / "verifier").is_symlink()
    worlds = json.loads((run / "ratios" / "done.json").read_text())["worlds"]
    assert worlds["tiny_near"]["cost"]["ratio"] > 0 and json.loads((run / "pocket" / "done.json").read_text())["cost"]
    assert {r["sweep"] for r in read_jsonl(run / "ratios" / "tiny_near" / "rows.jsonl")} == {"reference", "core"}
    before = (run / "decode" / "done.json").stat().st_mtime
    main(argv)
    assert (run / "decode" / "done.json").stat().st_mtime == before
