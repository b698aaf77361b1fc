"""The reproduction report from a synthetic RUN_DIR: claims verdicts on crafted numbers, figures, report.md, CLI."""

import json
from pathlib import Path

import pytest

from specdiff2.errors import DataError
from specdiff2.report import build_report
from specdiff2.report.claims import evaluate_claims, gain_verdict
from specdiff2.report.projection import costs_from_real_shapes, project, reference_costs, tau_from_alphas
from specdiff2.report.rundata import load_run

STEPS = 100  # verifier steps per synthetic row: enough for a verdict (claims.MIN_STEPS)


def _row(sweep, drafter, method, overrides, tps, tau, alphas, prompt_set="humaneval", temperature=0.0, **extra):
    pieces = ["def", " f", "(", "x", "):", "\n", "    return", " x"]
    steps = [[2, 3], [0, 1], [3, 4]]  # (accepted, committed) per step: 8 tokens
    row = {"sweep": sweep, "drafter": drafter, "set": prompt_set, "temperature": temperature,
           "overrides": overrides, "method": method, "prompts": 2, "new_tokens": 256, "verifier_steps": STEPS,
           "mean_accept_len": tau, "tokens_per_s": tps, "wall_s": 8 / tps, "drafter_s": 0.2 * 8 / tps,
           "verifier_s": 0.6 * 8 / tps, "other_s": 0.2 * 8 / tps,
           "per_prompt": [{"id": "HumanEval/0", "token_ids": list(range(8)), "pieces": pieces, "steps": steps,
                           "stop_reason": "max_new_tokens", "metrics": {"mean_accept_len": tau,
                                                                         "tokens_per_s": tps}}]}
    row.update({f"alpha_{j}": a for j, a in enumerate(alphas, 1)})
    row.update(extra)
    return row


def make_run_dir(root: Path, device: str = "NVIDIA H100 80GB HBM3", streak_tps: float = 1400.0,
                 late: tuple[float, float] = (0.33, 0.1), k8_gain: float = 1.25, best_gamma_steps=(16, 4),
                 cps_gain: float = 1.3, steps: int = STEPS) -> Path:
    """A RUN_DIR as bench/reproduce.py writes it, with numbers chosen by the caller (`steps`: per row)."""
    rows = [_row("reference", "pocket", "ar", "decode=ar", 1000.0, 1.0, [])]
    rows.append(_row("core", "pocket", "specdiff gamma=16", "decode=specdiff decode.strategy.gamma=16", 1500.0, 2.5,
                     [0.8, 0.5, 0.3], speedup_ar=1.5))
    rows.append(_row("core_streak", "streak", "specdiff gamma=16", "decode=specdiff decode.strategy.gamma=16",
                     streak_tps, 3.0, [0.8, 0.6, 0.4], speedup_ar=streak_tps / 1000))
    for arm, tps, tail in (("ce", 1000.0, late[1]), ("streak", streak_tps, late[0]), ("unaligned", 900.0, 0.0)):
        alphas = [0.8, 0.6, 0.4, 0.3, 0.3, 0.3, 0.3] + [tail] * 9
        rows.append(_row("arms", arm, "specdiff gamma=16", "decode=specdiff decode.strategy.gamma=16", tps,
                         1 + sum(alphas), alphas))
    for k in (1, 8):
        for t in (0.1, 1.5, 2.0):
            gain = k8_gain if (k == 8 and t == 1.5) else 1.0
            rows.append(_row("self_select", "streak", f"self_select k={k} drafter_temperature={t}",
                             f"decode=self_select decode.strategy.gamma=16 decode.strategy.k={k} "
                             f"decode.strategy.drafter_temperature={t}", 800.0 * gain, 2.0, [0.7, 0.4]))
    for k in (1, 8):  # the unaligned (pocket) drafter gains nothing from K
        rows.append(_row("self_select_unaligned", "pocket", f"self_select k={k} drafter_temperature=1.5",
                         f"decode=self_select decode.strategy.gamma=16 decode.strategy.k={k} "
                         "decode.strategy.drafter_temperature=1.5", 700.0, 1.8, [0.6, 0.3]))
    for g in (8, 16):
        for s in (1, 4):
            tps = 1200.0 if (g, s) == best_gamma_steps else 900.0
            rows.append(_row("specdiff_gamma_steps", "pocket", f"specdiff gamma={g} steps={s}",
                             f"decode=specdiff decode.strategy.gamma={g} decode.strategy.steps={s}", tps, 2.0, [0.7]))
    for cps, adl, tps in (("false", "false", 500.0), ("true", "true", 500.0 * cps_gain)):
        rows.append(_row("diffuspec", "pocket", f"diffuspec cps={cps} adl={adl}",
                         f"decode=diffuspec decode.strategy.cps={cps} decode.strategy.adl={adl}", tps, 2.5, [0.7, 0.5],
                         speedup_ar=tps / 1000))
    for row in rows:
        row["verifier_steps"] = steps
    rows.append({"sweep": "core", "drafter": "pocket", "set": "humaneval", "temperature": 0.0, "method": "broken",
                 "overrides": "decode=bogus", "error": "ConfigError: no such method"})
    (root / "decode").mkdir(parents=True, exist_ok=True)
    (root / "decode" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut by a kill')
    for stage, wall in (("pocket", 300.0), ("trajectories", 20.0), ("arms", 150.0), ("decode", 240.0)):
        (root / stage).mkdir(exist_ok=True)
        (root / stage / "done.json").write_text(json.dumps({"wall_s": wall, "device": device}))
    for arm in ("ce", "streak", "unaligned"):
        (root / "arms" / arm).mkdir(parents=True, exist_ok=True)
        (root / "arms" / arm / "done.json").write_text(json.dumps({"drafter": f"/x/{arm}", "wall_s": 50.0,
                                                                   "val_after": {"expected_streak": 3.0}}))
    (root / "hf").mkdir(exist_ok=True)
    hf = [{"kind": "static", "method": "HF generate, static cache", "set": "humaneval", "tokens_per_s": 640.0},
          {"kind": "assisted", "method": "HF assisted [best]", "set": "humaneval", "tokens_per_s": 100.0}]
    (root / "hf" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hf))
    return root


