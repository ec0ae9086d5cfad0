"""One trial: build the RLlib algorithm from the trial's resolved config and train it.

Knows nothing about MLflow: it reports flat metrics (``qeu_tune.core.names``) and checkpoints
to Ray Tune, and the driver's tracking callback does the rest.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple

from qeu_tune.config.trial import TrialTemplate, resolve_trial_config, trained_with
from qeu_tune.core import names
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine import synthetic
from qeu_tune.engine.episode_metrics import EpisodeMetricsCallback, flatten_evaluation, flatten_result, rllib_metrics
from qeu_tune.engine.node import node_info
from qeu_tune.envs.faults import FaultInjection, fault_settings
from qeu_tune.reward import install_fitted, make_env

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

    install_fitted(env_ctx.get("fitted"))  # remote env runners: the driver's fitted metrics

    env = make_env(
        env_ctx["env_id"],
        dict(env_ctx.get("env_config") or {}),
        env_ctx.get("reward"),
        gamma=float(env_ctx["gamma"]),
    )
    if env_ctx.get("fault"):
        env = FaultInjection(env, **env_ctx["fault"], seed=getattr(env_ctx, "worker_index", None))
    return env


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


def build_algo_config(
    config: Mapping[str, Any], *, restored: bool = False, fitted: Optional[Mapping[str, Any]] = None
) -> Any:
    """The RLlib ``AlgorithmConfig`` of a resolved trial config.

    Args:
        config: A resolved trial config (see ``qeu_tune.config.trial``).
        restored: The trial restarts from a checkpoint (decides ``env.fault``).
        fitted: Fitted reward metrics (``qeu_tune.reward.fitted_metrics``) for remote env
            runners, which then do not fit them again (the local one shares the trial's
            process cache).

    Returns:
        An ``AlgorithmConfig`` on the new API stack, env = ``qeu_tune_env``.

    Raises:
        ConfigError: Unknown algorithm or hyperparameter (the message lists valid keys).
    """

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
    env_config = {
        "env_id": env["id"],
        "env_config": dict(env.get("env_config") or {}),
        "reward": config.get("reward"),
        "gamma": float(algo_config.gamma),
        "fault": fault_settings(env.get("fault"), restored=restored),
    }
    if fitted and int(algo.get("num_env_runners", 0)) > 0:
        env_config["fitted"] = dict(fitted)
    algo_config = (
        algo_config.environment(env=ENV_NAME, env_config=env_config)
        .env_runners(
            num_env_runners=int(algo.get("num_env_runners", 0)),
            num_envs_per_env_runner=int(algo.get("num_envs_per_env_runner", 1)),
            rollout_fragment_length=algo.get("rollout_fragment_length", "auto"),
        )
        .learners(num_learners=0)
        # Remote env runners that crash are replaced (RLlib's own fault tolerance); with
        # none, a crash fails the trial and Tune retries it from its last checkpoint.
        .fault_tolerance(restart_failed_env_runners=int(algo.get("num_env_runners", 0)) > 0)
        .callbacks(EpisodeMetricsCallback)
        # log_sys_usage: RLlib's psutil thread polls every 0.7 s and Algorithm.stop() joins
        # it, leaving the trial's CPU idle for up to 0.7 s before the next trial starts.
        .debugging(seed=config.get("seed"), log_level="ERROR", log_sys_usage=False)
    )
    evaluation = config.get("evaluation") or {}
    if int(evaluation.get("interval") or 0) > 0:
        episodes = int(evaluation.get("episodes") or 1)
        # Greedy, in the trial's own process, one env, whole episodes; RLlib seeds its
        # evaluation runner's env with the trial seed + 1,000,000.
        algo_config = algo_config.evaluation(
            evaluation_interval=int(evaluation["interval"]),
            evaluation_duration=episodes,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=0,
            evaluation_config={
                "explore": False,
                "num_envs_per_env_runner": 1,
                "metrics_num_episodes_for_smoothing": episodes,
            },
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


def train_trial(params: Dict[str, Any], *, template: TrialTemplate, fitted: Optional[Mapping[str, Any]] = None) -> None:
    """Ray Tune function trainable: trains until a stop condition, reporting each iteration.

    Restores from Tune's checkpoint when one exists (retries, PBT exploitation).
    ``fitted``: the sweep's reward metrics, fitted once on the driver
    (``qeu_tune.reward.fitted_metrics``); a trial fits only metrics missing from it.
    Tune may run several trials one after another in one actor (``reuse_actors``): the
    imports, the fitted metrics and the registered env then carry over.
    """
    import torch
    from ray import tune
    from ray.tune import Checkpoint

    config, _ = resolve_trial_config(template, params)  # skipped keys: tagged by tracking
    install_fitted(fitted)
    # One trial per core: stop torch from spawning a thread per core in every trial.
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
    register_env()
    checkpoint = tune.get_checkpoint()
    progress = _read_progress(checkpoint) if checkpoint is not None else None
    if progress is not None and stop_reached(progress, config["stop"]):
        return  # finished before the driver recorded it (driver killed): nothing left to do
    if config["algo"]["name"] == synthetic.NAME:  # a learning-curve model, no RLlib (engine/synthetic.py)
        algo = synthetic.SyntheticAlgorithm(config)
    else:
        algo = build_algo_config(config, restored=checkpoint is not None, fitted=fitted).build_algo()
    try:
        if checkpoint is not None:
            with checkpoint.as_directory() as path:
                algo.restore_from_path(path)
        every = int(config.get("checkpoint_every") or 0)
        eval_every = int((config.get("evaluation") or {}).get("interval") or 0)
        previous_steps = progress[names.ENV_STEPS] if progress else 0.0
        reported_node = False
        hyperparameters = trained_with(params)  # which values produced each result (PBT changes them)
        latest_eval: Dict[str, float] = {}
        while True:
            result = algo.train()
            metrics = flatten_result(result, previous_env_steps=previous_steps)
            previous_steps = metrics[names.ENV_STEPS]
            _check_finite_losses(metrics)
            done = stop_reached(metrics, config["stop"])
            if eval_every:
                latest_eval = (
                    _evaluation(
                        algo, result, int(metrics[names.ITERATION]), eval_every, first=not latest_eval, done=done
                    )
                    or latest_eval
                )
                metrics.update(latest_eval)
            report = {**metrics, **rllib_metrics(result), **hyperparameters}
            if not reported_node:  # the node this process runs on: tagged once by the driver
                report.update(node_info())
                reported_node = True
            iteration = int(metrics[names.ITERATION])
            if done or (every and iteration % every == 0):
                with tempfile.TemporaryDirectory() as path:
                    algo.save_to_path(path)
                    _write_progress(path, metrics)
                    tune.report(report, checkpoint=Checkpoint.from_directory(path))
            else:
                tune.report(report)
            if done:
                return
    finally:
        algo.stop()


def _evaluation(
    algo: Any, result: Mapping[str, Any], iteration: int, every: int, *, first: bool, done: bool
) -> Dict[str, float]:
    """This iteration's greedy evaluation, if it has one (``{}`` otherwise).

    RLlib evaluates in ``train()`` every ``every`` iterations; the trial adds one at its
    first iteration (so every result carries an evaluation, as Tune's searchers and
    schedulers need) and one at its last (the final greedy return).
    """

    if iteration % every == 0:
        return flatten_evaluation(result.get("evaluation"), iteration)
    if first or done:
        return flatten_evaluation(algo.evaluate(), iteration)
    return {}


PROGRESS_FILE = "qeu_progress.json"  # in each checkpoint: the counters stop conditions read


def _write_progress(path: str, metrics: Mapping[str, float]) -> None:
    import json

    keys = (names.ENV_STEPS, names.TIME_TOTAL_S, names.RETURN_ENV_MEAN, names.ITERATION)
    with open(os.path.join(path, PROGRESS_FILE), "w") as out:
        json.dump({k: metrics[k] for k in keys if k in metrics}, out)


def _read_progress(checkpoint: Any) -> Any:
    import json

    with checkpoint.as_directory() as path:
        try:
            with open(os.path.join(path, PROGRESS_FILE)) as stream:
                return {k: float(v) for k, v in json.load(stream).items()}
        except (OSError, ValueError):
            return None
