"""``qeu-tune resume SWEEP``: continue an interrupted or killed sweep into the same MLflow runs.

Tune restores its own experiment state (trials, searcher, scheduler, checkpoints) and
the tracking callback's records (run ids, histories, last logged step) through
``Tuner.restore``. What Tune's last snapshot may not know is reconciled from MLflow
before any trial runs again: points logged after the snapshot (so nothing is logged
twice), runs left RUNNING by a killed driver, and runs of trials the snapshot never
saw (Tune starts those trials afresh, so their first runs are removed).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List

from qeu_tune import names
from qeu_tune.config.errors import ConfigError

log = logging.getLogger(__name__)

TAG_RESUMED = "qeu.resumed"  # how many times the sweep was resumed
TAG_ORPHANED = "qeu.orphaned"


def resume_sweep(tracking_uri: str, ref: str, *, restart_errored: bool = False) -> Any:
    """Continues a sweep recorded in MLflow; returns a ``SweepResult``.

    Args:
        tracking_uri: Where the sweep is recorded.
        ref: Its parent run id or sweep name.
        restart_errored: Also retry trials that had failed, from their last checkpoint.

    Raises:
        ConfigError: Unknown sweep, a sweep that has nothing left to run, or Tune state
            that cannot be reached from this machine.
    """
    from ray import tune

    from qeu_tune import sweep, tracking
    from qeu_tune.interrupts import InterruptGuard
    from qeu_tune.runs import client_for, find_run

    client = client_for(tracking_uri)
    parent = find_run(client, ref)
    tags = parent.data.tags
    if tags.get(tracking.TAG_KIND) != "sweep":
        raise ConfigError(f"run {parent.info.run_id} is not a sweep's parent run; pass the parent run id or sweep name.")
    tune_path = tags.get(tracking.TAG_TUNE_PATH)
    if not tune_path:
        raise ConfigError(f"sweep {ref!r} was recorded without its Tune state path (qeu-tune < 0.2); it cannot be resumed.")
    if parent.info.status == tracking.FINISHED and not restart_errored:
        raise ConfigError(
            f"sweep {ref!r} (run {parent.info.run_id}) already FINISHED; nothing to resume. "
            "Use --restart-errored to rerun its failed trials, or `qeu-tune rerun` for new seeds."
        )
    state = sweep.read_sweep_state(tune_path)
    _sync_leftovers(state.get("spool_dir"), tracking_uri)  # a killed driver's unsent points first
    config = state["config"]
    config["tracking"]["uri"] = tracking_uri  # the recorded copy may be redacted
    plan = sweep.plan_sweep(config, state.get("overrides") or [])
    from qeu_tune import redact

    redact.register_config(config, tracking_uri)  # as in run_sweep: nothing secret is recorded or printed
    redact.protect_console(tracking_uri)
    sweep._quiet_tune()
    sweep._init_ray(config["cluster"], int(config.get("verbose", 1)))
    guard = InterruptGuard()
    guard.install()
    tracker = sweep._tracker(plan)
    parent_id = parent.info.run_id
    try:
        # Failed trials go on from their last checkpoint (same run, no repeated steps).
        tuner = tune.Tuner.restore(
            tune_path, trainable=sweep._trainable(plan), resume_unfinished=True, resume_errored=restart_errored,
        )
        callback = _tracking_callback(tuner)
    except BaseException:
        tracker.close()
        guard.restore()
        raise
    resumed = int(tags.get(TAG_RESUMED, "0") or 0) + 1
    tracker.reopen_run(parent_id)
    tracker.set_tags(parent_id, {TAG_RESUMED: str(resumed), tracking.TAG_INTERRUPTED: ""})
    callback.attach(tracker, guard, on_setup=lambda cb: reconcile(client, cb, parent_id))
    print(f"Resuming sweep {tags.get(tracking.TAG_SWEEP)} (parent run {parent_id}) from {tune_path}")
    return sweep.fit_and_record(tuner, plan=plan, tracker=tracker, parent=parent_id, callback=callback, guard=guard)


def _sync_leftovers(spool_dir: Any, tracking_uri: str) -> None:
    from pathlib import Path

    from qeu_tune.journal import sync_spool

    if spool_dir and Path(spool_dir).exists():
        summary = sync_spool(spool_dir, tracking_uri)
        if summary["errors"]:
            raise ConfigError(
                f"could not upload the interrupted sweep's unsent points from {spool_dir} to {tracking_uri}; "
                "is the tracking server up? Run `qeu-tune sync` once it is, then resume."
            )


def _tracking_callback(tuner: Any) -> Any:
    """The sweep's own callback, as ``Tuner.restore`` unpickled it with the run config."""
    from qeu_tune.tracking import MLflowTrialCallback

    run_config = tuner._local_tuner.get_run_config()  # no public accessor in Ray 2.60
    for callback in run_config.callbacks or []:
        if isinstance(callback, MLflowTrialCallback):
            return callback
    raise ConfigError("the restored Tune experiment has no qeu-tune tracking callback; it was not started by qeu-tune.")


def reconcile(client: Any, callback: Any, parent_id: str) -> None:
    """Brings the callback's restored records in line with what MLflow holds.

    Called once Tune has restored the callback's state, before any trial runs again.
    """
    from qeu_tune import tracking

    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id],
        filter_string=f"tags.`{tracking.TAG_PARENT}` = '{parent_id}'", max_results=10000,
    )
    from qeu_tune.journal import TAG_RUN_KEY

    # Records hold the run keys the tracker handed out; MLflow runs carry them as a tag.
    by_ref = {}
    for run in children:
        by_ref[run.info.run_id] = run
        if run.data.tags.get(TAG_RUN_KEY):
            by_ref[run.data.tags[TAG_RUN_KEY]] = run
    known = {by_ref[r.run_id].info.run_id for r in callback.records.values() if r.run_id in by_ref}
    for run in children:
        if run.info.run_id not in known and run.data.tags.get(TAG_ORPHANED) is None:
            # Started after Tune's last snapshot: Tune runs that trial again under a new run.
            callback.tracker.set_tags(run.info.run_id, {TAG_ORPHANED: "not in Tune's saved state; rerun as a new trial"})
            callback.tracker.end_run(run.info.run_id, tracking.KILLED)
            callback.tracker.delete_run(run.info.run_id)
    for record in callback.records.values():
        run = by_ref.get(record.run_id)
        if run is None:
            continue
        logged = _max_step(client, run.info.run_id)
        if logged > record.last_step:  # points logged after Tune's last snapshot
            record.history = _history(client, run)
            record.last_step = logged
            record.last_iteration = max(int(p.get(names.ITERATION, -1)) for p in record.history)
        if record.ended and run.info.status == "RUNNING":  # killed before its status was written
            callback.tracker.end_run(record.run_id, record.status or tracking.KILLED)


def _max_step(client: Any, run_id: str) -> int:
    history = client.get_metric_history(run_id, names.ENV_STEPS)
    return max((int(m.step) for m in history), default=-1)


def _history(client: Any, run: Any) -> List[Dict[str, float]]:
    """The per-step metric dicts the callback keeps, read back from MLflow."""
    from qeu_tune.tracking import HPARAM_PREFIX

    by_step: Dict[int, Dict[str, float]] = {}
    for key in run.data.metrics:
        if key.startswith((names.CONV_PREFIX, HPARAM_PREFIX)):
            continue  # derived, recomputed from the rest
        for point in client.get_metric_history(run.info.run_id, key):
            by_step.setdefault(int(point.step), {})[key] = float(point.value)
    return [by_step[step] for step in sorted(by_step)]
