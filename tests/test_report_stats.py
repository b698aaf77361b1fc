"""report/stats.py and report/samples.py: bootstrap intervals over prompts (fixed seed, known cases), the paired
ratio, the verdict rule at its edges, the plateau rule, per-prompt columns of sweep rows."""

import math

import numpy as np
import pytest

from specdiff2.errors import DataError
from specdiff2.report import samples, stats
from specdiff2.report.stats import Interval, band_verdict, bootstrap, gain_verdict, plateau, threshold_verdict


def test_constant_prompts_give_a_point_interval_and_the_seed_fixes_the_draws():
    iv = bootstrap(stats.mean, np.full(20, 3.0))
    assert (iv.value, iv.low, iv.high, iv.n) == (3.0, 3.0, 3.0, 20)
    x = np.random.default_rng(1).normal(10, 2, 32)
    assert bootstrap(stats.mean, x) == bootstrap(stats.mean, x)  # seed 0 both times
    assert bootstrap(stats.mean, x, seed=1) != bootstrap(stats.mean, x)


def test_interval_of_a_mean_matches_the_normal_approximation():
    x = np.array([0.0, 1.0] * 32)  # mean 0.5, standard error 0.5 / sqrt(64)
    iv = bootstrap(stats.mean, x, n_boot=4000)
    half = 1.96 * 0.5 / math.sqrt(64)
    assert iv.value == 0.5
    assert iv.low == pytest.approx(0.5 - half, abs=0.02) and iv.high == pytest.approx(0.5 + half, abs=0.02)


def test_tau_pools_tokens_over_steps_not_the_mean_of_per_prompt_tau():
    tokens, steps = np.array([[10.0, 90.0]]), np.array([[10.0, 30.0]])  # per-prompt τ 1 and 3
    assert stats.tau(tokens, steps)[0] == 2.5  # 100 / 40, as DecodeStats / metrics.aggregate compute it


def test_a_paired_ratio_sees_through_the_prompt_to_prompt_spread():
    """b varies 10x between prompts; a = 1.2 b on every prompt: the paired ratio is exactly 1.2, while the two rows'
    own intervals are wide."""
    b = np.random.default_rng(0).uniform(100, 1000, 32)
    a = 1.2 * b
    paired = bootstrap(stats.ratio_of(stats.mean, 1), a, b)
    assert paired.low == pytest.approx(1.2) and paired.high == pytest.approx(1.2)
    alone = bootstrap(stats.mean, b)
    assert alone.high / alone.low > 1.2
    unpaired = bootstrap(stats.mean, a).low / bootstrap(stats.mean, b, seed=1).high
    assert unpaired < 1.2  # resampling the rows independently would blur the comparison


def test_the_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = sum(iv.low <= 5.0 <= iv.high
               for iv in (bootstrap(stats.mean, rng.normal(5.0, 1.0, 40), n_boot=500) for _ in range(200)))
    assert 0.88 <= hits / 200 <= 0.99


def test_gain_rule_edges():
    # paper 1.30x: the bar is 1.15x
    assert gain_verdict(Interval(1.3, 1.15, 1.4, 32), 1.30)[0] == "reproduced"  # the interval starts at the bar
    assert gain_verdict(Interval(1.2, 1.149, 1.3, 32), 1.30)[0] == "inconclusive"  # contains it
    assert gain_verdict(Interval(1.1, 1.0, 1.149, 32), 1.30)[0] == "refuted"  # wholly short of it
    verdict, why = gain_verdict(Interval(4.0, 3.0, 5.0, 32), 4.22)
    assert verdict == "reproduced" and "2.61x" in why and "[3.00, 5.00]" in why
    assert gain_verdict(Interval(math.nan, math.nan, math.nan, 32), 1.3)[0] == "inconclusive"
    # a claimed drop (R < 1): the interval must reach down to the bar
    assert threshold_verdict(Interval(0.5, 0.4, 0.6, 32), 0.8, "x")[0] == "reproduced"
    assert threshold_verdict(Interval(0.9, 0.85, 0.95, 32), 0.8, "x")[0] == "refuted"
    assert threshold_verdict(Interval(1.05, 1.0, 1.1, 32), 1.0, "x")[0] == "reproduced"


def test_band_rule():
    assert band_verdict(Interval(1.0, 0.97, 1.03, 32), 0.95, 1.05)[0] == "reproduced"
    assert band_verdict(Interval(1.1, 1.06, 1.15, 32), 0.95, 1.05)[0] == "refuted"
    assert band_verdict(Interval(1.04, 1.0, 1.08, 32), 0.95, 1.05)[0] == "inconclusive"


def test_best_inside_over_outside():
    values = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])  # (prompts, cells)
    inside = np.array([False, True, False])
    assert stats.best_in_over_out(values[None], inside)[0] == 0.5  # 2 over the best outside, 4
    iv = bootstrap(lambda v: stats.best_in_over_out(v, ~inside), values)
    assert iv.value == 2.0 and iv.low == iv.high == 2.0


def test_plateau():
    assert plateau([1.0, 2.0, 2.5, 2.51, 2.52, 2.53]) == (True, "+1.2% over the last 3 evaluations")  # 2.53 vs 2.5
    assert plateau([1.0, 2.0, 2.5, 2.6, 2.8])[0] is False
    assert plateau([1.0, 2.0]) == (False, "2 evaluations, need > 3")


def _row(prompt_ids, traces, tps, gamma=16, set_name="s"):
    per = [{"id": pid, "steps": trace, "metrics": {"new_tokens": sum(c for _, c in trace),
                                                    "verifier_steps": len(trace), "tokens_per_s": t}}
           for pid, trace, t in zip(prompt_ids, traces, tps)]
    return {"sweep": "x", "drafter": "d", "set": set_name, "temperature": 0.0, "method": "m", "per_prompt": per,
            **{f"alpha_{j}": 0.5 for j in range(1, gamma + 1)}}


def test_columns_count_late_acceptance_by_brute_force():
    trace = [[0, 1], [9, 10], [16, 17], [8, 9]]
    row = _row(["a"], [trace], [100.0])
    col = samples.columns(row)["a"]
    # positions j = 8..16 (9 of them): steps accepting >= j: j=8: 3 steps, j=9: 2, j=10..16: 1 each
    brute = sum(sum(acc >= j for acc, _ in trace) for j in range(8, 17)) / 9
    assert col["late"] == pytest.approx(brute) and col["tokens"] == 37 and col["steps"] == 4
    assert samples.interval(row, "late").value == pytest.approx(brute / 4)


def test_ratio_is_paired_by_prompt_id_whatever_the_order():
    a = _row(["p1", "p2", "p3"], [[[1, 2]]] * 3, [100.0, 200.0, 300.0])
    b = _row(["p3", "p1", "p2"], [[[1, 2]]] * 3, [150.0, 50.0, 100.0])  # half of a's, prompt by prompt
    iv = samples.ratio(a, b, "tps")
    assert iv.value == pytest.approx(2.0) and iv.low == pytest.approx(2.0) and iv.high == pytest.approx(2.0)
    with pytest.raises(DataError, match="share no prompt id"):
        samples.ratio(a, _row(["q"], [[[1, 2]]], [1.0]), "tps")
    with pytest.raises(DataError, match="no per_prompt records"):
        samples.interval({"sweep": "x", "per_prompt": []}, "tps")
