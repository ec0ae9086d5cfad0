"""A trial's statistics from its reported results: restores, settings, thinning."""

from __future__ import annotations

import numpy as np

from qeu_tune.analysis.convergence import (
    MAX_TREND_POINTS,
    ConvergenceSettings,
    curves_from_history,
    latest_attempt,
    settings_from_config,
    settings_from_params,
    trial_statistics,
)
from qeu_tune.core import names
from qeu_tune.tracking.tracker import flatten_params


def test_a_restore_discards_the_failed_attempt_from_the_checkpoint_on():
    # Reported in this order: 1k..4k, crash, restore from the 2k checkpoint, 2.5k..3.5k.
    logged = [(1000, "a"), (2000, "b"), (3000, "c"), (4000, "d"), (2500, "e"), (3500, "f")]
    assert latest_attempt(logged) == [(1000, "a"), (2000, "b"), (2500, "e"), (3500, "f")]
    assert latest_attempt([(1000, "a"), (1000, "b")]) == [(1000, "b")]  # same step replayed


def test_curves_from_history_use_the_latest_attempt():
    def point(step, value):
        return {names.ENV_STEPS: step, names.RETURN_ENV_MEAN: value, "rt/route/mean": value / 10}

    history = [point(1000, 1.0), point(2000, 2.0), point(3000, 30.0), point(2500, 5.0), point(3500, 6.0)]
    (steps, values), rt = curves_from_history(history)
    assert steps == [1000, 2000, 2500, 3500] and values == [1.0, 2.0, 5.0, 6.0]
    assert rt["rt/route/mean"][1] == [0.1, 0.2, 0.5, 0.6]


def test_an_evaluation_curve_has_only_the_evaluated_points():
    history = [
        {names.ENV_STEPS: 1000.0, names.EVAL_RETURN_ENV_MEAN: -5.0},
        {names.ENV_STEPS: 2000.0},
        {names.ENV_STEPS: 3000.0, names.EVAL_RETURN_ENV_MEAN: 7.0},
    ]
    (steps, values), _ = curves_from_history(history, names.EVAL_RETURN_ENV_MEAN)
    assert steps == [1000.0, 3000.0] and values == [-5.0, 7.0]
    settings = ConvergenceSettings(
        threshold=5.0, budget=3000.0, last_k=1, window=1, sustain=1, metric=names.EVAL_RETURN_ENV_MEAN
    )
    summary = trial_statistics((steps, values), settings)
    assert summary["final_mean"] == 7.0 and summary["steps_to_threshold"] == 3000.0


def test_settings_agree_from_config_and_from_mlflow_params():
    config = {
        "env": {"return_threshold": 475.0, "return_range": [0.0, 500.0]},
        "convergence": {"window": 4, "sustain": 2, "last_k": 3, "metric": "eval/return_env/mean"},
        "stop": {"env_steps": 20000},
    }
    expected = ConvergenceSettings(
        threshold=475.0,
        budget=20000.0,
        window=4,
        sustain=2,
        last_k=3,
        value_range=(0.0, 500.0),
        metric="eval/return_env/mean",
    )
    assert settings_from_config(config) == expected
    assert settings_from_params(flatten_params(config)) == expected
    bare = settings_from_params({})
    assert (bare.threshold, bare.window, bare.sustain, bare.last_k) == (None, 5, 3, 5)


def test_rt_trend_of_a_long_curve_is_thinned_and_still_exact_on_a_line():
    steps = np.arange(1, 5001) * 1000.0
    slope_per_million = 0.25
    rt = {"rt/route/mean": (list(steps), list(steps / 1e6 * slope_per_million))}
    out = trial_statistics((list(steps), list(np.ones(steps.size))), ConvergenceSettings(None, None), rt)
    assert abs(out["rt_trend/route"] - slope_per_million) < 1e-9
    assert MAX_TREND_POINTS < steps.size
