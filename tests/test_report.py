"""The reproduction report from a synthetic RUN_DIR: claims verdicts on crafted numbers, figures, report.md, CLI."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from specdiff2.errors import DataError
from specdiff2.report import build_report
from specdiff2.report.claims import evaluate_claims
from specdiff2.report.projection import costs_from_real_shapes, project, reference_costs, tau_from_alphas
from specdiff2.report.rundata import load_run

N_PROMPTS = 32  # prompts per synthetic row: enough for an interval (claims.MIN_PROMPTS)
STEPS = 40  # verifier steps per prompt
PROXY = {"_target_": "specdiff2.decode.diffuspec.proxies.pick_proxy", "checkpoint": None}
AR_PROXY = {"_target_": "specdiff2.decode.loading.load_ar_proxy", "checkpoint": "/x/ar_drafter"}


def _trace(alphas: list[float], scale: float) -> list[list[int]]:
    """(accepted, committed) per step, the share of steps accepting >= j drafts ≈ alphas[j - 1] * scale."""
    out = []
    for i in range(STEPS):
        q = (i + 0.5) / STEPS
        accepted = sum(1 for a in alphas if a * scale > q)  # alphas non-increasing
        out.append([accepted, accepted + 1])
    return out


def _row(sweep, drafter, method, knobs, tps, alphas, prompt_set="humaneval", temperature=0.0, noise=0.1,
         prompts=N_PROMPTS, models=None, **extra):
    """A sweep row as bench/decode_methods writes it: per-prompt records (ids, traces, metrics) whose tok/s
    average to `tps` (independent noise per row) and whose accepted-draft counts follow the profile `alphas`."""
    rng = np.random.default_rng(zlib.crc32(f"{sweep}/{drafter}/{method}/{knobs}/{prompt_set}/{temperature}".encode()))
    z = rng.standard_normal(prompts)
    z -= z.mean()  # the prompts' tok/s average to exactly `tps`
    per = []
    for i in range(prompts):
        trace = _trace(alphas, 1 + noise / 2 * z[i])
        tokens = sum(c for _, c in trace)
        per.append({"id": f"{prompt_set}/{i}", "token_ids": list(range(tokens)), "pieces": ["x"] * tokens,
                    "steps": trace, "stop_reason": "max_new_tokens",
                    "metrics": {"new_tokens": tokens, "verifier_steps": STEPS, "tokens_per_s": tps * (1 + noise * z[i]),
                                "mean_accept_len": tokens / STEPS}})
    tokens, steps = sum(p["metrics"]["new_tokens"] for p in per), STEPS * prompts
    row = {"sweep": sweep, "drafter": drafter, "set": prompt_set, "temperature": temperature,
           "overrides": f"decode={method}", "method": " ".join([method, *(f"{k}={v}" for k, v in knobs.items())]),
           "prompts": prompts,
           "new_tokens": tokens, "verifier_steps": steps, "mean_accept_len": tokens / steps, "tokens_per_s": tps,
           "wall_s": tokens / tps, "drafter_s": 0.2 * tokens / tps, "verifier_s": 0.6 * tokens / tps,
           "other_s": 0.2 * tokens / tps, "per_prompt": per,
           "config": {"method": method, "strategy": {"_target_": f"strategies.{method}", **knobs},
                      "models": models if models is not None else ({} if method == "ar" else {
                          "drafter": {"_target_": "load_diffusion_drafter", "checkpoint": f"/x/{drafter}"}}),
                      "acceptance": {"_target_": "auto_rule"}, "sampling": {"temperature": temperature}}}
    for j in range(1, len(alphas) + 1):
        row[f"alpha_{j}"] = sum(a >= j for p in per for a, _ in p["steps"]) / steps
    row.update(extra)
    return row


def _chain(sweep, drafter, tps, alphas, **kw):
    return _row(sweep, drafter, "specdiff", {"gamma": 16, "steps": 1}, tps, alphas, **kw)


def _speedups(rows: list[dict]) -> list[dict]:
    """speedup_ar against the reference row of the same set and temperature, as the sweep adds it."""
    refs = {(r["set"], r["temperature"]): r for r in rows if r["sweep"] == "reference"}
    for r in rows:
        ref = refs.get((r["set"], r["temperature"]))
        if ref is not None and r is not ref:
            r["speedup_ar"] = r["tokens_per_s"] / ref["tokens_per_s"]
    return rows


WORLD = {"name": "gpu72", "spec": {"verifier": {"num_layers": 48, "hidden_size": 384},
                                   "drafter": {"num_layers": 3, "hidden_size": 512}},
         "stages": {"verifier": {"params": 85.6e6, "final_val": {"val/loss": 2.31}, "wall_s": 140.0},
                    "drafter": {"params": 13.2e6, "final_val": {"val/loss": 2.9}, "wall_s": 100.0}},
         "cost": {"ratio": 9.5, "ratio_verify_window": 10.1, "verify_ms": {"1": 1.9, "17": 2.02}, "draft_ms": 0.2,
                  "device": "NVIDIA H200"}}


def make_run_dir(root: Path, device: str = "NVIDIA H100 80GB HBM3", streak_tps: float = 1400.0,
                 late: tuple[float, float] = (0.33, 0.1), k8_gain: float = 1.25, best_gamma_steps=(16, 4),
                 cps_gain: float = 1.3, prompts: int = N_PROMPTS, noise: float = 0.1) -> Path:
    """A RUN_DIR as bench/reproduce.py writes it, with numbers chosen by the caller (`prompts`: per row)."""
    kw = {"prompts": prompts, "noise": noise}
    rows = [_row("reference", "pocket", "ar", {}, 1000.0, [], **kw),
            _chain("core", "pocket", 1500.0, [0.8, 0.5, 0.3], **kw),
            _chain("core_streak", "streak", streak_tps, [0.8, 0.6, 0.4], **kw)]
    for arm, tps, tail in (("ce", 1000.0, late[1]), ("streak", streak_tps, late[0]), ("unaligned", 900.0, 0.0)):
        rows.append(_chain("arms", arm, tps, [0.8, 0.6, 0.4, 0.3, 0.3, 0.3, 0.3] + [tail] * 9, **kw))
    for k in (1, 8):
        for t in (0.1, 1.5, 2.0):
            gain = k8_gain if (k == 8 and t == 1.5) else 1.0
            rows.append(_row("self_select", "streak", "self_select", {"gamma": 16, "k": k, "drafter_temperature": t},
                             800.0 * gain, [0.7, 0.4], **kw))
    for k in (1, 8):  # the unaligned (pocket) drafter gains nothing from K
        rows.append(_row("self_select_unaligned", "pocket", "self_select",
                         {"gamma": 16, "k": k, "drafter_temperature": 1.5}, 700.0, [0.6, 0.3], **kw))
    for g in (8, 16):
        for st in (1, 4):
            tps = 1200.0 if (g, st) == best_gamma_steps else 900.0
            rows.append(_row("specdiff_gamma_steps", "pocket", "specdiff", {"gamma": g, "steps": st}, tps, [0.7], **kw))
    for cps, adl, tps in ((False, False, 500.0), (True, True, 500.0 * cps_gain)):
        rows.append(_row("diffuspec", "pocket", "diffuspec", {"gamma": 16, "cps": cps, "adl": adl}, tps, [0.7, 0.5],
                         models={"drafter": {"_target_": "load_diffusion_drafter"}, "proxy": PROXY}, **kw))
    rows = _speedups(rows)
    rows.append({"sweep": "core", "drafter": "pocket", "set": "humaneval", "temperature": 0.0, "method": "broken",
                 "overrides": "decode=bogus", "error": "ConfigError: no such method"})
    (root / "decode").mkdir(parents=True, exist_ok=True)
    (root / "decode" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut by a kill')
    for stage, wall in (("pocket", 300.0), ("trajectories", 20.0), ("arms", 150.0), ("decode", 240.0)):
        (root / stage).mkdir(exist_ok=True)
        info = {"wall_s": wall, "device": device} | (WORLD if stage == "pocket" else {})
        (root / stage / "done.json").write_text(json.dumps(info))
    history = [{"step": s, "expected_streak": v, "loss": 1.1, "val_train/expected_streak": v + 0.1,
                "val_train/loss": 0.9} for s, v in ((0, 1.0), (100, 2.0), (200, 2.4), (300, 2.45), (400, 2.46),
                                                    (500, 2.47), (600, 2.48))]
    history[-1] |= {"alpha_1": 0.8, "alpha_2": 0.6, "marginal_prod_at_pos_1": 0.8, "marginal_prod_at_pos_2": 0.5}
    for arm in ("ce", "streak", "unaligned"):
        (root / "arms" / arm).mkdir(parents=True, exist_ok=True)
        (root / "arms" / arm / "done.json").write_text(json.dumps(
            {"drafter": f"/x/{arm}", "wall_s": 50.0, "val_after": {"expected_streak": 3.0, "loss": 1.1},
             "val_history": history, "training": {"steps": 500, "final train/loss": 0.9}}))
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
    assert v["streak-distillation: throughput over AR-distillation (CE)"] == "reproduced"  # [1.34, 1.47] >= 1.15
    assert v["streak-distillation: late-position (j >= 8) acceptance over CE"] == "reproduced"  # ~3.2x >= 2.1x
    assert v["self-selection: K=8 over K=1, drafter temperature 1.5-2"] == "reproduced"  # [1.18, 1.32] >= 1.10
    assert v["self-selection: best drafter temperature at K=8"] == "reproduced"
    assert v["self-selection: no gain at drafter temperature 0.1 (τ, K=8 vs K=1)"] == "reproduced"
    assert v["SpecDiff: best γ and denoising steps T"] == "reproduced"
    assert v["DiffuSpec: CPS+ADL over fixed draft length"] == "reproduced"
    assert v["DiffuSpec: speed-up over AR (best variant)"] == "refuted"  # 0.65x < 2x


def test_self_selection_claims_per_drafter(tmp_path):
    v = verdicts(make_run_dir(tmp_path), drafter="pocket")
    assert v["self-selection: K=8 over K=1, drafter temperature 1.5-2"] == "refuted"  # [0.95, 1.05] < 1.10
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


def test_a_gain_whose_interval_contains_the_bar_is_inconclusive(tmp_path):
    """1.15x is the bar for streak vs CE; 1.15x measured with a wide prompt-to-prompt spread says neither."""
    claims = evaluate_claims(load_run(make_run_dir(tmp_path, streak_tps=1150.0, noise=0.3)))
    c = next(c for c in claims if c.claim.startswith("streak-distillation: throughput"))
    assert c.verdict == "inconclusive" and "contains 1.15x" in c.reason, c
    low, high = (float(x) for x in c.pocket.split("[")[1].split("]")[0].split(", "))
    assert low < 1.15 < high and c.c == "9.5"  # the world's cost ratio beside the speed claim


def test_cpu_timings_are_not_comparable_but_acceptance_is(tmp_path):
    v = verdicts(make_run_dir(tmp_path, device="cpu"))
    assert v["streak-distillation: throughput over AR-distillation (CE)"] == "not comparable"
    assert v["SpecDiff: best γ and denoising steps T"] == "not comparable"
    assert v["streak-distillation: late-position (j >= 8) acceptance over CE"] == "reproduced"


def test_every_claim_states_its_sample_and_few_prompts_give_no_verdict(tmp_path):
    """The tiny sweep's 1 prompt x 24 tokens proves the code path only: a bootstrap over 1-4 prompts says nothing."""
    judged = evaluate_claims(load_run(make_run_dir(tmp_path / "ok")))
    assert all(c.sample.startswith("32 prompts, ") and "1280 verifier steps" in c.sample for c in judged), judged
    assert {c.verdict for c in judged} >= {"reproduced", "refuted"}
    assert all("95% CI" in c.reason for c in judged if c.verdict in ("reproduced", "refuted", "inconclusive"))
    tiny = evaluate_claims(load_run(make_run_dir(tmp_path / "tiny", prompts=4)),
                           [{"profile": "streak / humaneval", "target": "Qwen2.5-72B", "speedup": 1.5, "tau": 2.0}])
    verdicts = {c.verdict for c in tiny}
    assert not any(v.startswith(("reproduced", "refuted", "inconclusive")) for v in verdicts), verdicts
    assert {"too few prompts", "too few prompts (projected)"} <= verdicts
    few = [c for c in tiny if c.verdict.startswith("too few prompts")]
    assert all("4 prompts in a row < 16" in c.reason and c.sample.startswith("4 prompts") for c in few)
    report = build_report(make_run_dir(tmp_path / "tiny"))["report"]
    assert "| claim | paper | set | sample | c | pocket [95% CI] | verdict | why |" in Path(report).read_text()