def verdicts(root: Path, drafter: str = "streak") -> dict[str, str]:
    """claim -> verdict (self-selection claims: those of `drafter`)."""
    return {c.claim: c.verdict for c in evaluate_claims(load_run(root))
            if "drafter)" not in c.set or f"({drafter} drafter)" in c.set}


def test_claims_reproduced_on_numbers_that_meet_the_papers(tmp_path):
    v = verdicts(make_run_dir(tmp_path))
    assert v["streak-distillation: throughput over AR-distillation (CE)"] == "reproduced"  # 1.40x >= 1.15x
    assert v["streak-distillation: late-position (j >= 8) acceptance over CE"] == "reproduced"  # 3.3x >= 2.1x
    assert v["self-selection: K=8 over K=1, drafter temperature 1.5-2"] == "reproduced"  # 1.25x >= 1.10x
    assert v["self-selection: best drafter temperature at K=8"] == "reproduced"
    assert v["self-selection: no gain at drafter temperature 0.1 (τ, K=8 vs K=1)"] == "reproduced"
    assert v["SpecDiff: best γ and denoising steps T"] == "reproduced"
    assert v["DiffuSpec: CPS+ADL over fixed draft length"] == "reproduced"
    assert v["DiffuSpec: speed-up over AR (best variant)"] == "refuted"  # 0.65x < 2x


def test_self_selection_claims_per_drafter(tmp_path):
    v = verdicts(make_run_dir(tmp_path), drafter="pocket")
    assert v["self-selection: K=8 over K=1, drafter temperature 1.5-2"] == "refuted"  # 1.00x
    claims = [c for c in evaluate_claims(load_run(tmp_path)) if c.claim.startswith("self-selection: K=8")]
    assert sorted(c.set for c in claims) == ["humaneval (pocket drafter)", "humaneval (streak drafter)"]


