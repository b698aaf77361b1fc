"""Reproduce SpecDiff, DiffuSpec and SpecDiff-2 in one command: python -m specdiff2.bench.reproduce experiment=...

    experiment=reproduce_tiny   CPU, tiny pocket world (minutes once the world exists)
    experiment=reproduce_gpu    one GPU, GPU pocket world (goal <= 15 min including the world)

Stages (conf/reproduce.yaml): pocket world -> verifier trajectories -> distillation arms -> decode sweeps -> the
same core methods on the ratio worlds (pocket worlds at other verify:draft cost ratios) -> HF baselines ->
real-shape step costs (CUDA only) -> report. Each writes RUN_DIR/<stage>/done.json when it finishes;
a re-run skips finished stages (`redo=[stage,...]` forces them), and a killed stage starts again: arms resume arm
by arm (RUN_DIR/arms/<arm>/done.json), sweeps row by row (RUN_DIR/decode/rows.jsonl), the world and the
trajectory store through their own markers. Any `pocket...` / `paths...` override given here reaches every
train.py / decode.py composition of the run.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from specdiff2.bench import real_shapes
from specdiff2.bench.common import ROOT, compose
from specdiff2.bench.decode_methods import Sweep, append_jsonl, compose_set, set_prompts, token_agreement
from specdiff2.bench.distill_arms import train_arm
from specdiff2.bench.hf_baselines import hf_rows
from specdiff2.cli import check_overrides, one_line_errors
from specdiff2.decode.run import pick_device
from specdiff2.errors import ConfigError, require
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.pocket.world import DATA_STAGES, build_parallel, ensure_pocket_world, run_side_by_side
from specdiff2.report import build_report
from specdiff2.report.rundata import read_jsonl
from specdiff2.report.wandb_log import log_decode_row, log_table, open_run
from specdiff2.training.pipeline import resolve_checkpoints

STAGES = ("pocket", "trajectories", "arms", "decode", "ratios", "hf", "real_shapes", "report")


@dataclass
class Plan:
    """The reproduction settings as plain objects (from conf/reproduce.yaml + the experiment)."""

    run_dir: Path
    pocket: object  # PocketSpec
    pocket_dir: Path
    forwarded: list[str]  # the pocket option and the CLI's pocket/paths overrides: every sub-composition gets them
    decode: list[str]
    train: list[str]
    trajectories: list[str]
    arms: dict[str, list[str]]
    sweep: dict
    real_shapes: dict
    wandb: dict
    ratio_worlds: dict[str, list[str]] = field(default_factory=dict)  # name -> overrides (pocket=OPTION first)
    ratio_sweep: dict = field(default_factory=dict)  # grids, sets, temperatures run on each ratio world
    redo: list[str] = field(default_factory=list)
    stop_after: str | None = None
    threads: int | None = None
    workers: int = 1  # > 1: independent pretrainings and arms run as that many processes side by side

    def decode_overrides(self) -> list[str]:
        return [*self.forwarded, *self.decode]

    def train_overrides(self, output_dir: Path, stage: list[str]) -> list[str]:
        return [*stage, f"paths.output_dir={output_dir}", *self.forwarded, *self.train]

    def ratio_overrides(self, name: str) -> list[str]:
        """decode.py overrides of ratio world `name`: its pocket option, this command's pocket/paths overrides, its
        own, and the link to this run's world (every stage but the verifier is shared: same corpus and drafters)."""
        option, *own = self.ratio_worlds[name]
        require(option.startswith("pocket="), f"ratio_worlds.{name} must start with its pocket option "
                f"(pocket=NAME), got {option!r}")
        return [option, *self.forwarded[1:], *own, f"++pocket.share_stages_from=[{self.pocket.name}]", *self.decode]


def experiment_keys(name: str) -> set[str]:
    """What conf/experiment/<name>.yaml decides: its dotted keys and the groups its defaults override."""
    path = ROOT / "conf" / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return set()  # an unknown experiment: Hydra names it when the arm is composed
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    groups = {str(next(iter(d))).removeprefix("override ").strip("/").split("@")[0]
              for d in tree.pop("defaults", []) if isinstance(d, dict)}
    return groups | set(_leaves(tree))


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        yield from _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]


