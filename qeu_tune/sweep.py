"""Run a sweep: validate the config, plan Tune's search, run it, record it in MLflow.

``plan_sweep`` does every check that can fail without Ray, so bad input stops before a
cluster starts or an MLflow run is opened. ``run_sweep`` then starts (or joins) Ray,
opens the parent run, runs ``Tuner.fit`` and closes every run with its real status.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from qeu_tune import names
from qeu_tune.config.compose import compose_group_options, group_options
from qeu_tune.config.errors import ConfigError
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.paths import CONF_DIR, resolve_storage_path, resolve_tracking_uri
from qeu_tune.search import TuneSearch, build_tune_search, grid_points, parse_space
from qeu_tune.trial_config import TrialTemplate, describe, resolve_trial_config, unknown_keys

log = logging.getLogger(__name__)


@dataclass
class SweepPlan:
    """Everything needed to run a sweep, validated."""

    config: Dict[str, Any]
    template: TrialTemplate
    search: TuneSearch
    tracking_uri: str
    storage_path: str
    overrides: List[str] = field(default_factory=list)


@dataclass
class SweepResult:
    """What a finished sweep returns (and the CLI prints)."""

    parent_run_id: Optional[str]
    tracking_uri: str
    experiment_id: Optional[str]
    num_trials: int
    num_errors: int
    best: Optional[Dict[str, Any]]  # {"values", "metric", "run_id", "trial_id"}
    status: str
    report: Any = None  # qeu_tune.analysis.SweepReport, when it could be built


def _group_choices(config: Mapping[str, Any]) -> Dict[str, List[str]]:
    """Config-group options a search space chooses between (``algo: choice(ppo, dqn)``)."""
    search = config["search"]
    dims = parse_space(search.get("space") or {}, search.get("when") or {})
    choices: Dict[str, List[str]] = {}
    for dim in dims:
        if dim.key in GROUP_NAMES:
            if dim.kind not in ("choice", "const"):
                raise ConfigError(
                    f"search space: {dim.key} selects a config group, so it needs "
                    f"choice(...) of option names; valid options: {', '.join(group_options(dim.key))}."
                )
            for value in dim.values:
                if str(value) not in group_options(dim.key):
                    raise ConfigError(
                        f"search space: {dim.key}={value!r} is not a {dim.key} option; valid "
                        f"choices: {', '.join(group_options(dim.key))}."
                    )
            choices.setdefault(dim.key, [])
            choices[dim.key] += [str(v) for v in dim.values if str(v) not in choices[dim.key]]
    return choices


def _representative_params(search: TuneSearch) -> List[Dict[str, Any]]:
    """One parameter set per combination of group options, to validate each variant."""
    group_dims = [d for d in search.dimensions if d.key in GROUP_NAMES and d.condition is None]
    if not group_dims:
        return [{}]
    return grid_points(group_dims)


def validate_trial_config(config: Mapping[str, Any]) -> None:
    """Builds the RLlib config and the environment once, on the driver, without Ray.

    Raises:
        ConfigError: with one paragraph naming the bad value and the fix.
    """
    from qeu_tune.reward import make_env, parse_reward_config
    from qeu_tune.trainable import build_algo_config

    algo_config = build_algo_config(config)  # unknown algorithm / hyperparameter
    try:
        parse_reward_config(config.get("reward"))  # reward errors get a reward label
    except ValueError as err:
        raise ConfigError(f"reward={config.get('reward', {}).get('name')}: {err}") from None
    env = config["env"]
    try:
        instance = make_env(
            env["id"], dict(env.get("env_config") or {}), config.get("reward"),
            gamma=float(algo_config.gamma),
        )
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"env={env.get('name')} (id {env['id']!r}): {err}") from None
    except Exception as err:  # noqa: BLE001 - user env code can raise anything
        raise ConfigError(
            f"env={env.get('name')}: building {env['id']!r} with env_config "
            f"{env.get('env_config')} failed: {type(err).__name__}: {err}"
        ) from None
    try:
        _check_action_space(config["algo"]["name"], instance.action_space)
    finally:
        instance.close()


def _check_action_space(algo: str, space: Any) -> None:
    import gymnasium as gym

    if algo == "dqn" and not isinstance(space, gym.spaces.Discrete):
        raise ConfigError(
            f"algo=dqn needs a discrete action space, but the env has {space}; use "
            "algo=sac, ppo, appo or impala, or a discrete env."
        )


def plan_sweep(config: Dict[str, Any], overrides: Sequence[str] = ()) -> SweepPlan:
    """Validates a composed config and plans its sweep. Never starts Ray.

    Args:
        config: The composed, resolved config (plain dict).
        overrides: The Hydra overrides it was composed with (to compose group options).

    Returns:
        A ``SweepPlan``.

    Raises:
        ConfigError: Any invalid value, with the valid choices.
    """
    search_cfg, stop = config["search"], config["stop"]
    if int(stop["env_steps"]) <= 0:
        raise ConfigError(f"stop.env_steps must be > 0, got {stop['env_steps']}.")
    search = build_tune_search(
        space=search_cfg.get("space") or {},
        when=search_cfg.get("when") or {},
        algorithm=search_cfg["algorithm"],
        num_samples=int(search_cfg["num_samples"]),
        num_seeds=int(search_cfg["num_seeds"]),
        first_seed=int(search_cfg["seed"]),
        metric=search_cfg["metric"],
        mode=search_cfg["mode"],
        scheduler=config["scheduler"]["name"],
        scheduler_params=config["scheduler"].get("params") or {},
        max_env_steps=int(stop["env_steps"]),
    )
    template = TrialTemplate(base=config, group_options=compose_group_options(overrides, _group_choices(config)))
    if config["scheduler"]["name"] == "pbt":
        template.base["checkpoint_every"] = 1  # PBT exploits from the latest checkpoint
    bad = unknown_keys(template, [d.key for d in search.dimensions])
    if bad:
        raise ConfigError(
            f"search space: {', '.join(bad)} match no config value in any trial. Keys are "
            "dotted paths into the composed config (see `qeu-tune --cfg job`), e.g. "
            "algo.params.lr, env.env_config.<kwarg>, reward.metrics.<name>.weight."
        )
    for params in _representative_params(search):
        trial_config, _ = resolve_trial_config(template, {**params, "seed": search_cfg["seed"]})
        validate_trial_config(trial_config)
    return SweepPlan(
        config=config,
        template=template,
        search=search,
        tracking_uri=resolve_tracking_uri(config["tracking"].get("uri")),
        storage_path=resolve_storage_path(config["cluster"].get("storage_path")),
        overrides=list(overrides),
    )


def _init_ray(cluster: Mapping[str, Any], verbose: int) -> None:
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": verbose >= 2, "logging_level": logging.INFO if verbose >= 2 else logging.WARNING}
    if cluster.get("address"):
        _use_ray_token_for_client(str(cluster["address"]))
        try:
            ray.init(address=cluster["address"], **quiet)
        except Exception as err:  # noqa: BLE001 - Ray raises several types for this
            raise ConfigError(
                f"cluster.address={cluster['address']!r}: could not connect to Ray "
                f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}). "
                "Use 'auto' on a node of a running cluster (`ray start --head`), "
                "ray://HOST:10001 for a Ray Client server, or cluster=local."
            ) from None
    else:
        ray.init(
            num_cpus=cluster.get("num_cpus") or os.cpu_count(),
            include_dashboard=False,
            **quiet,
        )


def _use_ray_token_for_client(address: str) -> None:
    """Ray Client sends the cluster's auth token only when token mode is on in this process.

    Ray 2.60 clusters require a token by default; a local ``ray.init()`` finds it in
    ``~/.ray/auth_token`` by itself, a ``ray://`` client does not. This does what Ray
    does for local clusters (an explicit ``RAY_AUTH_MODE`` is respected).
    """
    if not address.startswith("ray://"):
        return
    try:  # private in Ray 2.60; without it the connection fails with a clear error below
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _progress_reporter(plan: SweepPlan) -> Any:
    from ray.tune import CLIReporter

    keys = [d.key for d in plan.search.dimensions if d.kind != "const"]
    return CLIReporter(
        metric_columns={
            "training_iteration": "iter",
            names.ENV_STEPS: "env_steps",
            names.RETURN_ENV_MEAN: "return_env",
            names.RETURN_MEAN: "return",
            names.ENV_STEPS_PER_S: "steps/s",
        },
        parameter_columns={**{k: k.split(".")[-1] for k in keys}, "seed": "seed"},
        max_report_frequency=10,
        print_intermediate_tables=True,
        sort_by_metric=False,
    )


def run_sweep(plan: SweepPlan, *, command: str = "qeu-tune") -> SweepResult:
    """Runs a planned sweep on Ray Tune and records it in MLflow.

    Args:
        plan: From ``plan_sweep``.
        command: The command line, recorded on the parent run.

    Returns:
        A ``SweepResult`` with the parent run id and the best trial.
    """
    from ray import tune

    from qeu_tune import tracking
    from qeu_tune.trainable import register_env, train_trial, trial_resources

    config = plan.config
    verbose = int(config.get("verbose", 1))
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table shows our columns
    _init_ray(config["cluster"], verbose)  # before any MLflow run: no half-written sweep
    tracker = tracking.Tracker(tracking_uri=plan.tracking_uri, experiment=config["tracking"]["experiment"])
    sweep_name = str(config["sweep_name"])
    parent = tracker.create_run(
        run_name=f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags=tracking.sweep_tags(
            sweep_name=sweep_name, command=command, source_dir=CONF_DIR.parent, extra=config.get("tags") or {}
        ),
    )
    tracker.log_params(parent, tracking.flatten_params(_sweep_params(config)))
    tracker.log_dict_yaml(parent, config, tracking.SWEEP_CONFIG_ARTIFACT)
    tracker.log_dict_yaml(
        parent,
        {"space": config["search"].get("space"), "when": config["search"].get("when"),
         "algorithm": config["search"]["algorithm"], "num_samples": config["search"]["num_samples"],
         "num_seeds": config["search"]["num_seeds"], "seed": config["search"]["seed"],
         "scheduler": config["scheduler"], "overrides": plan.overrides},
        tracking.SEARCH_SPEC_ARTIFACT,
    )
    callback = tracking.MLflowTrialCallback(
        tracker=tracker, parent_run_id=parent, template=plan.template, sweep_name=sweep_name,
        flush_every_s=float(config["tracking"]["flush_every_s"]),
        log_rllib_metrics=bool(config["tracking"]["log_rllib_metrics"]),
    )
    status = tracking.FAILED
    try:
        register_env()
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, template=plan.template), trial_resources(config)
        )
        max_concurrent = config["search"].get("max_concurrent_trials")
        tuner = tune.Tuner(
            trainable,
            param_space=plan.search.param_space,
            tune_config=tune.TuneConfig(
                search_alg=plan.search.search_alg,
                scheduler=plan.search.scheduler,
                num_samples=plan.search.num_samples,
                max_concurrent_trials=max_concurrent,
                trial_name_creator=lambda t: f"{t.trial_id}",
                trial_dirname_creator=lambda t: f"{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=plan.storage_path,
                callbacks=[callback],
                progress_reporter=_progress_reporter(plan) if verbose >= 1 else None,
                verbose=1 if verbose >= 1 else 0,
                failure_config=tune.FailureConfig(max_failures=int(config.get("max_failures", 0))),
                # PBT exploits other trials' checkpoints: deleting old ones breaks it.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=None if config["scheduler"]["name"] == "pbt" else 2
                ),
            ),
        )
        results = tuner.fit()
        num_errors = len(results.errors)
        best = _best(callback, config)
        if best is not None:
            tracker.set_tags(parent, {"qeu.best_run_id": best["run_id"] or "", "qeu.best_trial": best["trial_id"]})
            tracker.log_metrics(parent, _best_metrics(best))
        status = tracking.FINISHED if num_errors < len(results) or len(results) == 0 else tracking.FAILED
        callback.close_open_runs(tracking.KILLED)
        report = _log_report(plan.tracking_uri, parent) if parent is not None else None
        return SweepResult(
            parent_run_id=parent, tracking_uri=plan.tracking_uri, experiment_id=tracker.experiment_id,
            num_trials=len(results), num_errors=num_errors, best=best, status=status, report=report,
        )
    except KeyboardInterrupt:
        status = tracking.KILLED
        callback.close_open_runs(tracking.KILLED)
        raise
    except BaseException:
        callback.close_open_runs(tracking.FAILED)
        raise
    finally:
        callback.close_open_runs(tracking.KILLED)
        tracker.end_run(parent, status)


def _log_report(tracking_uri: str, parent_run_id: str) -> Any:
    """The comparison report as artifacts of the parent run; a failure is only a warning."""
    from qeu_tune.analysis import report_sweep_end

    try:
        return report_sweep_end(tracking_uri, parent_run_id)
    except Exception as err:  # noqa: BLE001 - the sweep's runs are recorded either way
        log.warning("could not write the sweep report to run %s: %s", parent_run_id, err)
        return None


def _sweep_params(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The parent run's params: the sweep-level settings (trials carry the full config)."""
    search = config["search"]
    return {
        "sweep_name": config["sweep_name"],
        "algo": config["algo"]["name"],
        "env": config["env"]["name"],
        "reward": config["reward"]["name"],
        "search": {k: search[k] for k in ("algorithm", "num_samples", "num_seeds", "seed", "metric", "mode")},
        "search_space": {k: str(v) for k, v in (search.get("space") or {}).items()},
        "scheduler": config["scheduler"]["name"],
        "stop": config["stop"],
        "smoke": config.get("smoke", False),
    }


def _best(callback: Any, config: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    metric, mode = config["search"]["metric"], config["search"]["mode"]
    best_value, best_trial = None, None
    for trial_id, record in callback.records.items():
        values = [p.get(metric) for p in record.history if p.get(metric) is not None and not math.isnan(p[metric])]
        if not values:
            continue
        final = values[-1]
        if best_value is None or (final > best_value if mode == "max" else final < best_value):
            best_value, best_trial = final, trial_id
    if best_trial is None:
        return None
    record = callback.records[best_trial]
    return {
        "trial_id": best_trial, "run_id": record.run_id, "values": record.values,
        "metric": metric, "value": best_value, "description": describe(record.values),
    }


def _best_metrics(best: Mapping[str, Any]) -> List[Any]:
    from mlflow.entities import Metric

    return [Metric(f"best/{best['metric']}", float(best["value"]), int(time.time() * 1000), 0)]
