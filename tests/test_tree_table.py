"""Issue 24's τ/tok-s-vs-N table: a real `tree` sweep (chain, argmax chain, trees) on the tiny random world, then the
table and goal lines read from its rows (draft nodes recorded per row, intervals over prompts)."""

import pytest

from specdiff2.bench.decode_methods import Sweep
from specdiff2.report.tree_table import goals, table_rows


@pytest.mark.slow  # ~15 s: three engines x two temperatures on CPU
def test_tree_sweep_rows_make_the_n_table(tiny_world, tmp_path, one_thread):
    w = tiny_world
    base = [f"verifier.path={w.verifier}", "verifier.pocket=false", f"drafter.path={w.drafter}", "drafter.pocket=false",
            f"ar_drafter.path={w.ar_drafter}", "ar_drafter.pocket=false", "max_seq_len=128", "device=cpu",
            "paths.data_dir=" + str(tmp_path / "none")]
    prompts = [("p0", [5, 17, 42, 99]), ("p1", [7, 3, 8]), ("p2", [11, 12, 13, 14, 15])]
    spec = {"prompts": 3, "max_new_tokens": 12, "warmup": "one", "seed": 0, "sets": {}, "temperatures": [0.0, 1.0],
            "reference": "decode=ar",
            "grids": [{"name": "chain", "methods": ["decode=specdiff decode.strategy.gamma=6"]},
                      {"name": "chain_argmax", "temperatures": [1.0],
                       "methods": ["decode=specdiff decode.strategy.gamma=6 decode.strategy.proposal=argmax"]},
                      {"name": "tree", "base": "decode=tree decode.strategy.gamma=6",
                       "axes": {"decode.strategy.nodes": [4, 12]}}]}
    sweep = Sweep(spec, base, {}, tmp_path / "rows.jsonl", log=lambda *_: None)
    sweep.spec["sets"], sweep.prompts = {"tiny": []}, {"tiny": prompts}  # token ids, not a prompt set on disk
    rows = sweep.run()
    assert not [r for r in rows if "error" in r]
    table = table_rows(rows)
    by = {(r["sweep"], r["T"], r["N"]) for r in table}
    assert {("chain", 0.0, 6), ("tree", 0.0, 4), ("tree", 0.0, 12), ("chain_argmax", 1.0, 6)} <= by
    chain = next(r for r in table if r["sweep"] == "chain" and r["T"] == 0.0)
    assert chain["tau_x_chain"].value == pytest.approx(1.0) and chain["tau"].low <= chain["tau"].value
    lines = goals(table)
    assert any("best tree N=" in line for line in lines) and any("argmax proposals" in line for line in lines)
    costs = {1: 1.0, 5: 1.05, 7: 1.1, 13: 1.3}  # verify ms by verified tokens (N + 1), as real_shapes measures
    table = table_rows(rows, costs, draft_ms=0.5)
    chain = next(r for r in table if r["sweep"] == "chain" and r["T"] == 0.0)
    assert chain["proj_x_chain"] == pytest.approx(1.0)
    assert chain["proj_x_ar"] == pytest.approx(chain["tau"].value * 1.0 / (0.5 + 1.1))
    assert all("proj_x_ar" in r for r in table if r["N"] + 1 in costs)
