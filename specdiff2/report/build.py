"""Turn a reproduction run directory into report.md + PNG figures (+ W&B media): `build_report(RUN_DIR)`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from specdiff2.errors import DataError, require
from specdiff2.report.claims import evaluate_claims
from specdiff2.report.compare import projection_vs_measured
from specdiff2.report.figures import make_figures
from specdiff2.report.markdown import (
    arms_section,
    changes_section,
    claims_section,
    errors_section,
    figure_notes,
    projection_section,
    ratios_section,
    speedup_section,
    stages_section,
    world_line,
    worlds_section,
)
from specdiff2.report.projection import alphas_of, costs_from_real_shapes, projection_table, reference_costs
from specdiff2.report.rundata import RunData, load_run
from specdiff2.report.wandb_log import log_images, log_table, open_run

FIGURE_TEXT = {
    "alpha_per_arm": "α_j per distillation arm (SpecDiff-2 Fig. 2)",
    "accept_hist": "accepted draft tokens per verifier step, share of steps per method (greedy)",
    "tps_vs_k": "tok/s vs K per drafter temperature (SpecDiff-2 Fig. 5)",
    "gamma_steps_heatmap": "SpecDiff γ × denoising steps T (tok/s, τ in each cell)",
    "diffuspec_bars": "DiffuSpec ablation (speed-up over ar, τ on each bar)",
}


def projection_profiles(run: RunData) -> dict[str, list[float]]:
    """The α profiles to project: the one-pass γ=16 chain of every arm, greedy, on each set."""
    return {f"{r['drafter']} / {r['set']}": alphas_of(r) for r in run.select(sweep="arms", temperature=0.0)}


def step_costs(run: RunData):
    """The 7B-shape measurement when the run has one (its drafter rows are the Dream/DiffuCoder-7B shape), else
    the first real_shapes file, else the closing note's H100 numbers (labelled as such in the report)."""
    if not run.real_shapes:
        return reference_costs()
    return costs_from_real_shapes(next((d for d in run.real_shapes if "qwen7b" in d["file"]), run.real_shapes[0]))


def write_csv(run: RunData, path: Path) -> None:
    """decode/rows.jsonl flattened (no per-prompt records) for spreadsheets; the JSONL stays the source."""
    rows = [{k: v for k, v in r.items() if k != "per_prompt"} for r in run.rows + run.errors]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def build_report(run_dir: str | Path, wandb: dict | None = None, previous: str | Path | None = None) -> dict:
    """previous: an earlier run's claims.json; the report then lists every claim whose verdict changed."""
    run = load_run(run_dir)
    require(previous is None or Path(previous).is_file(), f"--previous {previous}: no such file; pass an earlier "
            "run's RUN_DIR/claims.json", DataError)
    before = json.loads(Path(previous).read_text()) if previous else None
    figures = make_figures(run, run.root / "figures")
    costs = step_costs(run)
    projection = projection_table(projection_profiles(run), costs)
    claims = evaluate_claims(run, projection)
    compared = projection_vs_measured(run, projection)
    notes = figure_notes(run)
    parts = [f"# Reproduction report: {run.root.name}", "",
             ("Source of truth: `decode/rows.jsonl`, `hf/rows.jsonl`, `*/done.json` in this directory; "
              "every number below is computed from them (`python -m specdiff2.report RUN_DIR`)."),
             stages_section(run), worlds_section(run), claims_section(claims, world_line(run, run.main_world())),
             changes_section(claims, before, str(previous or "")), speedup_section(run),
             ratios_section(run), arms_section(run),
             "## Figures\n\n" + "\n\n".join(f"**{FIGURE_TEXT[n]}**\n\n![{n}](figures/{p.name})\n\n{notes.get(n, '')}"
                                           for n, p in figures.items()),
             projection_section(projection, costs, compared), errors_section(run)]
    report = run.root / "report.md"
    report.write_text("\n\n".join(p for p in parts if p) + "\n")
    write_csv(run, run.root / "decode" / "rows.csv")
    (run.root / "claims.json").write_text(json.dumps([c.as_dict() for c in claims], indent=2))
    (run.root / "projection.json").write_text(json.dumps(projection, indent=2))
    (run.root / "projection_vs_measured.json").write_text(json.dumps(compared, indent=2))
    if wandb is not None:
        wb = open_run(run.root / "report_wandb", "report", **wandb)
        log_images(wb, figures)
        log_table(wb, "report/claims", [c.as_dict() for c in claims], ["claim", "paper", "set", "sample", "pocket",
                                                                         "verdict", "reason"])
        log_table(wb, "report/projection", projection, list(projection[0]) if projection else [])
        if wb is not None:
            wb.finish()
    return {"report": str(report), "figures": {n: str(p) for n, p in figures.items()},
            "claims": [c.as_dict() for c in claims]}