def test_claims_refuted_on_numbers_that_miss(tmp_path):
    v = verdicts(make_run_dir(tmp_path, streak_tps=1050.0, late=(0.02, 0.11), k8_gain=1.02,
                              best_gamma_steps=(8, 1), cps_gain=0.9))
    assert v["streak-distillation: throughput over AR-distillation (CE)"] == "refuted"
    assert v["streak-distillation: late-position (j >= 8) acceptance over CE"] == "refuted"  # the pocket's finding
    assert v["self-selection: K=8 over K=1, drafter temperature 1.5-2"] == "refuted"
    assert v["SpecDiff: best γ and denoising steps T"] == "refuted"
    assert v["DiffuSpec: CPS+ADL over fixed draft length"] == "refuted"


def test_cpu_timings_are_not_comparable_but_acceptance_is(tmp_path):
    v = verdicts(make_run_dir(tmp_path, device="cpu"))
    assert v["streak-distillation: throughput over AR-distillation (CE)"] == "not comparable"
    assert v["SpecDiff: best γ and denoising steps T"] == "not comparable"
    assert v["streak-distillation: late-position (j >= 8) acceptance over CE"] == "reproduced"


def test_every_claim_states_its_sample_and_few_steps_give_no_verdict(tmp_path):
    """Issue 22 item 2: the tiny sweep's 1 prompt x 24 tokens (~9 verifier steps a row) proves the code path only."""
    judged = evaluate_claims(load_run(make_run_dir(tmp_path / "ok")))
    assert all(c.sample.startswith("2 prompts, 256 new tokens, 100 verifier steps") for c in judged), judged
    assert {c.verdict for c in judged} >= {"reproduced", "refuted"}
    tiny = evaluate_claims(load_run(make_run_dir(tmp_path / "tiny", steps=9)),
                           [{"profile": "streak / humaneval", "target": "Qwen2.5-72B", "speedup": 1.5, "tau": 2.0}])
    verdicts = {c.verdict for c in tiny}
    assert not any(v.startswith(("reproduced", "refuted")) for v in verdicts), verdicts
    assert {"too few steps", "too few steps (projected)"} <= verdicts
    few = [c for c in tiny if c.verdict.startswith("too few steps")]
    assert all("9 verifier steps in a row < 50" in c.reason and "9 verifier steps" in c.sample for c in few)
    late = next(c for c in tiny if c.claim.startswith("streak-distillation: late"))
    assert late.sample == "2 prompts, 256 new tokens, 9 verifier steps per row (2 rows)"
    report = build_report(make_run_dir(tmp_path / "tiny"))["report"]
    assert "| claim | paper | set | sample | pocket | verdict | why |" in Path(report).read_text()


def test_gain_rule_edges(tmp_path):
    run = load_run(make_run_dir(tmp_path))
    assert gain_verdict(None, 1.3, False, run)[0] == "not comparable"
    assert gain_verdict(1.15, 1.3, False, run)[0] == "reproduced"  # exactly half the gain
    assert gain_verdict(1.149, 1.3, False, run)[0] == "refuted"


def test_report_writes_markdown_figures_and_claims(tmp_path):
    out = build_report(make_run_dir(tmp_path))
    report = Path(out["report"]).read_text()
    assert set(out["figures"]) == {"alpha_per_arm", "tps_vs_k", "gamma_steps_heatmap", "diffuspec_bars"}
    for path in out["figures"].values():
        assert Path(path).stat().st_size > 5000  # a real PNG, not an empty canvas
    assert ("| streak-distillation: throughput over AR-distillation (CE) | ~+30% tok/s | humaneval | 2 prompts, "
            "256 new tokens, 100 verifier steps per row (2 rows) | 1.40x") in report
    assert "| ar | pocket | 1.00 | 1000.0 | 1.56x | 10.00x |" in report  # x HF static = 1000 / 640, x assisted
    assert "Projection, not a measurement" in report and "Qwen2.5-32B" in report
    assert "ConfigError: no such method" in report  # failed rows are shown, not hidden
    assert json.loads((tmp_path / "claims.json").read_text())
    assert (tmp_path / "decode" / "rows.csv").read_text().count("\n") == 22  # header + 20 rows + the error row


