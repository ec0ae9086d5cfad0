"""algo=synthetic: the learning-curve model, its ground truth, its results and checkpoints (no Ray)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import names
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine import synthetic


@pytest.fixture(scope="module")
def base():
    config = to_plain(compose(["algo=synthetic", "stop.env_steps=20000"]))
    config["seed"] = 0
    return config


def with_params(base, seed=0, **params):
    config = copy.deepcopy(base)
    config["algo"]["params"].update(params)
    config["seed"] = seed
    return config


def with_design(base, mode="additive", **weights):
    config = copy.deepcopy(base)
    config["reward"] = {
        "name": "d",
        "mode": mode,
        "gamma": None,
        "metrics": {m: {"kind": "unit_space", "weight": w} for m, w in weights.items()},
    }
    return config


def run(config, iterations=None):
    learner = synthetic.SyntheticAlgorithm(config)
    count = iterations or len(synthetic.reported_steps(config))
    return learner, [learner.train() for _ in range(count)]


def env_returns(results):
    return [r["env_runners"]["qeu"]["return_env"] for r in results]


def test_defaults_come_from_the_cartpole_env_and_the_budget(base):
    model = synthetic.model(base)
    assert (model.floor, model.ceiling, model.horizon, model.budget) == (0.0, 500.0, 20000.0, 20000)
    assert synthetic.reported_steps(base).tolist() == [1000.0 * i for i in range(1, 21)]
    # CartPole's threshold (475) is reachable at lr_opt, not at a poor lr.
    assert synthetic.true_final_return(with_params(base, lr=1e-3)) > base["env"]["return_threshold"]
    assert synthetic.true_final_return(with_params(base, lr=3e-5)) < base["env"]["return_threshold"]


def test_the_expected_curve_rises_and_the_reported_one_averages_to_it(base):
    steps = synthetic.reported_steps(base)
    truth = synthetic.true_curve(base, steps)
    assert np.all(np.diff(truth) > 0) and truth[0] > synthetic.model(base).floor
    noiseless = env_returns(run(with_params(base, noise_sd=0.0))[1])
    assert np.all(np.diff(noiseless) > 0)
    assert noiseless == pytest.approx(synthetic.true_curve(base, steps, seed=0).tolist(), rel=1e-12)
    # Over many seeds the reported curve averages to the expectation over seeds and noise.
    curves = np.array([env_returns(run(with_params(base, seed=s))[1]) for s in range(400)])
    mean, se = curves.mean(axis=0), curves.std(axis=0, ddof=1) / math.sqrt(len(curves))
    assert np.all(np.abs(mean - truth) < 4 * se + 1e-9)
    assert np.all(np.diff(mean[::4]) > 0)


def test_lr_opt_is_the_known_optimum_of_the_true_final_return(base):
    lrs = np.logspace(-5, -1, 41)  # includes 1e-3 exactly
    finals = [synthetic.true_final_return(with_params(base, lr=float(lr))) for lr in lrs]
    assert lrs[int(np.argmax(finals))] == pytest.approx(1e-3)
    best = synthetic.true_final_return(with_params(base, lr=1e-3))
    assert best == pytest.approx(max(finals))
    # One lr_width (decades) away, the rate is exp(-1/2) of the peak.
    ratio = synthetic.true_rate(with_params(base, lr=10**-2.5)) / synthetic.true_rate(with_params(base, lr=1e-3))
    assert ratio == pytest.approx(math.exp(-0.5))


def test_a_design_weight_shifts_the_true_rate_by_effect_times_weight(base):
    plain = synthetic.true_rate(base)
    designed = with_design(base, balance=0.3, route=0.5)
    designed["algo"]["params"].update(design_effect=2.0, metric_effects={"route": -1.0})
    assert synthetic.true_rate(designed) - plain == pytest.approx(2.0 * 0.3 - 1.0 * 0.5)
    assert synthetic.design_shift(designed) == pytest.approx(0.1)
    # The same shift whatever lr (additive in the rate).
    other = with_params(designed, lr=3e-3)
    assert synthetic.true_rate(other) - synthetic.true_rate(with_params(base, lr=3e-3)) == pytest.approx(0.1)
    # mode none: the metrics are not built, so they have no effect; a big penalty stops learning.
    assert synthetic.true_rate(with_design(base, mode="none", balance=0.3)) == plain
    stopped = with_design(base, balance=1.0)
    stopped["algo"]["params"]["design_effect"] = -100.0
    assert synthetic.true_rate(stopped) == 0.0
    assert synthetic.true_final_return(stopped) == synthetic.model(stopped).floor
    # The true effect of a design on the final return is computable.
    assert synthetic.true_final_return(with_design(base, balance=1.0)) > synthetic.true_final_return(base)


def test_same_seed_same_curve_different_seeds_differ(base):
    first = env_returns(run(base)[1])
    assert env_returns(run(copy.deepcopy(base))[1]) == first
    other = env_returns(run(with_params(base, seed=1))[1])
    assert other != first
    rates = {synthetic.seed_rate(base, seed=s) for s in range(5)}
    assert len(rates) == 5  # seed-to-seed spread in the rate, not only in the noise
    assert synthetic.seed_rate(with_params(base, seed_sd=0.0), seed=3) == synthetic.true_rate(base)


def test_evaluating_does_not_change_the_training_curve(base):
    evaluated = copy.deepcopy(base)
    evaluated["evaluation"] = {"interval": 3, "episodes": 2}
    learner, results = run(evaluated)
    assert env_returns(results) == env_returns(run(base)[1])
    assert [r["training_iteration"] for r in results if "evaluation" in r] == [3, 6, 9, 12, 15, 18]
    assert results[2]["evaluation"]["env_runners"]["num_episodes"] == 2.0


def test_checkpoint_round_trip_continues_exactly(base, tmp_path):
    config = copy.deepcopy(base)
    config["evaluation"] = {"interval": 2, "episodes": 1}
    learner, _ = run(config, iterations=7)
    learner.evaluate()  # the extra evaluations train_trial adds advance the eval stream too
    learner.save_to_path(str(tmp_path / "ckpt"))
    expected = [learner.train() for _ in range(6)]
    restored = synthetic.SyntheticAlgorithm(config)
    restored.restore_from_path(str(tmp_path / "ckpt"))
    assert (restored.iteration, restored.env_steps) == (7, 7000)
    again = [restored.train() for _ in range(6)]
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rs]  # noqa: E731
    assert strip(again) == strip(expected)
    assert again[-1]["training_iteration"] == 13 and again[-1]["num_env_steps_sampled_lifetime"] == 13000


def test_pbt_style_restore_with_a_new_lr_continues_from_the_progress(base, tmp_path):
    slow = with_params(base, lr=1e-4, noise_sd=0.0)
    learner, results = run(slow, iterations=10)
    learner.save_to_path(str(tmp_path))
    fast = synthetic.SyntheticAlgorithm(with_params(base, lr=1e-3, noise_sd=0.0))
    fast.restore_from_path(str(tmp_path))
    after = fast.train()["env_runners"]["qeu"]["return_env"]
    before = env_returns(results)[-1]
    gap = 500.0 - before
    assert after == pytest.approx(500.0 - gap * math.exp(-fast.rate * 1000 / 20000))


def test_results_map_to_the_documented_names_through_rllibs_path(base):
    from qeu_tune.engine.episode_metrics import flatten_evaluation, flatten_result

    config = with_design(base, balance=0.05)
    config["evaluation"] = {"interval": 5, "episodes": 3}
    _, results = run(config, iterations=5)
    flat = flatten_result(results[-1], previous_env_steps=4000)
    assert flat[names.ENV_STEPS] == 5000 and flat[names.ITERATION] == 5
    assert flat[names.EPISODE_LEN_MEAN] >= 1 and flat[names.EPISODES] > 0 and flat[names.ENV_STEPS_PER_S] > 0
    assert flat[names.RETURN_MEAN] == pytest.approx(flat[names.RETURN_ENV_MEAN] + flat["reward/balance/sum"])
    assert flat["reward/balance/sum"] < 0 and 0 < flat["rt/balance/mean"] < 1
    assert flat["return_shaped"] == pytest.approx(flat[names.RETURN_MEAN])
    assert not any(k.startswith((names.LEARNER_PREFIX, names.CONV_PREFIX)) for k in flat)
    evaluation = flatten_evaluation(results[-1]["evaluation"], 5)
    assert evaluation[names.EVAL_EPISODES] == 3 and evaluation[names.EVAL_ITERATION] == 5
    assert math.isfinite(evaluation[names.EVAL_RETURN_ENV_MEAN])
    # Without a design the shaped return is the return.
    plain = flatten_result(run(base, iterations=1)[1][0])
    assert plain[names.RETURN_MEAN] == plain[names.RETURN_ENV_MEAN]


def test_potential_designs_add_the_telescoped_shaping(base):
    config = with_design(base, mode="potential", balance=0.5)
    learner, (result,) = run(with_params(config, noise_sd=0.0), iterations=1)
    stats = result["env_runners"]["qeu"]
    m, length = stats["rt/balance/mean"], stats["episode/len"]
    assert stats["reward/balance/sum"] == pytest.approx(0.5 * m * (1 + 0.01 * (length - 1)))


def test_the_range_falls_back_to_the_threshold_then_to_0_1(base):
    config = copy.deepcopy(base)
    config["env"].update(return_range=None, return_threshold=-110.0)
    model = synthetic.model(config)
    threshold_at = (-110.0 - model.floor) / (model.ceiling - model.floor)
    assert threshold_at == pytest.approx(0.95)
    config["env"]["return_threshold"] = None
    assert (synthetic.model(config).floor, synthetic.model(config).ceiling) == (0.0, 1.0)
    assert synthetic.model(with_params(base, floor=10, ceiling=20)).ceiling == 20.0


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"foo": 1}, "unknown key(s) foo"),
        ({"lr_width": 0}, "lr_width must be a number > 0"),
        ({"steps_per_iteration": 2.5}, "steps_per_iteration must be an integer >= 1"),
        ({"noise_sd": -1}, "noise_sd must be a number >= 0"),
        ({"gamma": 1.5}, "gamma must be a number > 0 and <= 1"),
        ({"metric_effects": {"a": "x"}}, "metric_effects"),
        ({"floor": 5, "ceiling": 5}, "must be greater than"),
    ],
)
def test_bad_params_are_config_errors(base, params, fragment):
    with pytest.raises(ConfigError) as info:
        synthetic.model(with_params(base, **params))
    assert fragment in str(info.value)


def test_the_driver_checks_synthetic_without_rllib(base):
    from qeu_tune.engine.plan import validate_trial_config
    from qeu_tune.engine.preflight import checked_algo_config

    checked = checked_algo_config(base)
    assert isinstance(checked, synthetic.CurveModel) and checked.gamma == 0.99
    validate_trial_config(base)  # builds the env with that gamma
    with pytest.raises(ConfigError, match="algo.params.lr=-1"):
        checked_algo_config(with_params(base, lr=-1))


def test_step_time_imitates_slow_trials(base):
    _, (result,) = run(with_params(base, step_time_s=0.02), iterations=1)
    assert result["time_this_iter_s"] >= 0.02
    _, fast = run(base, iterations=20)
    assert sum(r["time_this_iter_s"] for r in fast) < 0.05
