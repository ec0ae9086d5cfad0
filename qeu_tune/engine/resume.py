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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from qeu_tune.analysis.runs import child_runs, client_for, find_run
from qeu_tune.core import names, redact, tags
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.secrets import restore_env_forms, tracking_uri_for_resume
from qeu_tune.core.tags import HPARAM_PREFIX, TAG_CHECKPOINT_LOST, TAG_ORPHANED, TAG_RESUMED, TAG_RUN_KEY
from qeu_tune.engine import startup
from qeu_tune.engine.callback import MLflowTrialCallback
from qeu_tune.engine.interrupts import InterruptGuard
from qeu_tune.engine.plan import plan_sweep
from qeu_tune.engine.run import fit_and_record, trainable_for
from qeu_tune.engine.sweep_state import read_sweep_state
from qeu_tune.engine.trainable import PROGRESS_FILE
from qeu_tune.tracking.sync import sync_spool

log = logging.getLogger(__name__)


def resume_sweep(tracking_uri: str, ref: str, *, restart_errored: bool = False) -> Any:
    """Continues a sweep recorded in MLflow; returns a ``SweepResult``.

    Args:
        tracking_uri: Where the sweep is recorded (with its password, if it has one).
        ref: Its parent run id or sweep name.
        restart_errored: Also retry trials that had failed, from their last checkpoint.

    Raises:
        ConfigError: Unknown sweep, a sweep that has nothing left to run, Tune state
            that cannot be reached from this machine, or a secret that is neither given
            again nor in the environment variable the recorded config names.
    """
    from ray import tune

    client = client_for(tracking_uri)
    parent = find_run(client, ref)
    parent_tags = parent.data.tags
    if parent_tags.get(tags.TAG_KIND) != "sweep":
        raise ConfigError(
            f"run {parent.info.run_id} is not a sweep's parent run; pass the parent run id or sweep name."
        )
    tune_path = parent_tags.get(tags.TAG_TUNE_PATH)
    if not tune_path:
        raise ConfigError(
            f"sweep {ref!r} was recorded without its Tune state path (qeu-tune < 0.2); it cannot be resumed."
        )
    if parent.info.status == tags.FINISHED and not restart_errored:
        raise ConfigError(
            f"sweep {ref!r} (run {parent.info.run_id}) already FINISHED; nothing to resume. "
            "Use --restart-errored to rerun its failed trials, or `qeu-tune rerun` for new seeds."
        )
    state = read_sweep_state(tune_path)
    config = state["config"]  # recorded without secrets: they come back from the user, before anything runs
    what = f"sweep {ref!r}"
    tracking_uri = tracking_uri_for_resume(tracking_uri, config["tracking"].get("uri"), what)
    config["tracking"]["uri"] = tracking_uri
    config = restore_env_forms(config, what)
    _sync_leftovers(state.get("spool_dir"), tracking_uri)  # a killed driver's unsent points first
    # The searched groups' options as composed at the start, not from today's config directories
    # (None: recorded by an older qeu-tune, composed again).
    options = state.get("group_options")
    options = restore_env_forms(options, what) if options is not None else None
    plan = plan_sweep(config, state.get("overrides") or [], recorded_options=options)

    redact.register_config(config, tracking_uri)  # as in run_sweep: nothing secret is recorded or printed
    redact.protect_console(tracking_uri)
    startup.quiet_tune()
    startup.init_ray(config["cluster"], int(config.get("verbose", 1)))
    guard = InterruptGuard()
    guard.install()
    tracker = startup.open_tracker(plan)
    parent_id = parent.info.run_id
    try:
        # Failed trials go on from their last checkpoint (same run, no repeated steps).
        tuner = tune.Tuner.restore(
            tune_path,
            trainable=trainable_for(plan),
            resume_unfinished=True,
            resume_errored=restart_errored,
        )
        callback = _tracking_callback(tuner)
    except BaseException:
        tracker.close()
        guard.restore()
        raise
    resumed = int(parent_tags.get(TAG_RESUMED, "0") or 0) + 1
    tracker.reopen_run(parent_id)
    tracker.set_tags(parent_id, {TAG_RESUMED: str(resumed), tags.TAG_INTERRUPTED: ""})
    callback.attach(tracker, guard, on_resume=lambda cb, trials: reconcile(client, cb, parent_id, trials))
    print(f"Resuming sweep {parent_tags.get(tags.TAG_SWEEP)} (parent run {parent_id}) from {tune_path}")
    return fit_and_record(tuner, plan=plan, tracker=tracker, parent=parent_id, callback=callback, guard=guard)


def _sync_leftovers(spool_dir: Any, tracking_uri: str) -> None:
    from pathlib import Path

    if spool_dir and Path(spool_dir).exists():
        summary = sync_spool(spool_dir, tracking_uri)
        if summary["errors"]:
            raise ConfigError(
                f"could not upload the interrupted sweep's unsent points from {spool_dir} to {tracking_uri}; "
                "is the tracking server up? Run `qeu-tune sync` once it is, then resume."
            )


def _tracking_callback(tuner: Any) -> Any:
    """The sweep's own callback, as ``Tuner.restore`` unpickled it with the run config."""

    run_config = tuner._local_tuner.get_run_config()  # no public accessor in Ray 2.60
    for callback in run_config.callbacks or []:
        if isinstance(callback, MLflowTrialCallback):
            return callback
    raise ConfigError("the restored Tune experiment has no qeu-tune tracking callback; it was not started by qeu-tune.")


