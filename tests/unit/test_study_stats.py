"""Verdicts of a reward-design study: direction, A/A false positives, censoring, seeds needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from qeu_tune.analysis.verdict import (
    NO_DIFFERENCE,
    DesignResult,
    compare,
    format_study_table,
    learning_curve_band,
    performance_profile,
    seeds_needed,
    study_table,
    summarize,
)

BUDGET = 100_000.0


def design(name, returns, steps=None, budget=BUDGET):
    steps = [budget / 2] * len(returns) if steps is None else steps
    return DesignResult(name, returns, steps, budget)


def standardized(rng, n, mean=0.0):
    """n normal draws rescaled to exactly the given mean and SD 1 (ddof=1)."""
    x = rng.normal(size=n)
    return mean + (x - x.mean()) / x.std(ddof=1)


# ------------------------------------------------------------------ verdicts


def test_clear_effect_gives_the_verdict_in_the_right_direction():
    rng = np.random.default_rng(0)
    good, base = design("good", rng.normal(3.0, 1.0, 10)), design("base", rng.normal(0.0, 1.0, 10))
    better = compare(good, base)
    assert better.verdict == "better" and better.p_improvement.lo > 0.5
    assert compare(base, good).verdict == "worse"
    # Steps: fewer is better, so the faster design is better without a direction flag.
    fast = design("fast", [1.0] * 10, steps=rng.normal(30_000, 5_000, 10))
    slow = design("slow", [1.0] * 10, steps=rng.normal(45_000, 5_000, 10))
    assert compare(fast, slow, metric="steps_to_threshold").verdict == "better"
    assert compare(fast, slow, metric="steps_to_threshold", higher_is_better=True).verdict == "worse"


def test_identical_distributions_rarely_claim_a_difference():
    # A/A: 200 studies with 8 seeds per design. The percentile interval is slightly too
    # narrow with few seeds (about 6% false positives at 8 seeds, 9% at 5, 18% at 3).
    rng = np.random.default_rng(11)
    verdicts = [
        compare(design("a", rng.normal(size=8)), design("b", rng.normal(size=8)), reps=500, seed=i).verdict
        for i in range(200)
    ]
    assert np.mean([v == NO_DIFFERENCE for v in verdicts]) >= 0.9


# ------------------------------------------------------------------ censoring


def test_all_censored_design_has_budget_iqm_and_nothing_reached():
    never = design("never", [1.0, 2.0, 3.0], steps=[None, np.nan, None])
    s = summarize(never, reps=200)
    assert s.reached_fraction == 0.0
    assert tuple(s.steps_to_threshold) == (BUDGET, BUDGET, BUDGET)
    assert s.final_return.point == 2.0


def test_partly_censored_design_counts_the_budget_and_the_fraction():
    mixed = design("mixed", [1.0, 2.0, 3.0, 4.0], steps=[10_000, None, 30_000, np.nan])
    assert mixed.reached.tolist() == [True, False, True, False]
    assert mixed.censored_steps().tolist() == [10_000, BUDGET, 30_000, BUDGET]
    s = summarize(mixed, reps=200)
    assert s.reached_fraction == 0.5
    assert s.steps_to_threshold.point == pytest.approx((30_000 + BUDGET) / 2)  # IQM drops 10k and one budget


# ------------------------------------------------------------------ seeds needed


def test_seeds_needed_follows_the_formula_and_shrinks_with_the_effect():
    rng = np.random.default_rng(5)
    a, b = design("a", standardized(rng, 10, 0.2)), design("b", standardized(rng, 10))
    # Pooled SD 1: 2 (1.96 + 0.8416)^2 / 1 + 1.96^2 / 4 = 15.70 + 0.96 -> 17.
    assert seeds_needed(a, b, min_effect=1.0) == 17
    needed = [seeds_needed(a, b, min_effect=e) for e in (0.25, 0.5, 1.0, 2.0, 10.0)]
    assert needed == sorted(needed, reverse=True) and needed[0] > needed[2] > needed[3]
    assert needed[-1] == 2  # never fewer than two seeds
    assert seeds_needed(a, b, min_effect=1.0, power=0.9) > 17


def test_seeds_needed_has_the_promised_power_in_simulation():
    rng = np.random.default_rng(9)
    a, b = design("a", standardized(rng, 10)), design("b", standardized(rng, 10))
    for effect in (1.0, 2.0):
        n = seeds_needed(a, b, min_effect=effect)
        x, y = rng.normal(effect, 1.0, (2000, n)), rng.normal(0.0, 1.0, (2000, n))
        t_power = np.mean(sps.ttest_ind(x, y, axis=1).pvalue < 0.05)
        rule_power = np.mean(
            [compare(design("x", x[i]), design("y", y[i]), reps=400, seed=i).verdict == "better" for i in range(150)]
        )
        assert 0.65 <= t_power <= 0.95, (effect, n, t_power)
        assert 0.65 <= rule_power <= 0.95, (effect, n, rule_power)


def test_seeds_needed_is_undefined_without_spread():
    flat = design("flat", [200.0] * 5, steps=[None] * 5)
    assert seeds_needed(flat, flat, min_effect=1.0) is None
    assert seeds_needed(flat, flat, min_effect=1.0, metric="steps_to_threshold") is None


# ------------------------------------------------------------------ the table


def test_study_table_rows_and_console_format():
    rng = np.random.default_rng(2)
    designs = [
        design("base", rng.normal(0.0, 1.0, 10)),
        design("good", rng.normal(3.0, 1.0, 10)),
        design("same", rng.normal(0.0, 1.0, 10), steps=[None] * 10),
    ]
    rows = {r["design"]: r for r in study_table(designs, baseline="base", min_effect=1.0, reps=300)}
    assert rows["base"]["p_improvement"] is None and rows["base"]["verdict"] is None
    assert rows["good"]["verdict"] == "better" and rows["good"]["seeds_needed"] is None
    assert rows["same"]["verdict"] == NO_DIFFERENCE and rows["same"]["seeds_needed"] >= 2
    assert rows["same"]["reached_fraction"] == 0.0 and rows["same"]["steps_iqm"] == BUDGET
    assert rows["good"]["final_return_lo"] <= rows["good"]["final_return_iqm"] <= rows["good"]["final_return_hi"]
    text = format_study_table(list(rows.values()))
    lines = text.splitlines()
    assert len(lines) == 5 and lines[0].startswith("design") and set(lines[1]) <= {"-", " "}
    assert "(baseline)" in lines[2] and "better" in lines[3] and "no difference detected" in lines[4]


# ------------------------------------------------------------------ profiles and curves


def test_performance_profile_counts_seeds_strictly_above_tau():
    prof = performance_profile({"d": design("d", [1.0, 2.0, 3.0, 4.0])}, [0.0, 2.0, 4.0])["d"]
    assert prof.center.tolist() == [1.0, 0.5, 0.0] and prof.lo is None
    band = performance_profile({"d": design("d", [1.0, 2.0, 3.0, 4.0])}, [0.0, 2.0, 4.0], reps=300)["d"]
    assert np.all(band.lo <= band.center) and np.all(band.center <= band.hi)
    assert band.lo[0] == band.hi[0] == 1.0  # every resample is above 0


def test_learning_curve_band_interpolates_curves_of_different_lengths():
    steps = [[0, 100, 200], [0, 50, 100, 150, 200], [0, 100], [0, 200, 400]]
    values = [[0.0, 1.0, 2.0], [1.0, 1.5, 2.0, 2.5, 3.0], [2.0, 3.0], [3.0, 4.0, 5.0]]
    band = learning_curve_band(steps, values, [50, 150, 300], reps=300)
    # At 50 all four: 0.5, 1.5, 2.5, 3.25 -> IQM of the middle two = 2.0.
    assert band.center[0] == pytest.approx(2.0)
    # At 150 the third curve has ended: 1.5, 2.5, 3.75 -> fewer than 4, the mean.
    assert band.center[1] == pytest.approx((1.5 + 2.5 + 3.75) / 3)
    # At 300 only the last curve: an estimate but no band.
    assert band.center[2] == pytest.approx(4.5) and math.isnan(band.lo[2]) and math.isnan(band.hi[2])
    assert band.lo[0] <= band.center[0] <= band.hi[0]


# ------------------------------------------------------------------ bad input


def pair():
    return design("a", [1.0, 2.0]), design("b", [1.0, 3.0])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: design("one", [1.0]), "at least 2 seeds, got 1"),
        (lambda: design("m", [1.0, 2.0, 3.0], steps=[1.0, 2.0]), "3 final returns but 2"),
        (lambda: design("nan", [1.0, np.nan]), r"final_return must be finite, got \[1.0, nan\]"),
        (lambda: design("over", [1.0, 2.0], steps=[5.0, 2e5]), r"\[200000.0\] outside"),
        (lambda: design("b", [1.0, 2.0], budget=0), "budget_steps must be positive, got 0"),
        (lambda: seeds_needed(*pair(), min_effect=0.0), "min_effect must be > 0.*got 0.0"),
        (lambda: seeds_needed(*pair(), min_effect=-1), "min_effect must be > 0.*got -1"),
        (lambda: seeds_needed(*pair(), min_effect=1.0, power=1.0), "power must be in"),
        (lambda: compare(*pair(), metric="auc"), "metric must be one of.*'auc'"),
        (lambda: study_table([design("a", [1.0, 2.0])], baseline="zz"), "baseline 'zz'"),
        (lambda: learning_curve_band([[0, 1]], [[1, 2], [3, 4]], [0.5]), "1 step arrays but 2"),
    ],
)
def test_bad_input_is_refused_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------ cross-check


def test_iqm_and_probability_of_improvement_match_rliable():
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.5, 1.0, 9), np.round(rng.normal(0.0, 1.0, 7), 1)
    s = summarize(design("x", x), reps=300)
    assert s.final_return.point == pytest.approx(metrics.aggregate_iqm(x[:, None]))
    p = compare(design("x", x), design("y", y), reps=300).p_improvement
    assert p.point == pytest.approx(metrics.probability_of_improvement(x[:, None], y[:, None]))