def test_report_cli(tmp_path, capsys):
    from specdiff2.report.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.strip().count("\n") == 0 and "decode/rows.jsonl" in err
    main([str(make_run_dir(tmp_path / "run", device="cpu"))])
    out = capsys.readouterr().out
    assert "not comparable" in out and (tmp_path / "run" / "report.md").is_file()


def test_load_run_refuses_a_missing_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_projection_formula():
    costs = reference_costs()
    assert tau_from_alphas([0.5, 0.25]) == 1.75
    p = project([0.5, 0.25], costs, costs.weight_bytes)
    assert p["speedup"] == pytest.approx(1.75 * 6.37 / (7.2 + 6.61))  # t_verify(γ+1=3) -> the 5-token step
    big = project([0.5, 0.25], costs, 4 * costs.weight_bytes)
    assert big["t_ar_ms"] == pytest.approx(4 * 6.37) and big["speedup"] > p["speedup"]


def test_costs_from_real_shapes_json():
    data = {"device": "H100", "copy_bw": 3e12, "file": "real_shapes_qwen7b.json",
            "verify": [{"mode": "graph+block-compiled +fused-qkv/mlp", "tokens": n, "ms": 6 + n / 100,
                        "floor_ms": 5.0, "of_floor": 0.8} for n in (1, 17)],
            "drafter": [{"cache": "prefix", "gamma": 16, "prefix": 512, "ms": 7.0},
                        {"cache": "exact", "gamma": 16, "prefix": 512, "ms": 25.0}]}
    costs = costs_from_real_shapes(data)
    assert costs.verify(17) == pytest.approx(6.17) and costs.draft(16) == 7.0
    assert costs.weight_bytes == pytest.approx(15e9)