def test_report_writes_markdown_figures_and_claims(tmp_path):
    out = build_report(make_run_dir(tmp_path))
    report = Path(out["report"]).read_text()
    assert set(out["figures"]) == {"alpha_per_arm", "tps_vs_k", "gamma_steps_heatmap", "diffuspec_bars"}
    for path in out["figures"].values():
        assert Path(path).stat().st_size > 5000  # a real PNG, not an empty canvas
    assert ("| streak-distillation: throughput over AR-distillation (CE) | ~+30% tok/s | humaneval | 32 prompts, "
            "6267-8926 new tokens, 1280 verifier steps per row (2 rows) | 9.5 | 1.40x [1.34, 1.47]") in report
    assert "| ar gamma=16" not in report and "| ar | pocket | 1.00 | 1000.0 | 1.56x | 10.00x | 1.00x |" in report
    assert "| specdiff gamma=16 steps=1 | streak | 2.80 | 1400.0 | 2.19x | 14.00x | 1.40x [" in report  # arms row
    # what the pocket verifier is, and c, beside the tables
    assert "| gpu72 (this run) | 85.6M, 48 layers × 384 | 2.310 | 13.2M, 3 layers × 512 | **9.50** |" in report
    assert "Projection, not a measurement" in report and "Qwen2.5-32B" in report
    assert "ConfigError: no such method" in report  # failed rows are shown, not hidden
    assert "| streak | 50 | 500 | 2.480 | 2.580 | yes (+1.2% over the last 3 evaluations) | 1.1000 | 0.9000 |" in report
    assert "- **streak**: 0: 1.000 (1.100), 100: 2.000 (2.100), 200: 2.400 (2.500)" in report  # the curve, in numbers
    assert "joint α_j vs Π marginals: j=1 0.800 vs 0.800, j=2 0.600 vs 0.500" in report
    assert json.loads((tmp_path / "claims.json").read_text())
    assert (tmp_path / "decode" / "rows.csv").read_text().count("\n") == 22  # header + 20 rows + the error row


