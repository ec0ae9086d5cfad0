"""Run a planned sweep on Ray Tune and record it in MLflow.

``run_sweep`` starts (or joins) Ray, opens the parent run, runs ``Tuner.fit`` and closes every
run with its real status; ``fit_and_record`` is shared with ``qeu-tune resume``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from qeu_tune.analysis import best_configuration_row, report_sweep_end
from qeu_tune.config.trial import TRIAL_SECTIONS, describe, redacted_template
from qeu_tune.core import names, redact, tags
from qeu_tune.core.paths import CONF_DIR
from qeu_tune.engine import startup
from qeu_tune.engine.callback import MLflowTrialCallback
from qeu_tune.engine.interrupts import InterruptGuard
from qeu_tune.engine.plan import SweepPlan
from qeu_tune.engine.progress import make_progress_reporter, total_trials
from qeu_tune.engine.sweep_state import write_sweep_state
from qeu_tune.engine.trainable import register_env, train_trial, trial_resources
from qeu_tune.engine.tune_env import file_loggers, no_tensorboard_files, pending_trials_limit
from qeu_tune.reward import fitted_metrics
from qeu_tune.tracking.tracker import flatten_params, sweep_tags

log = logging.getLogger(__name__)


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

    config = plan.config
    verbose = int(config.get("verbose", 1))
    startup.quiet_tune()
    redact.register_config(config, plan.tracking_uri)  # what is recorded or printed: ***
    redact.protect_console(plan.tracking_uri)
    # MLflow's import and store (~1.5-2 s of driver CPU) run while ray.init waits ~4 s for
    # Ray's daemons (the driver is idle then). The tracker opens the experiment and its
    # journal only; the parent run is created below, once Ray is up.
    opening = startup.start_in_background(lambda: startup.open_tracker_warm_tune(plan), name="qeu-open-tracker")
    try:
        startup.init_ray(config["cluster"], verbose)  # main thread: Ray's SIGTERM handler; before any MLflow run
    except BaseException:
        startup.discard_tracker(opening)
        raise
    guard = InterruptGuard()
    guard.install()  # after ray.init, which installs its own SIGTERM handler
    try:
        tracker = opening.result()  # MLflow unreachable: its ConfigError, as before
    except BaseException:  # also Ctrl-C while waiting: a tracker that comes later is closed
        startup.discard_tracker(opening)
        guard.restore()
        raise
    sweep_name = str(config["sweep_name"])
    run_name = f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tune_path = f"{plan.storage_path.rstrip('/')}/{run_name}"
    parent = tracker.create_run(
        run_name=redact.redact(run_name),
        tags=redact.redact(
            {
                **sweep_tags(
                    sweep_name=sweep_name, command=command, source_dir=CONF_DIR.parent, extra=config.get("tags") or {}
                ),
                tags.TAG_TUNE_PATH: tune_path,
            }
        ),
    )
    tracker.log_params(parent, redact.redact(flatten_params(_sweep_params(config))))
    tracker.log_dict_yaml(parent, redact.redact(config), tags.SWEEP_CONFIG_ARTIFACT)
    tracker.log_dict_yaml(parent, redact.redact(_search_spec(plan)), tags.SEARCH_SPEC_ARTIFACT)
    callback = MLflowTrialCallback(  # pickled by Tune with its template and records: no secrets in them
        tracker=tracker,
        parent_run_id=parent,
        template=redacted_template(plan.template),
        sweep_name=sweep_name,
        flush_every_s=float(config["tracking"]["flush_every_s"]),
        conv_every_s=float(config["tracking"]["conv_every_s"]),
        log_rllib_metrics=bool(config["tracking"]["log_rllib_metrics"]),
        mutable_keys=_mutable_keys(plan),
    )
    callback.attach(tracker, guard)
    try:
        write_sweep_state(tune_path, plan, tracker.spool_dir)
        tuner = tune.Tuner(
            trainable_for(plan),
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
                callbacks=[callback, *file_loggers()],
                progress_reporter=_progress_reporter(plan) if verbose >= 1 else None,
                verbose=1 if verbose >= 1 else 0,
                failure_config=tune.FailureConfig(max_failures=int(config.get("max_failures", 0))),
                # Every checkpoint is kept (a trial makes stop / checkpoint_every of them). With
                # num_to_keep set, Tune writes the whole experiment state (every trial's, so
                # O(trials)) each time a trial has made that many checkpoints since the last
                # snapshot: with 2 kept, once per trial, and a 1,000-trial sweep spent most of its
                # driver time there (docs/benchmarks.md, scale). PBT needs old checkpoints anyway.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            ),
        )
    except BaseException:
        tracker.end_run(parent, tags.FAILED)
        guard.restore()
        raise
    return fit_and_record(tuner, plan=plan, tracker=tracker, parent=parent, callback=callback, guard=guard)


def fit_and_record(
    tuner: Any, *, plan: SweepPlan, tracker: Any, parent: Optional[str], callback: Any, guard: Any
) -> SweepResult:
    """Runs ``tuner.fit()`` and closes every run with what really happened.

    Shared by a new sweep and ``qeu-tune resume``. An interrupt leaves the parent and the
    unfinished trials KILLED (the parent tagged ``qeu.interrupted``); a finished sweep gets
    the end-of-sweep report and the best configuration by the report's ranking rule.
    """

    status = tags.FAILED
    result: Optional[SweepResult] = None
    startup.warm_report_imports()
    try:
        with pending_trials_limit(plan, startup.cluster_cpus()), no_tensorboard_files():
            results = tuner.fit()
        if guard.received is not None:  # Tune swallowed the signal and returned normally
            raise KeyboardInterrupt
        num_errors = len(results.errors)
        if num_errors < len(results) or len(results) == 0:
            status = tags.FINISHED
        callback.close_open_runs(tags.KILLED)
        report = _log_report(plan.tracking_uri, tracker, parent) if parent is not None else None
        best = _best(callback, plan.config, report)
        if best is not None:
            tracker.set_tags(parent, {"qeu.best_run_id": best["run_id"] or "", "qeu.best_config": best["label"]})
        result = SweepResult(
            parent_run_id=tracker.resolve(parent),
            tracking_uri=plan.tracking_uri,
            experiment_id=tracker.experiment_id,
            num_trials=len(results),
            num_errors=num_errors,
            best=best,
            status=status,
            report=report,
        )
    except KeyboardInterrupt:
        status = tags.KILLED
        callback.close_open_runs(tags.KILLED)
        tracker.set_tags(parent, {tags.TAG_INTERRUPTED: guard.signal_name or "SIGINT"})
        result = SweepResult(
            parent_run_id=tracker.resolve(parent),
            tracking_uri=plan.tracking_uri,
            experiment_id=tracker.experiment_id,
            num_trials=len(callback.records),
            num_errors=callback.ended_with(tags.FAILED),
            best=None,
            status=status,
            interrupted=guard.signal_name or "SIGINT",
            exit_code=guard.exit_code or 130,
        )
    except BaseException:
        callback.close_open_runs(tags.FAILED)
        raise
    finally:
        callback.close_open_runs(tags.KILLED)
        tracker.end_run(parent, status)
        synced = tracker.close()
        guard.restore()
    if not synced:  # the tracker is down (or offline): the points wait in the spool
        result.spool = str(tracker.spool_dir)
        result.parent_run_id = result.parent_run_id or parent
    return result


def _progress_reporter(plan: SweepPlan) -> Any:

    keys = [d.key for d in plan.search.dimensions if d.kind != "const"]
    return make_progress_reporter(  # Tune's CLIReporter + a trials/env-steps/ETA line
        total=total_trials(plan.search.param_space, plan.search.num_samples),
        steps_per_trial=int(plan.config["stop"]["env_steps"]),
        steps_key=names.ENV_STEPS,
        error_table=int(plan.config.get("verbose", 1)) >= 2,  # else one line per retry/failure (engine/failures.py)
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


def trainable_for(plan: SweepPlan) -> Any:
    from ray import tune

    register_env()
    # Each reward metric is fitted once per sweep, here on the driver (plan_sweep fitted
    # them while validating), and shipped once through the object store (with_parameters).
    fitted = _fitted_metrics(plan)
    template = redacted_template(plan.template, keep=TRIAL_SECTIONS)
    return tune.with_resources(
        tune.with_parameters(train_trial, template=template, fitted=fitted), trial_resources(plan.config)
    )


def _fitted_metrics(plan: SweepPlan) -> Dict[str, Any]:

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
    return {
        "space": config["search"].get("space"),
        "when": config["search"].get("when"),
        "algorithm": config["search"]["algorithm"],
        "num_samples": config["search"]["num_samples"],
        "num_seeds": config["search"]["num_seeds"],
        "seed": config["search"]["seed"],
        "scheduler": config["scheduler"],
        "overrides": plan.overrides,
    }


def _log_report(tracking_uri: str, tracker: Any, parent_run_id: str) -> Any:
    """The comparison report as artifacts of the parent run; a failure is only a warning."""

    if not tracker.flush(timeout_s=60):
        log.warning(
            "MLflow did not take every point yet; the end-of-sweep report is skipped "
            "(run `qeu-tune report` after `qeu-tune sync`)."
        )
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
        last = {
            "trial_id": last_trial,
            "run_id": record.run_id,
            "metric": metric,
            "value": last_value,
            "description": describe(record.values),
        }
    if report is None or report.ranked.empty:
        return (
            None
            if last is None
            else {
                "label": last["description"] or "base config",
                "by": None,
                "value": None,
                "run_id": last["run_id"],
                "last": last,
            }
        )

    return {**best_configuration_row(report), "last": last}
