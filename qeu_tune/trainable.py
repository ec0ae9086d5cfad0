"""One trial: build the RLlib algorithm from the trial's resolved config and train it.

Knows nothing about MLflow: it reports flat metrics (``qeu_tune.names``) and checkpoints
to Ray Tune, and the driver's tracking callback does the rest.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import tempfile
from typing import Any, Dict, Mapping, Tuple

from qeu_tune import names
from qeu_tune.config.errors import ConfigError
from qeu_tune.trial_config import TrialTemplate, resolve_trial_config

# name -> (module, AlgorithmConfig class). New API stack only.
ALGORITHMS: Dict[str, Tuple[str, str]] = {
    "ppo": ("ray.rllib.algorithms.ppo", "PPOConfig"),
    "dqn": ("ray.rllib.algorithms.dqn", "DQNConfig"),
    "appo": ("ray.rllib.algorithms.appo", "APPOConfig"),
    "impala": ("ray.rllib.algorithms.impala", "IMPALAConfig"),
    "sac": ("ray.rllib.algorithms.sac", "SACConfig"),
}
ENV_NAME = "qeu_tune_env"  # the one registered env creator; the real env is in env_config


def env_creator(env_ctx: Mapping[str, Any]) -> Any:
    """Builds the trial's environment (base env + reward design) inside an env runner."""
    from qeu_tune.reward import make_env

    return make_env(
        env_ctx["env_id"], dict(env_ctx.get("env_config") or {}), env_ctx.get("reward"),
        gamma=float(env_ctx["gamma"]),
    )


def register_env() -> None:
    """Registers ``env_creator`` with Tune's registry (idempotent)."""
    from ray.tune.registry import register_env as tune_register_env

    tune_register_env(ENV_NAME, env_creator)


def algorithm_config_class(name: str) -> type:
    """The RLlib ``AlgorithmConfig`` class for an algorithm name."""
    if name not in ALGORITHMS:
        raise ConfigError(
            f"algo.name={name!r} is not a supported algorithm; valid choices: "
            f"{', '.join(ALGORITHMS)} (pick one with algo=<name>)."
        )
    module, cls = ALGORITHMS[name]
    return getattr(importlib.import_module(module), cls)


def _valid_training_keys(config_cls: type) -> list[str]:
    keys = set()
    for klass in config_cls.__mro__:
        training = klass.__dict__.get("training")
        if training is not None:
            keys |= {p for p in inspect.signature(training).parameters if p not in ("self", "kwargs")}
    return sorted(keys)


def build_algo_config(config: Mapping[str, Any]) -> Any:
    """The RLlib ``AlgorithmConfig`` of a resolved trial config.

    Args:
        config: A resolved trial config (see ``qeu_tune.trial_config``).

    Returns:
        An ``AlgorithmConfig`` on the new API stack, env = ``qeu_tune_env``.

    Raises:
        ConfigError: Unknown algorithm or hyperparameter (the message lists valid keys).
    """
    from qeu_tune.episode_metrics import EpisodeMetricsCallback

    algo = config["algo"]
    config_cls = algorithm_config_class(algo["name"])
    algo_config = config_cls()
    params = dict(algo.get("params") or {})
    try:
        algo_config = algo_config.training(**params)
    except TypeError as err:
        bad = sorted(set(params) - set(_valid_training_keys(config_cls)))
        raise ConfigError(
            f"algo.params for {algo['name']}: {', '.join(bad) or err} not accepted by "
            f"{config_cls.__name__}.training(). Valid keys: "
            f"{', '.join(_valid_training_keys(config_cls))}."
        ) from None
    env = config["env"]
    algo_config = (
        algo_config.environment(
            env=ENV_NAME,
            env_config={
                "env_id": env["id"],
                "env_config": dict(env.get("env_config") or {}),
                "reward": config.get("reward"),
                "gamma": float(algo_config.gamma),
            },
        )
        .env_runners(
            num_env_runners=int(algo.get("num_env_runners", 0)),
            num_envs_per_env_runner=int(algo.get("num_envs_per_env_runner", 1)),
            rollout_fragment_length=algo.get("rollout_fragment_length", "auto"),
        )
        .learners(num_learners=0)
        .callbacks(EpisodeMetricsCallback)
        .debugging(seed=config.get("seed"), log_level="ERROR")
    )
    if algo.get("reporting"):
        algo_config = algo_config.reporting(**dict(algo["reporting"]))
    if algo.get("model"):
        algo_config = algo_config.rl_module(model_config=dict(algo["model"]))
    return algo_config


def trial_resources(config: Mapping[str, Any]) -> Any:
    """One CPU for the trial (its learner and local env runner) + one per remote env runner."""
    from ray.tune import PlacementGroupFactory

    runners = int(config["algo"].get("num_env_runners", 0))
    return PlacementGroupFactory([{"CPU": 1}] + [{"CPU": 1}] * runners)


def stop_reached(metrics: Mapping[str, float], stop: Mapping[str, Any]) -> bool:
    """Whether any stop condition holds: env-step budget, wall time or target return."""
    if metrics[names.ENV_STEPS] >= float(stop["env_steps"]):
        return True
    if stop.get("time_s") is not None and metrics[names.TIME_TOTAL_S] >= float(stop["time_s"]):
        return True
    target = stop.get("target_return")
    value = metrics.get(names.RETURN_ENV_MEAN, float("nan"))
    return target is not None and not math.isnan(value) and value >= float(target)


def _check_finite_losses(metrics: Mapping[str, float]) -> None:
    bad = [k for k, v in metrics.items() if k.startswith(names.LEARNER_PREFIX) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"non-finite learner statistics {bad}: training diverged. Lower the learning "
            "rate or the reward weights; the trial is marked FAILED, the sweep goes on."
        )


def train_trial(params: Dict[str, Any], *, template: TrialTemplate) -> None:
    """Ray Tune function trainable: trains until a stop condition, reporting each iteration.

    Restores from Tune's checkpoint when one exists (retries, PBT exploitation).
    """
    import torch
    from ray import tune
    from ray.tune import Checkpoint

    from qeu_tune.episode_metrics import flatten_result, rllib_metrics

    config, _ = resolve_trial_config(template, params)  # skipped keys: tagged by tracking
    # One trial per core: stop torch from spawning a thread per core in every trial.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
    register_env()
    algo = build_algo_config(config).build_algo()
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as path:
                algo.restore_from_path(path)
        every = int(config.get("checkpoint_every") or 0)
        previous_steps = 0.0
        while True:
            result = algo.train()
            metrics = flatten_result(result, previous_env_steps=previous_steps)
            previous_steps = metrics[names.ENV_STEPS]
            _check_finite_losses(metrics)
            done = stop_reached(metrics, config["stop"])
            report = {**metrics, **rllib_metrics(result)}
            iteration = int(metrics[names.ITERATION])
            if done or (every and iteration % every == 0):
                with tempfile.TemporaryDirectory() as path:
                    algo.save_to_path(path)
                    tune.report(report, checkpoint=Checkpoint.from_directory(path))
            else:
                tune.report(report)
            if done:
                return
    finally:
        algo.stop()