def test_a_renamed_config_key_fails_loudly_instead_of_emptying_a_table(tmp_path):
    """Issue 23: the report reads the rows' resolved fields; a key renamed in the config (here gamma -> window in the
    SpecDiff grid) stops the report with one line naming the row, the key and the keys it has."""
    root = make_run_dir(tmp_path)
    rows = [json.loads(line) for line in (root / "decode" / "rows.jsonl").read_text().splitlines()[:-1]]
    for r in rows:
        if r["sweep"] == "specdiff_gamma_steps":
            r["config"]["strategy"]["window"] = r["config"]["strategy"].pop("gamma")
    (root / "decode" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"specdiff_gamma_steps/pocket/humaneval.*has no knob 'gamma' \(it has "
                                        r"steps, window\); a config key was renamed"):
        build_report(root)
    for r in rows:
        r.pop("config", None)
    (root / "decode" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="no resolved `config` fields"):
        build_report(root)


def test_speedups_at_every_cost_ratio_and_the_projection_beside_the_closest_measurement(tmp_path):
    root = make_run_dir(tmp_path)
    near = [_row("reference", "pocket", "ar", {}, 3000.0, []), _chain("core", "pocket", 2400.0, [0.8, 0.5, 0.3])]
    (root / "ratios" / "gpu").mkdir(parents=True)
    (root / "ratios" / "gpu" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _speedups(near)))
    world = {**WORLD, "name": "gpu", "cost": {**WORLD["cost"], "ratio": 1.3},
             "spec": {"verifier": {"num_layers": 12, "hidden_size": 512}, "drafter": {"num_layers": 3}}}
    (root / "ratios" / "done.json").write_text(json.dumps({"wall_s": 200.0, "worlds": {"gpu": world}}))
    report = Path(build_report(root)["report"]).read_text()
    assert "| gpu (ratio world) | 85.6M, 12 layers × 512 |" in report and "| **1.30** |" in report
    section = report.split("## Speed-up at both cost ratios")[1].split("##")[0]
    assert "| humaneval | gpu | 1.30 | specdiff gamma=16 steps=1 | 2.60 | 2400.0 | 0.80x [" in section
    assert "| humaneval | gpu72 | 9.50 | specdiff gamma=16 steps=1 | 2.60 | 1500.0 | 1.50x [" in section
    compared = json.loads((root / "projection_vs_measured.json").read_text())
    by = {e["profile"]: e for e in compared}
    # the reference costs' 72B projection has c = t_AR / t_draft ≈ 8.4: the closest world is gpu72 (9.5), not gpu
    ce = by["ce / humaneval"]
    assert ce["world"] == "gpu72" and ce["c_projected"] == pytest.approx(6.37 * (72.71e9 * 2 / 15.23e9) / 7.2)
    assert ce["measured"] == pytest.approx(1.0) and ce["difference"] == pytest.approx(1.0 / ce["projected"] - 1)
    assert ce["formula_world"] == pytest.approx(load_run(root).select(sweep="arms", drafter="ce")[0][
        "mean_accept_len"] * 1.9 / (0.2 + 2.02))
    # GPU-busy: the rows' draft + verify seconds per token (here 0.8 of wall in every row, so the tok/s ratio)
    run = load_run(root)
    ce_row, ref = run.select(sweep="arms", drafter="ce")[0], run.select(sweep="reference")[0]
    assert ce["measured_busy"] == pytest.approx(ce_row["tokens_per_s"] / ref["tokens_per_s"])
    assert "| measured, GPU-busy |" in report
    assert "### Projection vs measurement at the closest cost ratio" in report


