"""Run a sweep: validate the config, plan Tune's search, run it, record it in MLflow.

``plan_sweep`` does every check that can fail without Ray, so bad input stops before a
cluster starts or an MLflow run is opened. ``run_sweep`` then starts (or joins) Ray,
opens the parent run, runs ``Tuner.fit`` and closes every run with its real status.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from qeu_tune import names
from qeu_tune.config.compose import compose_group_options, group_options
from qeu_tune.config.errors import ConfigError
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.config.validate import check_config, check_outside_world, check_search_metric, check_search_values
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
    interrupted: Optional[str] = None  # "SIGINT" / "SIGTERM": resumable with `qeu-tune resume`
    exit_code: int = 0
    spool: Optional[str] = None  # points not yet in MLflow: `qeu-tune sync` uploads them


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
    from qeu_tune.config.validate import checked_algo_config

    # Unknown algorithm / hyperparameter, values out of range, RLlib's own validate().
    algo_config = checked_algo_config(config)
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
    check_config(config)  # numeric sanity: budgets, RLlib values RLlib does not check
    check_outside_world(config)  # tracking URI, storage path, Ray address (short timeouts)
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
    check_search_metric(config, [config["reward"], *template.group_options.get("reward", {}).values()])
    bad = unknown_keys(template, [d.key for d in search.dimensions])
    if bad:
        raise ConfigError(
            f"search space: {', '.join(bad)} match no config value in any trial. Keys are "
            "dotted paths into the composed config (see `qeu-tune --cfg job`), e.g. "
            "algo.params.lr, env.env_config.<kwarg>, reward.metrics.<name>.weight."
        )
    representatives = _representative_params(search)
    for params in representatives:
        trial_config, _ = resolve_trial_config(template, {**params, "seed": search_cfg["seed"]})
        validate_trial_config(trial_config)
    check_search_values(template, search.dimensions, representatives, validate_config=validate_trial_config)
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
    if cluster.get("runtime_env"):  # code, files, env vars for every worker (README: Run on a cluster)
        quiet["runtime_env"] = dict(cluster["runtime_env"])
    if not cluster.get("address") and os.environ.get("RAY_ADDRESS"):  # e.g. under `ray job submit`
        cluster = {**cluster, "address": os.environ["RAY_ADDRESS"]}
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
            # Ray prestarts one idle worker per CPU for the first driver, but Tune gives
            # its trial actors their own runtime_env (which their env runners inherit), so
            # those never run a trial: they only take CPU while the sweep starts (measured:
            # 4 worker processes started, 2 used).
            _system_config={"prestart_worker_first_driver": False},
            **quiet,
        )


def _start_in_background(fn: Callable[[], Any], *, name: str) -> Future:
    """``fn()`` in one daemon-like worker thread; the caller joins it with ``.result()``."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        return executor.submit(fn)
    finally:
        executor.shutdown(wait=False)  # the thread ends with fn; nothing else is submitted


def _discard_tracker(opening: Future) -> None:
    """The sweep gave up before using the tracker: close it now or when it arrives."""
    opening.add_done_callback(lambda done: done.exception() is None and _close_quietly(done.result()))


def _open_tracker_warm_tune(plan: SweepPlan) -> Any:
    """``_tracker(plan)``, then the modules Tune imports only when ``fit()`` starts (its default
    TensorBoard/CSV/JSON loggers: ~0.2-0.5 s), so they load while ray.init waits; then starts
    the report's imports (``_warm_report_imports``)."""
    tracker = _tracker(plan)
    try:
        import ray.tune.logger  # noqa: F401
        import ray.tune.utils.callback  # noqa: F401
        import tensorboardX  # noqa: F401
    except Exception:  # noqa: BLE001 - only a head start; Tune imports them again
        pass
    _warm_report_imports()  # ray.init is usually still waiting: the cores are idle now
    return tracker