def test_report_logs_figures_and_claims_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    build_report(make_run_dir(tmp_path / "run"), wandb={"mode": "auto", "project": "test"})
    runs = list((tmp_path / "run" / "report_wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    images = list(runs[0].glob("files/media/images/report/*.png"))
    assert len(images) == 4, images
    assert list(runs[0].glob("files/media/table/report/claims*.table.json"))


def test_decode_rows_log_under_namespaced_keys():
    from specdiff2.report.wandb_log import decode_metrics, resolve_mode

    row = {"mean_accept_len": 2.5, "tokens_per_s": 100.0, "alpha_1": 0.8, "alpha_2": 0.5, "method": "x"}
    assert decode_metrics(row) == {"decode/mean_accept_len": 2.5, "decode/tokens_per_s": 100.0,
                                   "decode/alpha_1": 0.8, "decode/alpha_2": 0.5}
    with pytest.raises(Exception, match="W&B mode 'sometimes'"):
        resolve_mode("sometimes")


def test_projection_uses_the_runs_real_shape_measurements(tmp_path):
    root = make_run_dir(tmp_path)
    (root / "real_shapes").mkdir()
    data = {"device": "NVIDIA H100", "copy_bw": 3e12,
            "verify": [{"mode": "graph+block-compiled +fused-qkv/mlp", "tokens": n, "ms": 6.0 + n / 100,
                        "floor_ms": 5.0, "of_floor": 0.8} for n in (1, 5, 17, 33)],
            "drafter": [{"cache": "prefix", "gamma": g, "prefix": 512, "ms": 7.0} for g in (16, 32)]}
    (root / "real_shapes" / "real_shapes_qwen7b.json").write_text(json.dumps(data))
    build_report(root)
    report = (root / "report.md").read_text()
    assert "Step costs: real_shapes_qwen7b.json (NVIDIA H100)" in report
    rows = json.loads((root / "projection.json").read_text())
    assert {r["target"] for r in rows} == {"Qwen2.5-7B", "Qwen2.5-32B", "Qwen2.5-72B"}
    assert all(r["t_draft_ms"] == 7.0 for r in rows)


def test_a_row_that_failed_then_succeeded_is_not_reported_as_failed(tmp_path):
    root = make_run_dir(tmp_path)
    assert len(load_run(root).errors) == 1
    fixed = _row("core", "pocket", "bogus", "decode=bogus", 900.0, 1.5, [0.5])
    with open(root / "decode" / "rows.jsonl", "a") as f:
        f.write("\n" + json.dumps(fixed) + "\n")
    run = load_run(root)
    assert run.errors == [] and any(r["overrides"] == "decode=bogus" for r in run.rows)


def test_projected_speedup_claim_is_labelled_and_judged_on_the_projection(tmp_path):
    root = make_run_dir(tmp_path)
    with open(root / "decode" / "rows.jsonl", "a") as f:  # the gsm8k profile's own row (its sample)
        f.write("\n" + json.dumps(_row("arms", "streak", "specdiff gamma=16", "decode=specdiff", 900.0, 2.0, [0.5],
                                        prompt_set="gsm8k")) + "\n")
    run = load_run(root)
    projection = [{"profile": "streak / humaneval", "target": "Qwen2.5-72B", "speedup": 3.0, "tau": 3.5},
                  {"profile": "streak / humaneval", "target": "Qwen2.5-7B", "speedup": 9.0, "tau": 3.5},
                  {"profile": "ce / humaneval", "target": "Qwen2.5-72B", "speedup": 9.0, "tau": 3.5},
                  {"profile": "streak / gsm8k", "target": "Qwen2.5-72B", "speedup": 2.0, "tau": 2.0}]
    projected = {c.set: c for c in evaluate_claims(run, projection) if "projected" in c.claim}
    assert set(projected) == {"humaneval", "gsm8k"}  # streak arm, 72B target only
    assert projected["humaneval"].verdict == "reproduced (projected)"  # 3.0 >= 1 + (4.22 - 1) / 2
    assert projected["gsm8k"].verdict == "refuted (projected)"
    assert all(c.reason.startswith("projection, not a measurement") for c in projected.values())
    assert not [c for c in evaluate_claims(run) if "projected" in c.claim]


def test_a_run_whose_rows_carry_acceptance_histograms_builds_its_report(tmp_path):
    """Rows with accept_hist (decode/metrics.py) add the accept_hist figure; build_report crashed on its caption."""
    root = make_run_dir(tmp_path)
    with open(root / "decode" / "rows.jsonl", "a") as f:
        f.write("\n" + json.dumps(_row("core", "pocket", "sd_ar gamma=4", "decode=sd_ar", 900.0, 2.0, [0.5],
                                        accept_hist=[40, 30, 20, 10])) + "\n")
    out = build_report(root)
    assert "accept_hist" in out["figures"] and "accepted draft tokens per verifier step" in Path(out["report"]).read_text()


def test_late_alpha_reads_alpha_j_not_the_conditional_alpha_cond_j():
    from specdiff2.report.claims import late_alpha

    assert late_alpha({"alpha_7": 1.0, "alpha_8": 0.5, "alpha_9": 0.3, "alpha_cond_8": 0.9}) == pytest.approx(0.4)


def test_heatmap_labels_read_on_light_and_dark_cells_and_the_colour_bar_is_labelled(tmp_path, monkeypatch):
    """Issue 22 item 12: white labels on viridis' yellow cells were unreadable; the colour bar had no label."""
    from matplotlib.colors import to_rgb

    from specdiff2.report import figures

    saved = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.setdefault("fig", fig))
    figures.gamma_steps_heatmap(load_run(make_run_dir(tmp_path)), tmp_path)
    heat, bar = saved["fig"].axes
    colors = {t.get_text().split("\n")[0]: to_rgb(t.get_color()) for t in heat.texts}
    assert colors["1200"] == (0.0, 0.0, 0.0) and colors["900"] == (1.0, 1.0, 1.0)  # yellow max, purple min
    assert bar.get_ylabel() == "tok/s (NVIDIA H100 80GB HBM3)"