def test_verdicts_changed_since_an_earlier_run_are_listed_with_both_reasons(tmp_path, capsys):
    from specdiff2.report.__main__ import main

    earlier = tmp_path / "old_claims.json"
    earlier.write_text(json.dumps([
        {"claim": "streak-distillation: throughput over AR-distillation (CE)", "set": "humaneval", "verdict": "refuted",
         "pocket": "1.03x", "sample": "2 prompts", "reason": "1.03x < 1.15x"},
        {"claim": "DiffuSpec: speed-up over AR (best variant)", "set": "humaneval", "verdict": "refuted",
         "pocket": "0.6x", "reason": "same"},
        {"claim": "a claim this run no longer makes", "set": "gsm8k", "verdict": "reproduced"}]))
    main([str(make_run_dir(tmp_path / "run")), "--previous", str(earlier)])
    section = (tmp_path / "run" / "report.md").read_text().split("## Verdicts changed since")[1].split("\n## ")[0]
    assert "| streak-distillation: throughput over AR-distillation (CE) | humaneval | refuted (1.03x; 2 prompts) | " \
           "reproduced (1.40x [1.34, 1.47]" in section and "| 1.03x < 1.15x | 95% CI" in section
    assert "DiffuSpec: speed-up over AR" not in section  # refuted then and now
    assert "| a claim this run no longer makes | gsm8k | reproduced (–) | – (not in this run) |" in section
    with pytest.raises(SystemExit):
        main([str(tmp_path / "run"), "--previous", str(tmp_path / "nope.json")])
    assert "no such file" in capsys.readouterr().err


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


@pytest.mark.slow  # ~2.5 s: a W&B offline run; the report tables and claims are tested without it above
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
    fixed = _row("core", "pocket", "bogus", {}, 900.0, [0.5])
    fixed["overrides"] = "decode=bogus"
    with open(root / "decode" / "rows.jsonl", "a") as f:
        f.write("\n" + json.dumps(fixed) + "\n")
    run = load_run(root)
    assert run.errors == [] and any(r["overrides"] == "decode=bogus" for r in run.rows)


def test_projected_speedup_claim_is_labelled_and_judged_on_the_projection(tmp_path):
    root = make_run_dir(tmp_path)
    with open(root / "decode" / "rows.jsonl", "a") as f:  # the gsm8k profile's own row (its sample)
        f.write("\n" + json.dumps(_chain("arms", "streak", 900.0, [0.5], prompt_set="gsm8k")) + "\n")
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
        f.write("\n" + json.dumps(_row("core", "pocket", "sd_ar", {"gamma": 4}, 900.0, [0.5],
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
