"""Convergence statistics on hand-computed curves, cross-seed aggregates, CI coverage."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from qeu_tune.analysis import resampling, stats
from qeu_tune.analysis.stats import (
    CONVERGENCE_KEYS,
    STAT_DIRECTIONS,
    aggregate_across_seeds,
    convergence_stats,
    metric_trend,
    probability_of_improvement,
    rank_configurations,
)

# A curve that crosses 5 at step 300, dips back at 500 and stays from 600 on.
#   step:          100  200  300  400  500  600  700  800
#   y:               0    4    8    2    6    6    6    6
#   MA (window 2):   -    2    6    5    4    6    6    6
#   MA >= 5:         -    F    T    T    F    T    T    T
STEPS = [100, 200, 300, 400, 500, 600, 700, 800]
DIPS = [0.0, 4.0, 8.0, 2.0, 6.0, 6.0, 6.0, 6.0]
KW = dict(threshold=5.0, window=2, sustain=3)


def test_docstring_examples_hold():
    assert doctest.testmod(stats).failed == 0


# ------------------------------------------------------------------ steps to threshold


def test_crossing_that_dips_back_is_reached_only_where_it_stays():
    s = convergence_stats(STEPS, DIPS, **KW)
    # 300 starts a run of only two MA points >= 5 (6, then exactly 5); 600 starts three.
    assert s["steps_to_threshold"] == 600.0
    assert s["reached"] == 1.0


def test_sustain_one_is_the_first_crossing_and_equality_counts():
    assert convergence_stats(STEPS, DIPS, **{**KW, "sustain": 1})["steps_to_threshold"] == 300.0
    # The MA at 400 is exactly 5: with threshold 5 the run 300-400 has two points.
    assert convergence_stats(STEPS, DIPS, **{**KW, "sustain": 2})["steps_to_threshold"] == 300.0
    assert convergence_stats(STEPS, DIPS, **{**KW, "sustain": 2, "threshold": 5.01})["steps_to_threshold"] == 600.0


def test_incomplete_sustain_window_is_not_reached_yet():
    # The curve so far ends at 700: the run from 600 has only two of three MA points.
    s = convergence_stats(STEPS[:-1], DIPS[:-1], **KW, budget=1000)
    assert (s["steps_to_threshold"], s["reached"]) == (1000.0, 0.0)


def test_never_reaching_curve_is_censored_at_the_budget():
    s = convergence_stats(STEPS, DIPS, threshold=7.0, window=2, sustain=3, budget=1000)
    assert (s["steps_to_threshold"], s["reached"]) == (1000.0, 0.0)
    # Without a budget: the last step seen.
    assert convergence_stats(STEPS, DIPS, threshold=7.0, window=2)["steps_to_threshold"] == 800.0
    # A budget overshot by the last iteration censors at the last step, so a censored
    # run never looks faster than one that reached.
    assert convergence_stats(STEPS, DIPS, threshold=7.0, window=2, budget=750)["steps_to_threshold"] == 800.0


def test_no_threshold_leaves_reach_undefined():
    s = convergence_stats(STEPS, DIPS, threshold=None, window=2)
    assert math.isnan(s["steps_to_threshold"]) and math.isnan(s["reached"])
    assert s["auc"] == 5.0  # the other statistics are unaffected


# ------------------------------------------------------------------ the other statistics


def test_all_statistics_of_the_hand_computed_curve():
    s = convergence_stats(STEPS, DIPS, **KW, last_k=5, value_range=(0.0, 10.0))
    assert list(s) == list(CONVERGENCE_KEYS)
    # Trapezoid: 100 * (sum(y) - (y0 + y7) / 2) = 100 * (38 - 3) = 3500 over a span of 700.
    assert s["auc"] == pytest.approx(5.0)
    assert s["auc_norm"] == pytest.approx(0.5)
    # Last 5 points 2, 6, 6, 6, 6: mean 5.2; IQM drops one from each end -> 6.
    assert s["final_mean"] == pytest.approx(5.2)
    assert s["final_iqm"] == pytest.approx(6.0)
    assert (s["best"], s["best_ma"]) == (8.0, 6.0)
    # Differences 4, 4, -6, 4, 0, 0, 0: quartiles 0 and 4.
    assert s["iqr_diff"] == pytest.approx(4.0)
    # MA 2, 6, 5, 4, 6, 6, 6: running max 6, lowest later point 4.
    assert s["max_drawdown"] == pytest.approx(2.0)
    assert (s["n_points"], s["last_step"]) == (8.0, 800.0)


def test_auc_of_constant_and_linear_curves_is_their_mean():
    steps = np.array([0, 1000, 2500, 4000, 8000])  # uneven spacing on purpose
    assert convergence_stats(steps, np.full(5, 3.5), threshold=None)["auc"] == pytest.approx(3.5)
    ramp = 2.0 + 0.001 * steps  # from 2 to 10
    assert convergence_stats(steps, ramp, threshold=None)["auc"] == pytest.approx(6.0)
    # Unweighted, the uneven ramp's point mean would differ: the weighting matters.
    assert ramp.mean() != pytest.approx(6.0)


def test_auc_norm_is_clipped_to_the_unit_interval():
    assert convergence_stats([0, 1], [50.0, 50.0], threshold=None, value_range=(0, 10))["auc_norm"] == 1.0
    assert convergence_stats([0, 1], [-5.0, -5.0], threshold=None, value_range=(0, 10))["auc_norm"] == 0.0


def test_final_iqm_on_known_numbers():
    s = convergence_stats(range(7), [0, 0, 10, 1, 3, 2, 100], threshold=None, last_k=5)
    # Last five sorted: 1, 2, 3, 10, 100 -> IQM of 2, 3, 10.
    assert s["final_iqm"] == pytest.approx(5.0)
    assert s["final_mean"] == pytest.approx(23.2)


def test_monotone_curve_has_no_drawdown():
    s = convergence_stats(range(10), np.arange(10.0), threshold=None, window=3)
    assert s["max_drawdown"] == 0.0
    assert s["iqr_diff"] == 0.0


def test_nan_prefix_and_gaps_are_skipped():
    clean = convergence_stats(STEPS, DIPS, **KW, budget=1000)
    # Early iterations before any episode ended report NaN returns; steps still count.
    prefixed = convergence_stats([10, 50, *STEPS], [np.nan, np.nan, *DIPS], **KW, budget=1000)
    assert prefixed == clean
    # A NaN in the middle drops that point: the windows count valid points only.
    gapped = convergence_stats([*STEPS[:5], 550, *STEPS[5:]], [*DIPS[:5], np.nan, *DIPS[5:]], **KW)
    assert gapped["steps_to_threshold"] == 600.0
    assert gapped["n_points"] == 8.0
    # A trailing NaN point still advances last_step (training went on).
    trailing = convergence_stats([*STEPS, 900], [*DIPS, np.nan], **KW)
    assert trailing["last_step"] == 900.0 and trailing["auc"] == clean["auc"]


@pytest.mark.parametrize(
    "steps, values",
    [([], []), ([0, 10, 20], [np.nan] * 3), ([10], [1.5])],
    ids=["empty", "all-nan", "single-point"],
)
def test_degenerate_curves_do_not_raise(steps, values):
    s = convergence_stats(steps, values, threshold=1.0, budget=100)
    assert list(s) == list(CONVERGENCE_KEYS)
    assert s["reached"] == 0.0 and s["steps_to_threshold"] == 100.0
    assert math.isnan(s["best_ma"]) and math.isnan(s["max_drawdown"]) and math.isnan(s["iqr_diff"])
    if values and np.isfinite(values[0]):
        assert s["auc"] == s["final_mean"] == s["final_iqm"] == s["best"] == 1.5
    else:
        assert math.isnan(s["auc"]) and math.isnan(s["best"])


def test_fewer_points_than_the_window_cannot_reach():
    s = convergence_stats([1, 2, 3], [9.0, 9.0, 9.0], threshold=1.0, window=5, sustain=1)
    assert s["reached"] == 0.0 and math.isnan(s["best_ma"])
    assert s["best"] == 9.0


@pytest.mark.parametrize(
    "steps, values, kwargs, message",
    [
        ([0, 2, 1], [1, 1, 1], {}, "non-decreasing"),
        ([0, 1], [1.0], {}, "equal length"),
        ([0, 1], [1, 1], {"window": 0}, "window"),
        ([0, 1], [1, 1], {"sustain": 1.5}, "sustain"),
        ([0, 1], [1, 1], {"value_range": (1, 1)}, "value_range"),
    ],
)
def test_invalid_input_is_refused(steps, values, kwargs, message):
    with pytest.raises(ValueError, match=message):
        convergence_stats(steps, values, threshold=0.0, **kwargs)


# ------------------------------------------------------------------ trend


def test_trend_is_slope_per_million_steps():
    steps = np.linspace(0, 500_000, 26)
    assert metric_trend(steps, 2.0 + 3e-6 * steps) == pytest.approx(3.0)
    assert metric_trend(steps, 1.0 - 4e-7 * steps) == pytest.approx(-0.4)
    assert metric_trend(steps, 1.0 - 4e-7 * steps, per=1e3) == pytest.approx(-4e-4)


def test_trend_ignores_outliers_and_nans():
    steps = np.linspace(0, 1e6, 30)
    values = 5.0 + 1e-6 * steps
    values[0], values[1] = 1e4, np.nan  # a wild first iteration and a missing one
    assert metric_trend(steps, values) == pytest.approx(1.0)
    assert np.polyfit(steps, np.nan_to_num(values), 1)[0] * 1e6 < 0  # least squares flips sign


def test_trend_is_undefined_without_progress():
    assert math.isnan(metric_trend([], []))
    assert math.isnan(metric_trend([5], [1.0]))
    assert math.isnan(metric_trend([5, 5, 5], [1.0, 2.0, 3.0]))


# ------------------------------------------------------------------ across seeds


def test_aggregate_point_estimates_match_rliable():
    metrics = pytest.importorskip("rliable.metrics")
    x = np.random.default_rng(3).normal(size=9)
    agg = aggregate_across_seeds({"final_mean": x}, reps=500)["final_mean"]
    assert agg["iqm"] == pytest.approx(metrics.aggregate_iqm(x[:, None]))
    assert agg["mean"] == pytest.approx(x.mean())
    assert agg["iqm_lo"] < agg["iqm"] < agg["iqm_hi"]
    assert agg["n"] == 9.0


def test_aggregate_accepts_frames_drops_nans_and_counts_reached():
    frame = pd.DataFrame(
        {
            "trial": ["t0", "t1", "t2", "t3"],
            "reached": [1.0, 0.0, 1.0, 1.0],
            "final_mean": [1.0, 2.0, np.nan, 4.0],
        }
    )
    agg = aggregate_across_seeds(frame, reps=300)
    assert set(agg) == {"reached", "final_mean"}  # the text column is not a statistic
    assert agg["reached"]["mean"] == 0.75  # fraction of seeds that reached
    assert agg["final_mean"]["n"] == 3.0 and agg["final_mean"]["mean"] == pytest.approx(7 / 3)
    # Reproducible for a fixed seed.
    assert aggregate_across_seeds(frame, reps=300) == agg


def test_aggregate_with_too_few_seeds_has_no_interval():
    agg = aggregate_across_seeds({"a": [2.0], "b": [np.nan, np.nan], "c": [1.0, 1.0]}, reps=100)
    assert agg["a"]["iqm"] == 2.0 and math.isnan(agg["a"]["iqm_lo"])
    assert agg["b"]["n"] == 0.0 and math.isnan(agg["b"]["mean"])
    assert (agg["c"]["iqm_lo"], agg["c"]["iqm_hi"]) == (1.0, 1.0)  # identical seeds: no spread


# Percentile-bootstrap 95% CIs for the IQM of n = 10 seeds, over 200 synthetic
# experiments. Observed (with these seeds): 0.92 for the normal, 0.93 for the
# exponential; over 2,000 experiments 0.92 and 0.94. Slight under-coverage with small
# n is expected of the percentile bootstrap; with n = 5 it is about 0.91, n = 3 about 0.77.
@pytest.mark.parametrize(
    "draw, true_iqm",
    [
        # Symmetric: the population IQM is the mean.
        (lambda rng, n: rng.normal(3.0, 2.0, n), 3.0),
        # Skewed: exponential(1) IQM = 2 * integral of x e^-x over [ln 4/3, ln 4]
        #                           = 1 + 1.5 ln(4/3) - ln 2.
        (lambda rng, n: rng.exponential(1.0, n), 1.0 + 1.5 * math.log(4 / 3) - math.log(2)),
    ],
    ids=["normal", "exponential"],
)
def test_bootstrap_ci_covers_the_true_iqm_at_about_the_nominal_rate(draw, true_iqm):
    rng = np.random.default_rng(2021)
    hits = []
    for i in range(200):
        agg = aggregate_across_seeds({"s": draw(rng, 10)}, reps=1000, seed=i)["s"]
        hits.append(agg["iqm_lo"] <= true_iqm <= agg["iqm_hi"])
    assert 0.85 <= np.mean(hits) <= 0.99


# ------------------------------------------------------------------ probability of improvement


def test_probability_of_improvement_extremes_and_ties():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    point, lo, hi = probability_of_improvement(a, a.copy())
    assert point == 0.5 and lo < 0.5 < hi
    assert probability_of_improvement(a + 10, a) == (1.0, 1.0, 1.0)
    assert probability_of_improvement(a, a + 10) == (0.0, 0.0, 0.0)
    # Ties count one half: 1 vs {1, 0} -> (0.5 + 1) / 2.
    assert probability_of_improvement([1.0], [1.0, 0.0])[0] == 0.75


def test_probability_of_improvement_for_lower_is_better():
    fast, slow = [1e4, 2e4, 3e4], [5e4, 6e4, 7e4]
    assert not STAT_DIRECTIONS["steps_to_threshold"]
    assert probability_of_improvement(fast, slow, higher_is_better=False)[0] == 1.0
    assert probability_of_improvement(fast, slow)[0] == 0.0


def test_probability_of_improvement_matches_rliable_and_brackets_the_point():
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.5, 1.0, 8), np.round(rng.normal(0.0, 1.0, 6), 1)
    point, lo, hi = probability_of_improvement(x, y, reps=1000)
    assert point == pytest.approx(metrics.probability_of_improvement(x[:, None], y[:, None]))
    assert 0.0 <= lo < point < hi <= 1.0


def test_probability_of_improvement_without_data():
    assert all(math.isnan(v) for v in probability_of_improvement([], [1.0, 2.0]))
    point, lo, hi = probability_of_improvement([2.0], [1.0, 3.0])
    assert point == 0.5 and math.isnan(lo) and math.isnan(hi)


# ------------------------------------------------------------------ ranking


def _sweep_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "config": ["base"] * 3 + ["good"] * 3 + ["fast"] * 3,
            "seed": [0, 1, 2] * 3,
            "final_mean": [1.0, 2.0, 3.0, 7.0, 8.0, 9.0, 4.0, 5.0, 6.0],
            "steps_to_threshold": [9e4, 8e4, 1e5, 5e4, 6e4, 7e4, 1e4, 2e4, 3e4],
        }
    )


def test_rank_configurations_orders_by_direction_with_cis():
    ranked = rank_configurations(_sweep_table(), reps=300, baseline="base")
    assert list(ranked.index) == ["good", "fast", "base"]
    assert list(ranked["rank"]) == [1, 2, 3]
    assert "seed/iqm" not in ranked.columns and ranked["n_seeds"].eq(3).all()
    assert ranked.loc["good", "final_mean/iqm"] == 8.0
    assert ranked.loc["good", "final_mean/iqm_lo"] <= 8.0 <= ranked.loc["good", "final_mean/iqm_hi"]
    assert ranked.loc["good", "poi"] == 1.0 and ranked.loc["base", "poi"] == 0.5

    by_speed = rank_configurations(_sweep_table(), by="steps_to_threshold", reps=300, baseline="base")
    assert list(by_speed.index) == ["fast", "good", "base"]  # fewer steps first
    assert by_speed.loc["fast", "poi"] == 1.0


def test_rank_configurations_refuses_unknowns():
    table = _sweep_table()
    with pytest.raises(ValueError, match="agg"):
        rank_configurations(table, agg="median")
    with pytest.raises(ValueError, match="baseline"):
        rank_configurations(table, baseline="nope", reps=10)
    with pytest.raises(ValueError, match="direction"):
        rank_configurations(table.assign(custom=1.0), by="custom")
    ranked = rank_configurations(table.assign(custom=1.0), by="custom", higher_is_better=True, reps=10)
    assert list(ranked.index) == ["base", "fast", "good"]  # ties keep name order


def _alone(x, reps):
    """``stat/{iqm,iqm_lo,iqm_hi,mean,mean_lo,mean_hi}`` of one sample, from one scipy bootstrap."""

    def iqm_and_mean(sample, axis):
        return np.stack([sps.trim_mean(sample, 0.25, axis=axis), np.mean(sample, axis=axis)])

    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    point = iqm_and_mean(x, -1) if x.size else [np.nan, np.nan]
    if x.size < 2:
        return [point[0], np.nan, np.nan, point[1], np.nan, np.nan]
    ci = sps.bootstrap(
        (x,), iqm_and_mean, n_resamples=reps, batch=500, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    return [point[0], ci.low[0], ci.high[0], point[1], ci.low[1], ci.high[1]]


def _poi_alone(x, y, reps):
    def prob_greater(a, b, axis):
        diff = a[..., :, None] - b[..., None, :]
        return np.mean((diff > 0) + 0.5 * (diff == 0), axis=(-2, -1))

    point = float(prob_greater(np.asarray(x), np.asarray(y), -1))
    if len(x) < 2:
        return [point, np.nan, np.nan]
    ci = sps.bootstrap(
        (x, y), prob_greater, n_resamples=reps, batch=500, method="percentile", rng=np.random.default_rng(0)
    )
    return [point, ci.confidence_interval.low, ci.confidence_interval.high]


def test_ranking_many_configurations_gives_each_the_values_it_has_alone(monkeypatch):
    # rank_configurations bootstraps the samples of one size together (analysis.resampling):
    # every row must equal one bootstrap per sample to the last bit, also from 8 seeds on (where
    # NumPy sums a row of a 3-D array in another order) and across chunks.
    monkeypatch.setattr(resampling, "MAX_ELEMENTS", 12_000)  # chunks of 2-3 samples
    rng = np.random.default_rng(11)
    rows = [
        {"config": f"c{c}", "seed": s, "final_mean": rng.normal(c, 1.0), "auc": float(np.round(rng.normal()))}
        for c, n in enumerate([1, 2, 3, 3, 4, 8, 9, 9, 12])
        for s in range(n)
    ]
    table = pd.DataFrame(rows)
    table.loc[4, "auc"] = np.nan  # c2 has 2 values of auc, 3 of final_mean
    ranked = rank_configurations(table, stats=["auc"], baseline="c4", reps=700)
    baseline = table.loc[table["config"] == "c4", "final_mean"].to_numpy()
    for name, group in table.groupby("config"):
        for stat in ("final_mean", "auc"):
            got = ranked.loc[name, [f"{stat}/{key}" for key in stats.AGGREGATE_KEYS[1:]]].to_numpy(dtype=float)
            assert np.array_equal(got, _alone(group[stat], 700), equal_nan=True), (name, stat)
        got = ranked.loc[name, ["poi", "poi_lo", "poi_hi"]].to_numpy(dtype=float)
        assert np.array_equal(got, _poi_alone(group["final_mean"].to_numpy(), baseline, 700), equal_nan=True), name


def test_iqm_is_scipys_trim_mean_bit_for_bit():
    # The live statistics compute the IQM without scipy's wrapper: same numbers, every shape.
    rng = np.random.default_rng(3)
    for n in range(1, 13):
        x = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)
        assert stats.iqm(x) == sps.trim_mean(x, 0.25)
        m = rng.normal(size=(3, n, 2))
        for axis in (0, 1, 2, -1):
            assert np.array_equal(stats.iqm(m, axis=axis), sps.trim_mean(m, 0.25, axis=axis))
        assert stats.iqm(m) == sps.trim_mean(m, 0.25, axis=None)
    assert math.isnan(stats.iqm([]))
    assert np.isnan(stats.iqm(np.empty((2, 0)), axis=1)).all() and stats.iqm(np.empty((2, 0)), axis=1).shape == (2,)