def _close_quietly(tracker: Any) -> None:
    """A tracker opened for a sweep that did not start (no run in it): close it, never raise."""
    try:
        tracker.close(timeout_s=5)
    except Exception:  # noqa: BLE001 - the sweep's own error is the one to report
        pass


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
    from qeu_tune.console import make_progress_reporter, total_trials

    keys = [d.key for d in plan.search.dimensions if d.kind != "const"]
    return make_progress_reporter(  # Tune's CLIReporter + a trials/env-steps/ETA line
        total=total_trials(plan.search.param_space, plan.search.num_samples),
        steps_per_trial=int(plan.config["stop"]["env_steps"]), steps_key=names.ENV_STEPS,
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


SWEEP_STATE_FILE = "qeu_sweep.yaml"  # in Tune's experiment directory: what `resume` re-plans from


def run_sweep(plan: SweepPlan, *, command: str = "qeu-tune") -> SweepResult:
    """Runs a planned sweep on Ray Tune and records it in MLflow.

    Args:
        plan: From ``plan_sweep``.
        command: The command line, recorded on the parent run.

    Returns:
        A ``SweepResult`` with the parent run id and the best configuration. An
        interrupted sweep (SIGINT/SIGTERM) returns ``status="KILLED"`` and
        ``interrupted="SIGINT"|"SIGTERM"``; ``qeu-tune resume`` continues it.
    """
    from ray import tune

    from qeu_tune import redact, tracking
    from qeu_tune.interrupts import InterruptGuard

    config = plan.config
    verbose = int(config.get("verbose", 1))
    _quiet_tune()
    redact.register_config(config, plan.tracking_uri)  # what is recorded or printed: ***
    redact.protect_console(plan.tracking_uri)
    # MLflow's import and store (~1.5-2 s of driver CPU) run while ray.init waits ~4 s for
    # Ray's daemons (the driver is idle then). The tracker opens the experiment and its
    # journal only; the parent run is created below, once Ray is up.
    opening = _start_in_background(lambda: _open_tracker_warm_tune(plan), name="qeu-open-tracker")
    try:
        _init_ray(config["cluster"], verbose)  # main thread: Ray's SIGTERM handler; before any MLflow run
    except BaseException:
        _discard_tracker(opening)
        raise
    guard = InterruptGuard()
    guard.install()  # after ray.init, which installs its own SIGTERM handler
    try:
        tracker = opening.result()  # MLflow unreachable: its ConfigError, as before
    except BaseException:  # also Ctrl-C while waiting: a tracker that comes later is closed
        _discard_tracker(opening)
        guard.restore()
        raise
    sweep_name = str(config["sweep_name"])
    run_name = f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tune_path = f"{plan.storage_path.rstrip('/')}/{run_name}"
    parent = tracker.create_run(
        run_name=redact.redact(run_name),
        tags=redact.redact({**tracking.sweep_tags(sweep_name=sweep_name, command=command, source_dir=CONF_DIR.parent,
                                                  extra=config.get("tags") or {}),
                            tracking.TAG_TUNE_PATH: tune_path}),
    )
    tracker.log_params(parent, redact.redact(tracking.flatten_params(_sweep_params(config))))
    tracker.log_dict_yaml(parent, redact.redact(config), tracking.SWEEP_CONFIG_ARTIFACT)
    tracker.log_dict_yaml(parent, redact.redact(_search_spec(plan)), tracking.SEARCH_SPEC_ARTIFACT)
    callback = tracking.MLflowTrialCallback(
        tracker=tracker, parent_run_id=parent, template=plan.template, sweep_name=sweep_name,
        flush_every_s=float(config["tracking"]["flush_every_s"]),
        log_rllib_metrics=bool(config["tracking"]["log_rllib_metrics"]),
        mutable_keys=_mutable_keys(plan),
    )
    callback.attach(tracker, guard)
    try:
        _write_sweep_state(tune_path, plan, tracker.spool_dir)
        tuner = tune.Tuner(
            _trainable(plan),
            param_space=plan.search.param_space,
            tune_config=tune.TuneConfig(
                search_alg=plan.search.search_alg,
                scheduler=plan.search.scheduler,
                num_samples=plan.search.num_samples,
                max_concurrent_trials=config["search"].get("max_concurrent_trials"),
                # A finished trial's actor runs the next one (same resources): no new
                # worker process, imports and fitted metrics already there.
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=run_name,
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
    except BaseException:
        tracker.end_run(parent, tracking.FAILED)
        guard.restore()
        raise
    return fit_and_record(tuner, plan=plan, tracker=tracker, parent=parent, callback=callback, guard=guard)


def fit_and_record(tuner: Any, *, plan: SweepPlan, tracker: Any, parent: Optional[str], callback: Any,
                   guard: Any) -> SweepResult:
    """Runs ``tuner.fit()`` and closes every run with what really happened.

    Shared by a new sweep and ``qeu-tune resume``. An interrupt leaves the parent and the
    unfinished trials KILLED (the parent tagged ``qeu.interrupted``); a finished sweep gets
    the end-of-sweep report and the best configuration by the report's ranking rule.
    """
    from qeu_tune import tracking

    status = tracking.FAILED
    result: Optional[SweepResult] = None
    _warm_report_imports()
    try:
        with pending_trials_limit(plan, _cluster_cpus()):
            results = tuner.fit()
        if guard.received is not None:  # Tune swallowed the signal and returned normally
            raise KeyboardInterrupt
        num_errors = len(results.errors)
        if num_errors < len(results) or len(results) == 0:
            status = tracking.FINISHED
        callback.close_open_runs(tracking.KILLED)
        report = _log_report(plan.tracking_uri, tracker, parent) if parent is not None else None
        best = _best(callback, plan.config, report)
        if best is not None:
            tracker.set_tags(parent, {"qeu.best_run_id": best["run_id"] or "", "qeu.best_config": best["label"]})
        result = SweepResult(
            parent_run_id=tracker.resolve(parent), tracking_uri=plan.tracking_uri,
            experiment_id=tracker.experiment_id, num_trials=len(results), num_errors=num_errors,
            best=best, status=status, report=report,
        )
    except KeyboardInterrupt:
        status = tracking.KILLED
        callback.close_open_runs(tracking.KILLED)
        tracker.set_tags(parent, {tracking.TAG_INTERRUPTED: guard.signal_name or "SIGINT"})
        result = SweepResult(
            parent_run_id=tracker.resolve(parent), tracking_uri=plan.tracking_uri,
            experiment_id=tracker.experiment_id, num_trials=len(callback.records),
            num_errors=callback.ended_with(tracking.FAILED), best=None, status=status,
            interrupted=guard.signal_name or "SIGINT", exit_code=guard.exit_code or 130,
        )
    except BaseException:
        callback.close_open_runs(tracking.FAILED)
        raise
    finally:
        callback.close_open_runs(tracking.KILLED)
        tracker.end_run(parent, status)
        synced = tracker.close()
        guard.restore()
    if not synced:  # the tracker is down (or offline): the points wait in the spool
        result.spool = str(tracker.spool_dir)
        result.parent_run_id = result.parent_run_id or parent
    return result


PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"  # Tune's own knob, read when fit() starts


@contextmanager
def pending_trials_limit(plan: SweepPlan, cluster_cpus: float) -> Iterator[Optional[int]]:
    """Lets Tune start as many trials at once as the cluster has room for.

    With a searcher (random, TPE) Tune keeps only one trial pending, so the first wave's
    actors start one after another, each once the previous one has started (~1.5 s each,
    measured on 2 cores; by that rate a 32-CPU cluster's last slot would fill ~45 s late). Allowing
    as many pending trials as there are trial slots starts them together; the searcher
    then suggests at most that many configurations ahead of the results. Grid and PBT use
    Tune's variant generator, which already allows many; a value the user set in the
    environment is kept.
    """
    if plan.search.search_alg is None or PENDING_TRIALS_ENV in os.environ:
        yield None
        return
    from qeu_tune.trainable import trial_resources

    per_trial = trial_resources(plan.config).required_resources.get("CPU", 1) or 1
    slots = max(1, int(cluster_cpus // per_trial))
    cap = plan.config["search"].get("max_concurrent_trials")
    limit = min(slots, int(cap)) if cap else slots
    os.environ[PENDING_TRIALS_ENV] = str(limit)
    try:
        yield limit
    finally:
        os.environ.pop(PENDING_TRIALS_ENV, None)


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


@functools.cache  # once per process: a resumed sweep may call it again
def _warm_report_imports() -> None:
    """Imports the end-of-sweep report's modules (pandas, scipy, matplotlib) in the background.

    A daemon thread, started once per process: the ~1 s of imports overlaps ``ray.init``
    (a new sweep) or the trials (``resume``) instead of delaying the sweep's end.
    """
    import threading

    def _import() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")  # what analysis.write_plots uses; no display needed
            import matplotlib.pyplot  # noqa: F401

            import qeu_tune.analysis  # noqa: F401
        except Exception:  # noqa: BLE001 - only a head start; the report imports again
            pass

    threading.Thread(target=_import, name="qeu-warm-report-imports", daemon=True).start()


def _quiet_tune() -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table shows our columns
    # Frequent trial checkpoints (PBT, checkpoint_every=1) are intended, not a bottleneck.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _tracker(plan: SweepPlan) -> Any:
    from qeu_tune import tracking

    tracking_cfg = plan.config["tracking"]
    return tracking.Tracker(tracking_uri=plan.tracking_uri, experiment=tracking_cfg["experiment"],
                            mode=tracking_cfg.get("mode", "online"))


def _trainable(plan: SweepPlan) -> Any:
    from ray import tune

    from qeu_tune.trainable import register_env, train_trial, trial_resources

    register_env()
    # Each reward metric is fitted once per sweep, here on the driver (plan_sweep fitted
    # them while validating), and shipped once through the object store (with_parameters).
    fitted = _fitted_metrics(plan)
    return tune.with_resources(
        tune.with_parameters(train_trial, template=plan.template, fitted=fitted), trial_resources(plan.config)
    )


def _fitted_metrics(plan: SweepPlan) -> Dict[str, Any]:
    from qeu_tune.reward import fitted_metrics

    rewards = [plan.config.get("reward"), *plan.template.group_options.get("reward", {}).values()]
    try:
        return fitted_metrics(rewards)
    except ValueError as err:  # validated already; a trial that needs it reports the error
        log.warning("reward metrics not fitted on the driver (each trial fits its own): %s", err)
        return {}


def _trial_name(trial: Any) -> str:
    return str(trial.trial_id)


def _mutable_keys(plan: SweepPlan) -> List[str]:
    """Hyperparameters PBT may change mid-trial (the others are fixed per trial)."""
    if plan.config["scheduler"]["name"] != "pbt":
        return []
    return [d.key for d in plan.search.dimensions if d.kind != "const" and d.key != "seed"]


def _search_spec(plan: SweepPlan) -> Dict[str, Any]:
    config = plan.config
    return {"space": config["search"].get("space"), "when": config["search"].get("when"),
            "algorithm": config["search"]["algorithm"], "num_samples": config["search"]["num_samples"],
            "num_seeds": config["search"]["num_seeds"], "seed": config["search"]["seed"],
            "scheduler": config["scheduler"], "overrides": plan.overrides}


def _write_sweep_state(tune_path: str, plan: SweepPlan, spool_dir: Path) -> None:
    """The validated config and overrides, next to Tune's own state (trusted storage).

    ``resume`` re-plans from this file rather than from MLflow, whose copy is redacted.
    """
    import yaml
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(tune_path if "://" in tune_path else Path(tune_path).as_uri())
    filesystem.create_dir(path, recursive=True)
    body = yaml.safe_dump({"config": plan.config, "overrides": plan.overrides, "spool_dir": str(spool_dir)},
                          sort_keys=False)
    with filesystem.open_output_stream(f"{path}/{SWEEP_STATE_FILE}") as out:
        out.write(body.encode())


def read_sweep_state(tune_path: str) -> Dict[str, Any]:
    """Reads what ``_write_sweep_state`` wrote (plain YAML, never unpickled)."""
    import yaml
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(tune_path if "://" in tune_path else Path(tune_path).as_uri())
    try:
        with filesystem.open_input_stream(f"{path}/{SWEEP_STATE_FILE}") as stream:
            return yaml.safe_load(stream.read().decode())
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(
            f"the sweep's Tune state is not at {tune_path} ({err}); resume needs the "
            "cluster.storage_path the sweep ran with, reachable from this machine."
        ) from None


def _log_report(tracking_uri: str, tracker: Any, parent_run_id: str) -> Any:
    """The comparison report as artifacts of the parent run; a failure is only a warning."""
    from qeu_tune.analysis import report_sweep_end

    if not tracker.flush(timeout_s=60):
        log.warning("MLflow did not take every point yet; the end-of-sweep report is skipped "
                    "(run `qeu-tune report` after `qeu-tune sync`).")
        return None
    run_id = tracker.resolve(parent_run_id)
    try:
        return report_sweep_end(tracking_uri, run_id)
    except Exception as err:  # noqa: BLE001 - the sweep's runs are recorded either way
        log.warning("could not write the sweep report to run %s: %s", run_id, err)
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


def _best(callback: Any, config: Mapping[str, Any], report: Any) -> Optional[Dict[str, Any]]:
    """The winner by the report's rule (IQM over seeds of the ranking statistic).

    Beside it, ``last``: the single trial with the best last value of ``search.metric``
    (what Tune's searchers see), labelled as such when printed.
    """
    metric, mode = config["search"]["metric"], config["search"]["mode"]
    last_value, last_trial = None, None
    for trial_id, record in callback.records.items():
        values = [p.get(metric) for p in record.history if p.get(metric) is not None and not math.isnan(p[metric])]
        if values and (last_value is None or (values[-1] > last_value if mode == "max" else values[-1] < last_value)):
            last_value, last_trial = values[-1], trial_id
    last = None
    if last_trial is not None:
        record = callback.records[last_trial]
        last = {"trial_id": last_trial, "run_id": record.run_id, "metric": metric, "value": last_value,
                "description": describe(record.values)}
    if report is None or report.ranked.empty:
        return None if last is None else {"label": last["description"] or "base config", "by": None,
                                          "value": None, "run_id": last["run_id"], "last": last}
    from qeu_tune.analysis import best_configuration_row

    return {**best_configuration_row(report), "last": last}