def check_shared_overrides(shared: list[str], arms: dict[str, list[str]]) -> None:
    """Every arm trains exactly as its experiment says: a shared train override may not change what an arm's
    experiment decides (reproduce_tiny's shared trainer.max_steps=60 once trained the 0-step 'unaligned' arm)."""
    shared_keys = {o.split("=", 1)[0].lstrip("+~") for o in shared if "=" in o}
    for arm, overrides in arms.items():
        for name in [o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")]:
            clash = sorted(shared_keys & experiment_keys(name))
            require(not clash, f"train_overrides sets {clash[0] if clash else ''}, which arm {arm}'s experiment={name} "
                    "sets itself; move that override into the arms that should get it (arms.NAME: [experiment=..., "
                    "KEY=VALUE])")


def make_plan(overrides: list[str]) -> Plan:
    try:
        cfg = compose("reproduce", overrides)
    except ConfigCompositionException as err:  # Hydra's message spans lines; the first names the override
        raise ConfigError(f"{str(err).splitlines()[0]} (keys: conf/reproduce.yaml, conf/sweep/*.yaml)") from None
    plain = OmegaConf.to_container(cfg, resolve=True)
    forwarded = [f"pocket={cfg.pocket.name}"] + [o for o in overrides if o.lstrip("+~").startswith(("pocket.", "paths."))]
    require(set(plain["redo"]) <= set(STAGES), f"redo={plain['redo']}: stages are {', '.join(STAGES)}")
    require(plain["stop_after"] in (None, *STAGES), f"stop_after={plain['stop_after']}: use one of {STAGES}")
    check_shared_overrides(plain["train_overrides"], plain["arms"])
    return Plan(run_dir=Path(plain["run_dir"]), pocket=instantiate(cfg.pocket), pocket_dir=Path(cfg.paths.pocket_dir),
                forwarded=forwarded, decode=plain["decode_overrides"], train=plain["train_overrides"],
                trajectories=plain["trajectories"], arms=plain["arms"], sweep=plain["sweep"],
                real_shapes=plain.get("real_shapes") or {}, wandb=plain["wandb"],
                ratio_worlds=plain.get("ratio_worlds") or {}, ratio_sweep=plain.get("ratio_sweep") or {},
                redo=plain["redo"],
                stop_after=plain["stop_after"], threads=plain.get("threads"), workers=plain.get("workers", 1))


def done_path(run_dir: Path, stage: str) -> Path:
    return run_dir / stage / "done.json"


def read_done(run_dir: Path, stage: str) -> dict | None:
    path = done_path(run_dir, stage)
    return json.loads(path.read_text()) if path.is_file() else None


def write_done(path: Path, info: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str))
    tmp.replace(path)  # atomic: a kill never leaves a half-written marker
    return info


# --- stages: each takes the plan and the results of earlier stages, returns what its done.json records ---

def world_info(spec, root: Path) -> dict:
    """What the report says of a pocket world: its paths, world.json figures, spec and measured cost ratio."""
    world = ensure_pocket_world(spec, root)
    summary = world.summary()
    return {"name": spec.name, "root": str(world.root), "verifier": str(world.verifier),
            "drafter": str(world.drafter), "ar_drafter": str(world.ar_drafter), "stages": summary,
            "spec": spec.to_dict(), "cost": summary.get("cost")}


def ratio_world(plan: Plan, name: str) -> tuple[object, Path]:
    """(spec, root) of ratio world `name`."""
    cfg = compose("decode", plan.ratio_overrides(name))
    return instantiate(cfg.pocket), Path(cfg.paths.pocket_dir)


def stage_pocket(plan: Plan, _: dict) -> dict:
    if plan.workers > 1:
        build_side_by_side(plan)
    return world_info(plan.pocket, plan.pocket_dir)


def build_side_by_side(plan: Plan) -> None:
    """The data stages, then every model pretraining that reads no other (this world's verifier, its two
    drafters in order, each ratio world's verifier) as processes side by side, at most `workers` at once. The
    cost ratios are measured afterwards, each alone on the device (world_info)."""
    spec, root = plan.pocket, plan.pocket_dir
    ensure_pocket_world(spec, root, stages=DATA_STAGES)
    jobs = [(spec, root, ("verifier",)), (spec, root, ("ar_drafter", "drafter"))]
    jobs += [(*ratio_world(plan, name), (*DATA_STAGES, "verifier")) for name in plan.ratio_worlds]
    jobs = [job for job in jobs if not all((job[1] / f"{s}.done").exists() for s in job[2])]
    build_parallel(jobs, plan.run_dir / "pocket" / "logs", plan.workers)


def stage_trajectories(plan: Plan, _: dict) -> dict:
    cfg = compose("train", plan.train_overrides(plan.run_dir / "trajectories" / "run", plan.trajectories))
    job = instantiate(cfg.job)
    verifier_dir, = resolve_checkpoints(job.verifier)
    return {"store": str(job.trajectories.generate(verifier_dir))}