def reconcile(client: Any, callback: Any, parent_id: str, trials: Sequence[Any]) -> None:
    """Brings the callback's restored records in line with what MLflow holds, and the
    restored trials in line with the checkpoints still on storage.

    Called once Tune has restored the trials and the callback's state, before any trial runs again.
    """

    children = list(child_runs(client, client.get_run(parent_id).info.experiment_id, parent_id))

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
            callback.tracker.set_tags(
                run.info.run_id, {TAG_ORPHANED: "not in Tune's saved state; rerun as a new trial"}
            )
            callback.tracker.end_run(run.info.run_id, tags.KILLED)
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
            callback.tracker.end_run(record.run_id, record.status or tags.KILLED)
    for trial in trials:
        record = callback.records.get(trial.trial_id)
        note = repair_lost_checkpoint(trial, record)
        if note:
            log.warning("trial %s: %s", trial.trial_id, note)
            if record is not None:
                callback.tracker.set_tags(record.run_id, {TAG_CHECKPOINT_LOST: note})


def repair_lost_checkpoint(trial: Any, record: Any) -> Optional[str]:
    """Points a restored trial whose checkpoint is gone at one that exists; says what it did.

    Tune deletes a trial's oldest kept checkpoint (``num_to_keep``) when it registers a new
    one, but saves its experiment state only later: a driver killed in between leaves a
    state naming a deleted checkpoint, and Tune's restore then fails on every retry. The
    trial goes on from its newest checkpoint that exists and is not past the iterations
    MLflow holds (so its history has no gap), or from scratch (the iterations already
    recorded are not logged again). Returns None when the checkpoint is there.
    """
    from ray.tune import Checkpoint
    from ray.tune.experiment import Trial

    lost = trial.checkpoint
    if trial.status != Trial.PENDING or lost is None or _exists(lost.filesystem, lost.path):  # PENDING: to run
        return None
    fs, trial_dir = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    existing = _checkpoint_dirs(fs, trial_dir)
    logged = record.last_iteration if record is not None else -1
    usable = []
    for index, path in existing:
        progress = _progress(fs, path)
        if progress is not None and 0 < int(progress.get(names.ITERATION, 0)) <= logged:
            usable.append((index, path, progress))
    manager = trial.run_metadata.checkpoint_manager  # Tune has no public API for this (Ray 2.60)
    if usable:
        _, path, progress = max(usable)
        from ray.train._internal.session import _TrainingResult

        iteration = int(progress[names.ITERATION])
        metrics = {**progress, "training_iteration": iteration, "time_total_s": progress.get(names.TIME_TOTAL_S, 0.0)}
        result = _TrainingResult(checkpoint=Checkpoint(path, filesystem=fs), metrics=metrics)
        manager._latest_checkpoint_result, manager._checkpoint_results = result, [result]
        note = f"resumed from {Path(path).name} (iteration {iteration})"
    else:
        manager._latest_checkpoint_result, manager._checkpoint_results = None, []
        note = "restarted from scratch (no usable checkpoint); iterations already recorded are not logged again"
    # New checkpoints go after every directory there, never over the one restored from.
    trial.storage.current_checkpoint_index = max((i for i, _ in existing), default=-1) + 1
    trial.invalidate_json_state()
    trial.run_metadata.invalidate_cache()
    return f"its checkpoint {Path(lost.path).name} was deleted before the driver was killed; {note}"


def _exists(fs: Any, path: str) -> bool:
    from pyarrow.fs import FileType

    return fs.get_file_info(path).type != FileType.NotFound


def _checkpoint_dirs(fs: Any, trial_dir: str) -> List[Tuple[int, str]]:
    from pyarrow.fs import FileSelector, FileType

    found = []
    for info in fs.get_file_info(FileSelector(trial_dir, allow_not_found=True)):
        name = info.base_name
        if info.type == FileType.Directory and name.startswith("checkpoint_") and name[11:].isdigit():
            found.append((int(name[11:]), info.path))
    return sorted(found)


def _progress(fs: Any, checkpoint_dir: str) -> Optional[Dict[str, float]]:
    """The checkpoint's counters (``qeu_tune.engine.trainable``), or None if it is incomplete."""
    import json

    try:
        with fs.open_input_stream(f"{checkpoint_dir}/{PROGRESS_FILE}") as stream:
            return json.loads(stream.readall())
    except (OSError, ValueError):
        return None


def _max_step(client: Any, run_id: str) -> int:
    history = client.get_metric_history(run_id, names.ENV_STEPS)
    return max((int(m.step) for m in history), default=-1)


def _history(client: Any, run: Any) -> List[Dict[str, float]]:
    """The per-step metric dicts the callback keeps, read back from MLflow."""

    by_step: Dict[int, Dict[str, float]] = {}
    for key in run.data.metrics:
        if key.startswith((names.CONV_PREFIX, HPARAM_PREFIX)):
            continue  # derived, recomputed from the rest
        for point in client.get_metric_history(run.info.run_id, key):
            by_step.setdefault(int(point.step), {})[key] = float(point.value)
    return [by_step[step] for step in sorted(by_step)]
