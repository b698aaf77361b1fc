"""Read a reproduction run directory (bench/reproduce.py) into plain lists and dicts; the files are the truth."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from specdiff2.errors import DataError, require

STAGE_ORDER = ("pocket", "trajectories", "arms", "decode", "ratios", "hf", "real_shapes", "report")


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a line cut by a kill is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def describe(row: dict) -> str:
    return f"{row.get('sweep')}/{row.get('drafter')}/{row.get('set')}/T={row.get('temperature')} ({row.get('method')})"


def config_of(row: dict) -> dict:
    """The resolved config a sweep row ran with (bench/sweep_fields.py): the report reads these fields, never the
    override string, so a renamed config key fails here in one line instead of emptying a table."""
    cfg = row.get("config")
    require(isinstance(cfg, dict), f"sweep row {describe(row)} has no resolved `config` fields (written before "
            "issue 23); rerun its sweep: python -m specdiff2.bench.reproduce ... redo=[decode]", DataError)
    return cfg


def method_of(row: dict) -> str:
    return config_of(row)["method"]


def knob(row: dict, name: str):
    """A resolved strategy knob of a row (gamma, steps, k, cps, ...)."""
    strategy = config_of(row)["strategy"]
    require(name in strategy, f"sweep row {describe(row)}: its strategy {strategy.get('_target_')} has no knob "
            f"{name!r} (it has {', '.join(k for k in strategy if not k.startswith('_'))}); a config key was renamed: "
            "update the report (specdiff2/report/) to the new name", DataError)
    return strategy[name]


def model_target(row: dict, name: str) -> str | None:
    """The `_target_` of one of the row's decode models (drafter, proxy, ...), None when the method has none."""
    model = (config_of(row).get("models") or {}).get(name)
    return model["_target_"] if model else None


@dataclass
class RunData:
    root: Path
    rows: list[dict]  # decode sweep rows (errors dropped)
    errors: list[dict]  # decode rows that failed
    hf: list[dict]
    stages: dict[str, dict]  # stage -> done.json
    arms: dict[str, dict] = field(default_factory=dict)  # arm -> its done.json (drafter, val, wall_s)
    real_shapes: list[dict] = field(default_factory=list)  # real_shapes_*.json contents
    ratio_rows: dict[str, list[dict]] = field(default_factory=dict)  # ratio world -> its sweep rows (no errors)

    @property
    def device(self) -> str:
        return self.stages.get("decode", {}).get("device", "unknown")

    def worlds(self) -> dict[str, dict]:
        """Pocket world name -> what the report says of it (world.json figures, spec, cost ratio): this run's world
        first, then the ratio worlds."""
        main = self.stages.get("pocket", {})
        out = {main.get("name", "main"): main} if main else {}
        return out | (self.stages.get("ratios", {}).get("worlds") or {})

    def main_world(self) -> str:
        return self.stages.get("pocket", {}).get("name", "main")

    def select(self, **where) -> list[dict]:
        """Rows whose fields equal every `where` value (temperature compared as float)."""
        out = []
        for r in self.rows:
            if all((float(r.get(k, "nan")) == float(v)) if k == "temperature" else r.get(k) == v
                   for k, v in where.items()):
                out.append(r)
        return out

    def sets(self) -> list[str]:
        return list(dict.fromkeys(r["set"] for r in self.rows))


def _key(row: dict) -> tuple:
    return tuple(str(row.get(k)) for k in ("sweep", "drafter", "set", "temperature", "overrides"))


def load_run(run_dir: str | Path) -> RunData:
    root = Path(run_dir)
    require(root.is_dir(), f"run directory {root} does not exist; pass the RUN_DIR of a reproduce run", DataError)
    decode = read_jsonl(root / "decode" / "rows.jsonl")
    require(bool(decode), f"{root}/decode/rows.jsonl has no rows; run python -m specdiff2.bench.reproduce "
            "(its decode stage) first", DataError)
    stages = {s: json.loads((root / s / "done.json").read_text()) for s in STAGE_ORDER
              if (root / s / "done.json").is_file()}
    arms = {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "arms").glob("*/done.json"))}
    shapes = [json.loads(p.read_text()) | {"file": p.name} for p in sorted(root.glob("real_shapes/real_shapes_*.json"))]
    ok = [r for r in decode if "error" not in r]
    fixed = {_key(r) for r in ok}  # a row that failed and succeeded on a rerun is not a failure
    ratio_rows = {p.parent.name: [r for r in read_jsonl(p) if "error" not in r]
                  for p in sorted((root / "ratios").glob("*/rows.jsonl"))}
    return RunData(root, ok, [r for r in decode if "error" in r and _key(r) not in fixed],
                   read_jsonl(root / "hf" / "rows.jsonl"), stages, arms, shapes, ratio_rows)