def run_arm(arms_dir: Path, arm: str, overrides: list[str], train: list[str]) -> dict:
    """Train one arm from step 0 and write its done.json (arms_dir/<arm>/); `train` = the full train.py overrides."""
    shutil.rmtree(arms_dir / arm / "run", ignore_errors=True)  # a killed arm starts again from step 0
    summary = train_arm(train)
    info = {"drafter": str(summary["sections"]["export"]["drafter"]), "wall_s": summary["wall_s"],
            "val_before": summary.get("val_before"), "val_after": summary.get("val_after"),
            "val_history": summary.get("val_history"), "training": summary["sections"].get("training"),
            "overrides": overrides}
    print(json.dumps({"arm": arm, "wall_s": info["wall_s"]}), flush=True)
    return write_done(done_path(arms_dir, arm), info)


def stage_arms(plan: Plan, _: dict) -> dict:
    """Every arm not yet done: in this process one by one, or (workers > 1) as processes side by side, at most
    `workers` at once (equal step budgets either way; each arm's wall time then includes sharing the device)."""
    arms_dir = plan.run_dir / "arms"
    pending = {arm: o for arm, o in plan.arms.items() if read_done(arms_dir, arm) is None}
    train = {arm: plan.train_overrides(arms_dir / arm / "run", o) for arm, o in pending.items()}
    if plan.workers <= 1:
        for arm, overrides in pending.items():
            run_arm(arms_dir, arm, overrides, train[arm])
    else:
        run_side_by_side([(f"[reproduce] arm {arm}", [sys.executable, "-m", "specdiff2.bench.reproduce", "--arm",
                                                       str(arms_dir), arm, json.dumps(pending[arm]),
                                                       json.dumps(train[arm])], arms_dir / f"{arm}.log")
                          for arm in pending], plan.workers, split_threads=True)
    return {"arms": {arm: read_done(arms_dir, arm) for arm in plan.arms}}


def stage_decode(plan: Plan, done: dict) -> dict:
    drafters = {arm: info["drafter"] for arm, info in done["arms"]["arms"].items()}
    run = open_run(plan.run_dir / "decode", "decode-sweeps", **plan.wandb)
    sweep = Sweep(plan.sweep, plan.decode_overrides(), drafters, plan.run_dir / "decode" / "rows.jsonl",
                  on_row=lambda row: log_decode_row(run, row))
    rows = sweep.run()
    cols = ["sweep", "drafter", "set", "temperature", "method", "mean_accept_len", "tokens_per_s", "speedup_ar",
            "agree_ar", "drafter_s", "verifier_s", "other_s", "error"]
    log_table(run, "decode/rows", rows, cols)
    if run is not None:
        run.finish()
    return {"rows": len(rows), "errors": sum("error" in r for r in rows), "device": _device()}


def ratio_spec(plan: Plan) -> dict:
    """The sweep run on each ratio world: the named grids with the world's own drafter only, on the named sets."""
    spec, want = dict(plan.sweep), plan.ratio_sweep
    sets = want.get("sets") or list(spec["sets"])
    grids = [{**g, "drafters": ["pocket"], "sets": [s for s in g.get("sets", sets) if s in sets]}
             for g in spec["grids"] if g["name"] in want.get("grids", [])]
    return {**spec, "sets": {s: spec["sets"][s] for s in sets}, "grids": grids,
            "temperatures": want.get("temperatures", spec["temperatures"])}


def stage_ratios(plan: Plan, _: dict) -> dict:
    worlds, rows = {}, {}
    for name in plan.ratio_worlds:
        overrides = plan.ratio_overrides(name)
        worlds[name] = world_info(*ratio_world(plan, name))
        out = plan.run_dir / "ratios" / name / "rows.jsonl"
        rows[name] = len(Sweep(ratio_spec(plan), overrides, {}, out).run())
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next world's verifier: this one's graphs and cache are garbage now
    return {"worlds": worlds, "rows": rows, "device": _device()}


