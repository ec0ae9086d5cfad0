"""The search grammar: every construct, conditions, seeds, and the Tune objects it builds."""

from __future__ import annotations

import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

from qeu_tune.config.trial import seeds, trial_seed
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine.search_space import (
    Dimension,
    build_tune_search,
    grid_points,
    parse_space,
)


def one(expression):
    (dim,) = parse_space({"k": expression})
    return dim


# ------------------------------------------------------------------ each construct


def test_choice_of_strings_numbers_and_lists():
    assert one("choice(ppo, dqn)") == Dimension("k", "choice", ("ppo", "dqn"))
    assert one("choice(1, 2.5)").values == (1, 2.5)
    assert one("choice([32], [64, 64])").values == ([32], [64, 64])


def test_range_excludes_stop_like_python():
    assert one("range(1, 5)").values == (1, 2, 3, 4)
    assert one("range(0, 10, 3)").values == (0, 3, 6, 9)
    assert one("range(0.1, 0.4, 0.1)").values == (0.1, 0.2, 0.3)


def test_interval_float_int_and_log():
    assert one("interval(0.1, 0.3)") == Dimension("k", "float", low=0.1, high=0.3)
    assert one("int(interval(1, 8))") == Dimension("k", "int", low=1, high=8)
    dim = one("tag(log, interval(1e-4, 1e-2))")
    assert (dim.kind, dim.log, dim.low, dim.high) == ("float", True, 1e-4, 1e-2)
    assert one("tag(log, int(interval(16, 256)))").kind == "int"


def test_plain_values_are_constants():
    assert one("0.3") == Dimension("k", "const", (0.3,))
    assert one("auto") == Dimension("k", "const", ("auto",))
    assert one(7) == Dimension("k", "const", (7,))  # a YAML number, not a string
    assert one([1, 2]) == Dimension("k", "const", ([1, 2],))


