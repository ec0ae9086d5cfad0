"""Every config group option and every experiment file composes, validates and plans."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from qeu_tune.config.compose import compose, group_options, to_plain
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.config.schema import ExperimentConfig
from qeu_tune.engine.plan import plan_sweep

OPTIONS = [(g, o) for g in GROUP_NAMES for o in group_options(g)]
EXPERIMENTS = group_options("experiment")


def test_every_group_has_options():
    for group in GROUP_NAMES:
        assert group_options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_against_the_schema(group, option):
    cfg = compose([f"{group}={option}"])
    typed = OmegaConf.to_object(cfg)  # raises on a schema mismatch
    assert isinstance(typed, ExperimentConfig)
    assert getattr(typed, group).name == option, f"conf/{group}/{option}.yaml: name must match the file"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_plans(experiment):
    overrides = [f"experiment={experiment}"]
    config = to_plain(compose(overrides))
    plan = plan_sweep(config, overrides)  # parses the space, builds each env and RLlib config
    assert plan.search.num_samples >= 1


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_smoke(experiment):
    config = to_plain(compose([f"experiment={experiment}", "debug=smoke"]))
    assert config["smoke"] is True and config["stop"]["env_steps"] <= 2000


ALGO_ENV = [
    ("ppo", "cartpole"),
    ("dqn", "acrobot"),
    ("appo", "mountaincar"),
    ("impala", "cartpole"),
    ("sac", "pendulum"),
]


@pytest.mark.parametrize("algo, env", ALGO_ENV)
def test_each_algorithm_plans_on_a_suitable_env(algo, env):
    overrides = [f"algo={algo}", f"env={env}"]
    if algo == "sac":  # SAC takes actor_lr/critic_lr/alpha_lr; the default sweep over lr fails RLlib's validate()
        overrides.append("experiment=single")
    plan = plan_sweep(to_plain(compose(overrides)), overrides)
    assert plan.config["algo"]["name"] == algo


def test_default_sweep_is_small_and_has_two_trials():
    config = to_plain(compose([]))
    assert config["search"]["num_samples"] * config["search"]["num_seeds"] >= 2
    assert config["stop"]["env_steps"] <= 50_000
    assert config["sweep_name"] == "ppo-cartpole-none"


def test_hydra_overrides_reach_the_config():
    config = to_plain(compose(["algo=dqn", "env=mountaincar", "algo.params.lr=0.01", "search.num_seeds=3"]))
    assert (config["algo"]["name"], config["env"]["id"]) == ("dqn", "MountainCar-v0")
    assert config["algo"]["params"]["lr"] == 0.01 and config["search"]["num_seeds"] == 3


def test_default_locations_are_absolute_and_under_qeu_home(isolated_home):
    from qeu_tune.core.paths import resolve_storage_path, resolve_tracking_uri

    assert resolve_tracking_uri(None) == f"sqlite:///{isolated_home / 'mlflow.db'}"
    assert resolve_storage_path(None) == str(isolated_home / "ray_results")


def test_tracking_uri_precedence(monkeypatch):
    from qeu_tune.core.paths import resolve_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5999"  # env beats the default
    assert resolve_tracking_uri("sqlite:////x.db") == "sqlite:////x.db"  # config beats env


def test_planning_a_sweep_parses_each_reward_design_once(monkeypatch):
    """A 6-value weight sweep validates, fits and builds environments from its designs many
    times; each distinct design (6 weights, plus the base config's) is parsed once."""
    from qeu_tune.reward import config as reward_config

    parsed = []
    real = reward_config._parse
    monkeypatch.setattr(reward_config, "_parse", lambda d: parsed.append(d) or real(d))
    reward_config._parse_cached.cache_clear()
    overrides = [
        "experiment=single",
        "reward=cartpole_rt",
        "reward.metrics.balance.weight=choice(0.0,0.1,0.2,0.3,0.5,1.0)",
    ]
    from qeu_tune.commands.argv import prepare_argv

    config = to_plain(compose(prepare_argv(overrides).argv))
    plan_sweep(config, overrides)
    weights = sorted(d["metrics"]["balance"]["weight"] for d in parsed)
    assert len(parsed) == len(set(map(str, parsed))), "a design was parsed twice"
    assert {0.0, 0.1, 0.2, 0.3, 0.5, 1.0} <= set(weights) and len(parsed) <= 7


@pytest.mark.parametrize("algo", ["appo", "impala"])
def test_appo_and_impala_say_plainly_what_cartpole_needs(algo):
    """They do not reach CartPole's 400 in the default budget: their config files say so and what it takes."""
    from qeu_tune.core.paths import CONF_DIR

    text = (CONF_DIR / "algo" / f"{algo}.yaml").read_text()
    assert "What it needs on CartPole" in text and "not 400" in text and "Return >= 400 needs" in text


def test_threads_can_compose_at_the_same_time():
    # Hydra's state is process-global (GlobalHydra): concurrent sweeps recorded from threads
    # (tests/e2e/test_server.py) once failed with "GlobalHydra is already initialized".
    import threading

    got, errors = [], []

    def work(algo):
        try:
            for _ in range(3):
                got.append(compose([f"algo={algo}"]).algo.name == algo)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=work, args=(algo,)) for algo in ("ppo", "dqn", "ppo", "dqn")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and got == [True] * 12