def stage_hf(plan: Plan, done: dict) -> dict:
    spec, world = plan.sweep.get("hf") or {}, done["pocket"]
    out = plan.run_dir / "hf" / "rows.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    have = {(r["set"], r["kind"]) for r in read_jsonl(out)}
    tok = load_tokenizer(Path(world["verifier"]))
    refs = {r["set"]: r for r in read_jsonl(plan.run_dir / "decode" / "rows.jsonl")
            if r["sweep"] == "reference" and float(r["temperature"]) == 0.0 and "error" not in r}
    device, errors = pick_device("auto"), []
    for name in spec.get("sets", []):
        kinds = [k for k in spec.get("methods", []) if (name, k) not in have]
        if not kinds:
            continue
        cfg = compose_set(plan.decode_overrides(), spec.get("prompts", plan.sweep["prompts"]), plan.sweep["sets"][name])
        prompts = [ids for _, ids in set_prompts(cfg, tok)]
        try:
            rows = hf_rows(world["verifier"], world["ar_drafter"], prompts,
                           spec.get("max_new_tokens", plan.sweep["max_new_tokens"]),
                           tok.eos_token_id, kinds=kinds, schedules=[tuple(s) for s in spec.get("schedules", [])],
                           device=device, dtype=_dtype(cfg))
        except Exception as err:  # noqa: BLE001 — a baseline must not stop the run: the report shows why
            print(f"[reproduce] hf {name}: {type(err).__name__}: {err}", flush=True)
            errors.append({"set": name, "kinds": kinds, "error": f"{type(err).__name__}: {err}"})
            continue
        ref = refs.get(name)
        for row in rows:
            row.update(set=name, temperature=0.0)
            if ref is not None:
                row["agree_ar_tokens"] = token_agreement([p["token_ids"] for p in ref["per_prompt"]], row["outputs"])
                row["ar_tokens_per_s"] = ref["tokens_per_s"]
            append_jsonl(out, row)
            print(json.dumps({k: row[k] for k in ("set", "method", "tokens_per_s")}), flush=True)
    return {"rows": len(read_jsonl(out)), "errors": errors, "device": _device()}


def stage_real_shapes(plan: Plan, _: dict) -> dict:
    shapes = plan.real_shapes.get("shapes") or []
    if not shapes or not torch.cuda.is_available():
        return {"skipped": "no CUDA device" if shapes else "real_shapes.shapes is empty", "files": []}
    out, errors = plan.run_dir / "real_shapes", []
    for shape in shapes:
        try:
            real_shapes.main_with(["--shape", shape, "--modes", plan.real_shapes.get("modes", "graph+block-compiled"),
                                   "--sections", plan.real_shapes.get("sections", "verify,drafter,tree"),
                                   "--out", str(out)])
        except Exception as err:  # noqa: BLE001 — projection falls back to the closing note costs
            errors.append(f"{shape}: {type(err).__name__}: {err}")
        torch.cuda.empty_cache()
    return {"files": sorted(str(p) for p in out.glob("real_shapes_*.json")), "errors": errors, "device": _device()}


def stage_report(plan: Plan, _: dict) -> dict:
    return build_report(plan.run_dir, wandb=plan.wandb)


RUNNERS: dict[str, Callable[[Plan, dict], dict]] = {
    "pocket": stage_pocket, "trajectories": stage_trajectories, "arms": stage_arms, "decode": stage_decode,
    "ratios": stage_ratios, "hf": stage_hf, "real_shapes": stage_real_shapes, "report": stage_report,
}


def _device() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _dtype(cfg) -> torch.dtype:
    return torch.bfloat16 if cfg.verifier.dtype == "bfloat16" else torch.float32


def run_stages(plan: Plan, runners: dict[str, Callable[[Plan, dict], dict]] = RUNNERS,
               log: Callable[[str], None] = print) -> dict:
    """Run every stage not yet done (in order); returns each stage's done.json content."""
    done: dict[str, dict] = {}
    for stage in STAGES:
        previous = None if stage in plan.redo else read_done(plan.run_dir, stage)
        if previous is not None:
            log(f"[reproduce] {stage}: done ({previous.get('wall_s', 0):.0f} s), skipped")
            done[stage] = previous
        else:
            log(f"[reproduce] {stage}: running")
            t0 = time.perf_counter()
            info = runners[stage](plan, done)
            done[stage] = write_done(done_path(plan.run_dir, stage),
                                     {**info, "wall_s": time.perf_counter() - t0, "finished": time.time()})
            log(f"[reproduce] {stage}: done in {done[stage]['wall_s']:.0f} s")
        if stage == plan.stop_after:
            break
    return done


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--arm"]:  # one arm of stage_arms in a process of its own
        arms_dir, arm, overrides, train = argv[1:]
        with one_line_errors():
            run_arm(Path(arms_dir), arm, json.loads(overrides), json.loads(train))
        return
    bad = check_overrides(argv, Path(__file__).resolve().parents[2] / "conf")
    if bad:
        print(bad, file=sys.stderr)
        raise SystemExit(2)
    with one_line_errors():
        plan = make_plan(argv)
        require(bool(plan.arms), "no distillation arms configured; set arms (see conf/reproduce.yaml)", ConfigError)
        if plan.threads:
            torch.set_num_threads(plan.threads)
        done = run_stages(plan)
        if "report" in done:
            print(f"[reproduce] report: {done['report']['report']}")


if __name__ == "__main__":
    main()