@pytest.mark.parametrize(
    "expression, fragment",
    [
        ("choice(a, b", "cannot parse k"),
        ("interval(3, 1)", "lo < hi"),
        ("tag(log, interval(0, 1))", "must be > 0"),
        ("range(5, 1)", "is empty"),
        ("glob(*)", "not supported"),
    ],
)
def test_malformed_expressions_name_the_key_and_the_grammar(expression, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        one(expression)
    assert "k" in str(info.value)


def test_seed_is_not_a_space_key():
    with pytest.raises(ConfigError, match="num_seeds"):
        parse_space({"seed": "choice(1, 2)"})


# ------------------------------------------------------------------ conditions


def test_conditional_dimensions_carry_their_condition():
    dims = parse_space(
        {"algo": "choice(ppo, dqn)", "algo.params.lr": "interval(1e-4, 1e-3)"},
        {
            "algo=ppo": {"algo.params.clip_param": "interval(0.1, 0.3)"},
            "algo=dqn": {"algo.params.n_step": "choice(1, 3)"},
        },
    )
    by_key = {d.key: d for d in dims}
    assert by_key["algo.params.clip_param"].condition == ("algo", "ppo")
    assert by_key["algo.params.n_step"].condition == ("algo", "dqn")
    assert by_key["algo.params.lr"].condition is None


def test_condition_must_select_a_value_of_a_choice():
    with pytest.raises(ConfigError, match="not a choice"):
        parse_space({"algo.params.lr": "interval(0.1, 1)"}, {"algo=ppo": {"x": "1"}})
    with pytest.raises(ConfigError, match="not one of"):
        parse_space({"algo": "choice(ppo, dqn)"}, {"algo=sac": {"x": "1"}})
    with pytest.raises(ConfigError, match="key=value"):
        parse_space({"algo": "choice(ppo, dqn)"}, {"algo": {"x": "1"}})


def test_grid_points_enumerate_conditional_branches_only_where_active():
    dims = parse_space(
        {"algo": "choice(ppo, dqn)", "env.env_config.n": "choice(1, 2)"},
        {"algo=ppo": {"algo.params.clip_param": "choice(0.1, 0.2)"}},
    )
    points = grid_points(dims)
    assert len(points) == 2 * 2 + 2  # ppo: 2 n x 2 clip; dqn: 2 n
    assert {"algo": "dqn", "env.env_config.n": 1} in points
    assert all("algo.params.clip_param" in p for p in points if p["algo"] == "ppo")
    assert all("algo.params.clip_param" not in p for p in points if p["algo"] == "dqn")


def test_grid_rejects_continuous_intervals():
    with pytest.raises(ConfigError, match="grid search needs discrete values"):
        grid_points(parse_space({"algo.params.lr": "interval(0.1, 1)"}))


# ------------------------------------------------------------------ seeds


def test_seeds_are_distinct_and_recorded():
    assert seeds(10, 3) == [10, 11, 12]
    with pytest.raises(ConfigError, match="num_seeds"):
        seeds(0, 0)
    assert trial_seed({"seed": 5}, 0) == 5
    assert trial_seed({"__trial_index__": 2}, 100) == 102  # Tune's Repeater index
    assert trial_seed({}, 7) == 7


# ------------------------------------------------------------------ Tune objects

COMMON = dict(metric="return_env/mean", mode="max", first_seed=0)


def test_grid_becomes_native_grid_search_times_seeds():
    s = build_tune_search(
        space={
            "algo": "choice(ppo, dqn)",
            "reward.metrics.route.weight": "choice(0.1, 0.5)",
            "algo.params.gamma": "0.9",
        },
        algorithm="grid",
        num_samples=99,
        num_seeds=3,
        scheduler="fifo",
        **COMMON,
    )
    assert s.param_space["algo"] == tune.grid_search(["ppo", "dqn"])
    assert s.param_space["algo.params.gamma"] == 0.9
    assert s.param_space["seed"] == tune.grid_search([0, 1, 2])
    assert s.num_samples == 1 and s.search_alg is None
    assert isinstance(s.scheduler, FIFOScheduler)


def test_grid_with_conditions_enumerates_points():
    s = build_tune_search(
        space={"algo": "choice(ppo, dqn)"},
        when={"algo=ppo": {"algo.params.clip_param": "choice(0.1, 0.2)"}},
        algorithm="grid",
        num_samples=1,
        num_seeds=1,
        scheduler="fifo",
        **COMMON,
    )
    assert len(s.param_space["_point"]["grid_search"]) == 3


@pytest.mark.parametrize("algorithm, sampler", [("random", "RandomSampler"), ("optuna", "TPESampler")])
def test_random_and_optuna_repeat_each_configuration_per_seed(algorithm, sampler):
    s = build_tune_search(
        space={"algo.params.lr": "tag(log, interval(1e-4, 1e-2))"},
        algorithm=algorithm,
        num_samples=4,
        num_seeds=3,
        scheduler="asha",
        max_env_steps=5000,
        **COMMON,
    )
    assert isinstance(s.search_alg, Repeater) and s.num_samples == 12
    assert isinstance(s.search_alg.searcher, OptunaSearch)
    s.search_alg.set_search_properties(None, None, {})
    seeds_seen = [s.search_alg.suggest(f"t{i}")["seed"] for i in range(6)]
    assert seeds_seen == [0, 1, 2, 0, 1, 2]  # each sampled configuration on seeds 0, 1, 2
    assert type(s.search_alg.searcher._sampler).__name__ == sampler
    assert isinstance(s.scheduler, ASHAScheduler) and s.scheduler._max_t == 5000


def test_an_empty_space_is_one_configuration_on_every_seed():
    s = build_tune_search(
        space={"algo.params.gamma": "0.9"}, algorithm="random", num_samples=8, num_seeds=3, scheduler="fifo", **COMMON
    )
    assert s.num_samples == 3


def test_optuna_define_by_run_samples_conditional_keys_only_when_active():
    import optuna

    s = build_tune_search(
        space={
            "algo": "choice(ppo, dqn)",
            "algo.params.lr": "tag(log, interval(1e-4, 1e-2))",
            "algo.model.fcnet_hiddens": "choice([32], [64, 64])",
        },
        when={"algo=ppo": {"algo.params.clip_param": "interval(0.1, 0.3)"}},
        algorithm="optuna",
        num_samples=1,
        num_seeds=1,
        scheduler="fifo",
        **COMMON,
    )
    define = s.search_alg.searcher._space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        constants = define(trial)
        params = trial.params
        assert 1e-4 <= params["algo.params.lr"] <= 1e-2
        assert ("algo.params.clip_param" in params) == (params["algo"] == "ppo")
        assert constants["algo.model.fcnet_hiddens"] in ([32], [64, 64])  # non-primitive choice
        seen.add(params["algo"])
    assert seen == {"ppo", "dqn"}


def test_pbt_mutates_every_dimension_and_uses_seed_grid():
    s = build_tune_search(
        space={"algo.params.lr": "interval(1e-4, 1e-2)", "algo.params.num_epochs": "choice(2, 4)"},
        algorithm="random",
        num_samples=2,
        num_seeds=2,
        scheduler="pbt",
        scheduler_params={"perturbation_interval": 1000},
        **COMMON,
    )
    assert isinstance(s.scheduler, PopulationBasedTraining)
    assert set(s.scheduler._hyperparam_mutations) == {"algo.params.lr", "algo.params.num_epochs"}
    assert s.search_alg is None and s.param_space["seed"] == tune.grid_search([0, 1])


def test_pbt_refuses_conditions_and_empty_spaces():
    with pytest.raises(ConfigError, match="pbt cannot follow conditional"):
        build_tune_search(
            space={"algo": "choice(ppo, dqn)"},
            when={"algo=ppo": {"x": "interval(0.1, 1)"}},
            algorithm="random",
            num_samples=1,
            num_seeds=1,
            scheduler="pbt",
            **COMMON,
        )
    with pytest.raises(ConfigError, match="no choice/interval"):
        build_tune_search(space={}, algorithm="random", num_samples=1, num_seeds=1, scheduler="pbt", **COMMON)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"algorithm": "bayes"}, "search.algorithm='bayes' is unknown; valid choices: grid, random, optuna"),
        ({"scheduler": "hyperband"}, "scheduler='hyperband' is unknown; valid choices: fifo, asha, pbt"),
        ({"mode": "maximise"}, "search.mode='maximise'"),
        ({"num_samples": 0}, "num_samples must be >= 1"),
        ({"scheduler": "asha", "scheduler_params": {"grace": 1}}, "bad parameter in scheduler.params"),
    ],
)
def test_bad_search_settings_name_value_and_choices(kwargs, fragment):
    args = dict(
        space={"algo.params.lr": "choice(0.1, 0.2)"},
        algorithm="grid",
        num_samples=1,
        num_seeds=1,
        scheduler="fifo",
        **COMMON,
    )
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        build_tune_search(**args)
    assert fragment in str(info.value)
