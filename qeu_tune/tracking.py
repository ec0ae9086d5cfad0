"""MLflow tracking: the only module that writes to MLflow while a sweep runs.

One parent run per sweep; one nested child run per trial. ``Tracker`` journals every
call on disk and one writer thread applies the journal to MLflow (``qeu_tune.journal``):
the driver never waits for MLflow, an outage is retried, never dropped, and a tracker
failure becomes a warning, never a crashed trial or sweep. Metrics are buffered and written
with ``log_batch``; every run ends FINISHED, FAILED (with the error) or KILLED.
"""

from __future__ import annotations

import json
import re
import logging
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar

import yaml
from ray.tune import Callback

from qeu_tune import __version__, names
from qeu_tune.cluster import node_tags
from qeu_tune.redact import redact  # secrets never reach MLflow
from qeu_tune.trial_config import TrialTemplate, describe, resolve_trial_config, sampled_values, trained_with

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow limits (3.x): param values 6000 chars, keys 250, 100 params / 1000 metrics a batch.
MAX_PARAM_VALUE = 500  # shorter than MLflow's limit keeps the comparison views readable
MAX_KEY = 250
PARAM_BATCH = 100
METRIC_BATCH = 1000

# Tags, artifact paths and run statuses live in qeu_tune.tags (no Ray there); re-exported.
from qeu_tune.tags import (  # noqa: E402,F401
    TAG_PARENT,
    TAG_RUN_NAME,
    TAG_KIND,
    TAG_SWEEP,
    TAG_TRIAL_ID,
    TAG_ALGO,
    TAG_ENV,
    TAG_REWARD,
    TAG_SEED,
    TAG_CONFIG_KEY,
    TAG_ERROR,
    TAG_SKIPPED,
    TAG_RETRIES,
    TAG_PERTURBATIONS,
    TAG_INTERRUPTED,
    TAG_TUNE_PATH,
    HPARAM_PREFIX,
    RESOLVED_CONFIG_ARTIFACT,
    SWEEP_CONFIG_ARTIFACT,
    SEARCH_SPEC_ARTIFACT,
    FINISHED,
    FAILED,
    KILLED,
)


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """A flat, length-safe ``{dotted.key: str}`` view of a nested config for MLflow params.

    Example:
        >>> flatten_params({"algo": {"name": "ppo", "params": {"lr": 0.001}}})
        {'algo.name': 'ppo', 'algo.params.lr': '0.001'}
    """
    flat: Dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, path + "."))
            continue
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - 14] + "...[truncated]"
        flat[path[:MAX_KEY]] = text
    return flat


from qeu_tune.paths import artifact_location_for  # noqa: E402,F401 (moved; re-exported)


def git_commit(path: Path) -> Optional[str]:
    """The git commit of the source tree at ``path``, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def config_key(values: Mapping[str, Any]) -> str:
    """A stable key for one configuration: its sampled values without the seed."""
    kept = {k: v for k, v in sorted(values.items()) if k != "seed"}
    return json.dumps(kept, sort_keys=True, default=str)


class Tracker:
    """The sweep's tracking facade: journaled, non-blocking writes to MLflow.

    Every call appends one entry to the sweep's journal (``spool_dir``) and returns at once;
    one writer thread applies the journal to MLflow in order, retrying with backoff while
    MLflow is unreachable (see ``qeu_tune.journal``). Tracking never raises into the caller:
    a failure becomes one warning per kind. ``close`` at the end of the sweep; whatever did not
    reach MLflow stays in ``spool_dir`` for ``qeu-tune sync``.

    Args:
        tracking_uri: Resolved MLflow tracking URI.
        experiment: MLflow experiment name (created if missing; offline: by ``sync``).
        mode: ``online`` (write to MLflow as the sweep runs) or ``offline`` (journal only: no
            MLflow contact at all; upload later with ``qeu-tune sync``).
        spool_root: Parent of the spool directory (default ``$QEU_TUNE_HOME/spool``).
        queue_size: Journal lines held in memory for the writer; beyond that it re-reads the journal.
        keep_spool: Keep the spool directory even when everything reached MLflow.

    Raises:
        ConfigError: Online, when MLflow cannot be reached within ~10 s (or the experiment
            cannot be read or created).
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        mode: str = "online",
        spool_root: Optional[Path] = None,
        queue_size: int = 2000,
        keep_spool: bool = False,
    ) -> None:
        from qeu_tune import journal
        from qeu_tune.config.errors import ConfigError

        if mode not in journal.MODES:
            raise ConfigError(f"tracking.mode={mode!r} is not one of {', '.join(journal.MODES)}.")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.mode = mode
        self.keep_spool = keep_spool
        self._warned: set[str] = set()
        self.client: Any = None
        self.experiment_id: Optional[str] = None
        if mode == "online":
            from mlflow.tracking import MlflowClient

            try:
                self.client = MlflowClient(tracking_uri=tracking_uri)
                with journal.short_http_retries():  # fail fast, not after MLflow's ~4 minutes of retries
                    self.experiment_id = journal.ensure_experiment(self.client, experiment, tracking_uri)
            except Exception as err:  # noqa: BLE001 - one clear message instead of a stack of HTTP retries
                raise ConfigError(
                    f"Cannot reach MLflow at {tracking_uri} to open experiment {experiment!r} "
                    f"({type(err).__name__}: {str(err)[:300]}). Start the tracking server or fix tracking.uri, "
                    "or run without it with tracking.mode=offline (everything is journaled under "
                    f"{journal.spool_root()} and uploaded later with `qeu-tune sync`)."
                ) from err
        key = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.spool_dir = Path(spool_root or journal.spool_root()) / key
        try:
            self._spool = journal.Spool(
                self.spool_dir, tracking_uri=tracking_uri, experiment=experiment, mode=mode, client=self.client,
                experiment_id=self.experiment_id, warn=self.warn_once, queue_size=queue_size,
            )
        except OSError as err:
            raise ConfigError(
                f"Cannot create the tracking journal in {self.spool_dir} ({err}); every tracking call is "
                "journaled there first. Set QEU_TUNE_HOME to a writable directory with free space."
            ) from err

    def warn_once(self, what: str, message: str) -> None:
        """Logs one warning per kind of failure, not one per call."""
        try:
            if what not in self._warned:
                self._warned.add(what)
                log.warning(message)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            pass

    def _append(self, what: str, build: Callable[[], Dict[str, Any]]) -> None:
        try:
            self._spool.append(build())
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self.warn_once(what, f"tracking {what} failed ({type(err).__name__}: {err}); training continues.")

    def create_run(self, *, run_name: str, tags: Mapping[str, str]) -> Optional[str]:
        """Journals a new run; returns its run key at once (see ``resolve`` for the MLflow id).

        The key may be used wherever a run id goes, also as a tag value (``mlflow.parentRunId``):
        it is translated to the real run id when written.
        """
        from qeu_tune.journal import new_run_key

        key = new_run_key()
        self._append("create_run", lambda: {
            "op": "create_run", "run": key, "name": run_name, "time": int(time.time() * 1000),
            "tags": {TAG_RUN_NAME: run_name, **{str(k): str(v) for k, v in tags.items()}},
        })
        return key

    def log_params(self, run_id: Optional[str], params: Mapping[str, str]) -> None:
        if run_id is not None and params:
            self._append("log_params", lambda: {"op": "params", "run": run_id,
                                                "params": {str(k): str(v) for k, v in params.items()}})

    def set_tags(self, run_id: Optional[str], tags: Mapping[str, str]) -> None:
        if run_id is not None and tags:
            self._append("set_tags", lambda: {"op": "tags", "run": run_id,
                                              "tags": {str(k): str(v)[:5000] for k, v in tags.items()}})

    def log_metrics(self, run_id: Optional[str], metrics: List[Any]) -> None:
        """Journals ``mlflow.entities.Metric`` points; their timestamps are kept as reported, so a
        replayed point is an exact duplicate that MLflow skips."""
        if run_id is not None and metrics:
            self._append("log_metrics", lambda: {
                "op": "metrics", "run": run_id,
                "m": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
            })

    def log_text(self, run_id: Optional[str], text: str, artifact_file: str) -> None:
        if run_id is None:
            return

        def build() -> Dict[str, Any]:
            blob = self._spool.blob_dir() / Path(artifact_file).name
            blob.write_text(text)
            parent = str(Path(artifact_file).parent)
            return {"op": "artifact", "run": run_id, "blob": str(blob.relative_to(self.spool_dir)),
                    "path": None if parent in ("", ".") else parent}

        self._append("log_artifact", build)

    def log_dict_yaml(self, run_id: Optional[str], data: Any, artifact_file: str) -> None:
        self.log_text(run_id, yaml.safe_dump(data, sort_keys=False), artifact_file)

    def log_artifacts(self, run_id: Optional[str], local_dir: str, artifact_path: Optional[str] = None) -> None:
        """Copies ``local_dir`` into the spool now (it may change later) and journals the upload."""
        if run_id is None:
            return

        def build() -> Dict[str, Any]:
            import shutil

            blob = self._spool.blob_dir()
            shutil.copytree(local_dir, blob, dirs_exist_ok=True)
            return {"op": "artifacts", "run": run_id, "blob": str(blob.relative_to(self.spool_dir)),
                    "path": artifact_path}

        self._append("log_artifacts", build)

    def end_run(self, run_id: Optional[str], status: str) -> None:
        if run_id is not None:
            self._append("end_run", lambda: {"op": "end_run", "run": run_id, "status": status,
                                             "time": int(time.time() * 1000)})

    def reopen_run(self, run_id: Optional[str]) -> None:
        """Marks a KILLED or FAILED run RUNNING again (a resumed or retried trial)."""
        if run_id is not None:
            self._append("reopen_run", lambda: {"op": "reopen_run", "run": run_id})

    def delete_run(self, run_id: Optional[str]) -> None:
        """Soft-deletes a run (MLflow keeps it under "deleted runs")."""
        if run_id is not None:
            self._append("delete_run", lambda: {"op": "delete_run", "run": run_id})

    # -- journal control -----------------------------------------------------------------
    def resolve(self, run_key: Optional[str]) -> Optional[str]:
        """The MLflow run id of a key from ``create_run`` once the run exists (else None);
        a real run id is returned unchanged."""
        return self._spool.resolve(run_key)

    def pending_count(self) -> int:
        """Journal entries not yet acknowledged by MLflow."""
        return self._spool.pending_count()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits up to ``timeout_s`` for everything journaled so far to reach MLflow.

        Returns:
            True when it did; False on timeout, or always in offline mode.
        """
        try:
            return self._spool.flush(timeout_s)
        except Exception as err:  # noqa: BLE001
            self.warn_once("flush", f"tracking flush failed ({err}); the data stays in {self.spool_dir}.")
            return False

    def close(self, timeout_s: float = 30.0) -> bool:
        """Flushes for up to ``timeout_s`` and stops the writer; returns within about that time
        even if MLflow never comes back.

        Returns:
            True when everything reached MLflow (the spool directory is then removed unless
            ``keep_spool``); False when data is left in ``spool_dir`` for ``qeu-tune sync``.
        """
        try:
            done = self._spool.close(timeout_s)
        except Exception as err:  # noqa: BLE001
            self.warn_once("close", f"tracking close failed ({err}); the data stays in {self.spool_dir}.")
            return False
        if done and not self.keep_spool and self._spool.rejected == 0:
            import shutil

            shutil.rmtree(self.spool_dir, ignore_errors=True)
        return done


@dataclass
class TrialRecord:
    """What the callback keeps per trial: its run, buffered metrics and its trajectory.

    ``last_step``/``last_iteration``: the highest env step and training iteration written;
    a trial restored from a checkpoint (retry, resume, PBT) repeats iterations, and those
    are not logged again.
    """

    run_id: Optional[str]
    values: Dict[str, Any]
    config: Dict[str, Any]
    pending: List[Any] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    history: List[Dict[str, float]] = field(default_factory=list)
    ended: bool = False
    status: Optional[str] = None
    last_step: int = -1
    last_iteration: int = -1
    retries: int = 0
    perturbations: int = 0

    def to_state(self) -> Dict[str, Any]:
        """Plain data for Tune's experiment checkpoint (buffered points are flushed first)."""
        return {k: getattr(self, k) for k in (
            "run_id", "values", "config", "history", "ended", "status", "last_step", "last_iteration", "retries",
            "perturbations",
        )}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "TrialRecord":
        return cls(**dict(state))


class MLflowTrialCallback(Callback):
    """Tune callback on the driver: one nested MLflow child run per trial.

    Its records survive ``Tuner.restore`` through Tune's ``get_state``/``set_state``; the
    tracker and the interrupt guard are attached anew in every driver process
    (``attach``), never pickled.

    Args:
        tracker: The sweep's tracker.
        parent_run_id: The sweep's parent run.
        template: The sweep's trial template, to log each trial's full resolved config.
        sweep_name: Shown in run names and tags.
        flush_every_s: Metric batching interval.
        log_rllib_metrics: Also log RLlib's raw keys (``rllib/...``).
        mutable_keys: Hyperparameters a scheduler may change during a trial (PBT): their
            current values are logged as ``hparam/<key>`` on the env-step axis.
        on_trial_end: Optional hook called with (record, status) when a trial ends
            (e.g. to log convergence statistics before the run is closed).
    """

    def __init__(
        self,
        *,
        tracker: Optional[Tracker],
        parent_run_id: Optional[str],
        template: TrialTemplate,
        sweep_name: str,
        flush_every_s: float = 5.0,
        log_rllib_metrics: bool = False,
        mutable_keys: Sequence[str] = (),
        on_trial_end: Optional[Callable[["TrialRecord", str], None]] = None,
    ) -> None:
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.template = template
        self.sweep_name = sweep_name
        self.flush_every_s = flush_every_s
        self.log_rllib_metrics = log_rllib_metrics
        self.mutable_keys = list(mutable_keys)
        self.on_trial_end_hook = on_trial_end
        self.records: Dict[str, TrialRecord] = {}
        self.guard: Any = None  # qeu_tune.interrupts.InterruptGuard
        self.on_resume: Optional[Callable[["MLflowTrialCallback", list], None]] = None

    # -- driver-process wiring and Tune's experiment checkpoint ------------------
    _RUNTIME = ("tracker", "guard", "on_resume", "on_trial_end_hook")

    def attach(self, tracker: Tracker, guard: Any = None,
               on_resume: Optional[Callable[["MLflowTrialCallback", list], None]] = None) -> None:
        """Connects this callback (new, or unpickled by ``Tuner.restore``) to this process.

        ``on_resume(callback, trials)`` runs once, at Tune's first step: after Tune restored
        the trials and this callback's state, before any trial starts (``qeu_tune.resume``
        reconciles the records with MLflow and the trials with their checkpoints there).
        """
        self.tracker = tracker
        self.guard = guard
        self.on_resume = on_resume

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        for key in self._RUNTIME:
            state[key] = None
        state["records"] = {}  # carried by get_state/set_state instead
        return state

    def get_state(self) -> Optional[Dict]:
        for record in self.records.values():
            self._flush(record)
        return {"parent_run_id": self.parent_run_id,
                "records": {tid: r.to_state() for tid, r in self.records.items()}}

    def set_state(self, state: Dict) -> None:
        self.parent_run_id = state.get("parent_run_id", self.parent_run_id)
        self.records = {tid: TrialRecord.from_state(r) for tid, r in state.get("records", {}).items()}

    def setup(self, **info: Any) -> None:
        if self.guard is not None:
            self.guard.arm()  # Tune's SIGINT handler is in place now

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.on_resume is not None:
            hook, self.on_resume = self.on_resume, None  # once
            hook(self, trials)

    # -- run lifecycle -------------------------------------------------------------
    def _start(self, trial: Any) -> TrialRecord:
        record = self.records.get(trial.trial_id)
        if record is not None:  # resumed (retry, PBT, `qeu-tune resume`): the same run
            if record.ended and record.status != FINISHED:
                self.tracker.reopen_run(record.run_id)
                record.ended, record.status = False, None
            return record
        values = sampled_values(trial.config)
        try:
            config, skipped = resolve_trial_config(self.template, trial.config)
        except Exception as err:  # noqa: BLE001 - the trial itself will report the error
            config, skipped = {"error": str(err)}, []
        seed = config.get("seed")
        algo = config.get("algo", {}).get("name", "?")
        run_name = f"{trial.trial_id}-{algo}-s{seed}"
        tags = {
            TAG_PARENT: self.parent_run_id or "",
            TAG_KIND: "trial",
            TAG_SWEEP: self.sweep_name,
            TAG_TRIAL_ID: trial.trial_id,
            TAG_ALGO: algo,
            TAG_ENV: str(config.get("env", {}).get("name", "?")),
            TAG_REWARD: str(config.get("reward", {}).get("name", "?")),
            TAG_SEED: str(seed),
            TAG_CONFIG_KEY: config_key(values),
            "mlflow.note.content": f"Trial {trial.trial_id}: {describe(values) or 'base config'}",
        }
        if not self.parent_run_id:
            tags.pop(TAG_PARENT)
        if skipped:
            tags[TAG_SKIPPED] = ",".join(skipped)
        run_id = self.tracker.create_run(run_name=run_name, tags=redact(tags))
        record = TrialRecord(run_id=run_id, values={**values, "seed": seed}, config=config)
        self.records[trial.trial_id] = record
        self.tracker.log_params(run_id, redact(flatten_params(config)))
        self.tracker.log_dict_yaml(run_id, redact(config), RESOLVED_CONFIG_ARTIFACT)
        return record

    def _flush(self, record: TrialRecord) -> None:
        if record.pending:
            batch, record.pending = record.pending, []
            self.tracker.log_metrics(record.run_id, batch)
        record.last_flush = time.monotonic()

    def _end(self, trial: Any, status: str, error: Optional[str] = None) -> None:
        record = self.records.get(trial.trial_id) or self._start(trial)
        if record.ended:
            return
        self._flush(record)
        if self.on_trial_end_hook is not None:
            try:
                self.on_trial_end_hook(record, status)
            except Exception as err:  # noqa: BLE001 - a summary failure must not lose the run status
                log.warning("trial summary for %s failed: %s", trial.trial_id, err)
        if error:
            self.tracker.set_tags(record.run_id, {TAG_ERROR: redact(error[:4000])})
        self.tracker.end_run(record.run_id, status)
        record.ended, record.status = True, status

    # -- Tune hooks ----------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: Dict, **info: Any) -> None:
        from mlflow.entities import Metric

        record = self.records.get(trial.trial_id) or self._start(trial)
        node = node_tags(result)  # in the first result of each trial process (qeu_tune.cluster)
        if node:
            self.tracker.set_tags(record.run_id, node)
        step = int(result.get(names.ENV_STEPS, result.get("training_iteration", 0)) or 0)
        # A trial restored from a checkpoint repeats iterations it already logged. RLlib's
        # iteration counter is restored with the checkpoint, env-step counts need not be
        # (vectorised envs split a repeated iteration's steps differently): skip by iteration.
        iteration = int(result.get(names.ITERATION, -1))
        if (iteration >= 0 and iteration <= record.last_iteration) or step <= record.last_step:
            return
        record.last_step, record.last_iteration = step, iteration
        now_ms = int(time.time() * 1000)
        ours = {k: v for k, v in result.items() if _is_our_metric(k, self.log_rllib_metrics)}
        if result.get(names.EVAL_ITERATION) != iteration:  # a repeat of an earlier evaluation
            ours = {k: v for k, v in ours.items() if not k.startswith(names.EVAL_PREFIX)}
        record.history.append({k: float(v) for k, v in ours.items() if _is_number(v)})
        ours.update(self._convergence(record))
        ours.update(self._hyperparameters(record, result, step))
        for key, value in ours.items():
            if _is_number(value) and value == value:  # MLflow rejects NaN in some stores
                record.pending.append(Metric(key, float(value), now_ms, step))
        if time.monotonic() - record.last_flush >= self.flush_every_s:
            self._flush(record)

    def _hyperparameters(self, record: TrialRecord, result: Mapping[str, Any], step: int) -> Dict[str, float]:
        """``hparam/<key>``: the values a result was trained with; a PBT change is also tagged.

        The trainable reports the values it trains with in every result
        (``qeu_tune.trial_config.trained_with``): the config Tune holds for the trial may
        already be a newer one (PBT changes it before the callbacks see the result that
        triggered it, or while the trial waits for the others in synchronous mode).
        """
        if not self.mutable_keys:
            return {}
        used = {k: result[HPARAM_PREFIX + k] for k in self.mutable_keys if HPARAM_PREFIX + k in result}
        before = trained_with(record.values)
        changed = {k: (before.get(HPARAM_PREFIX + k), new) for k, new in used.items()
                   if before.get(HPARAM_PREFIX + k) != new}
        if changed:
            record.perturbations += 1
            record.values.update({k: new for k, (_, new) in changed.items()})
            text = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
            self.tracker.set_tags(record.run_id, {
                TAG_PERTURBATIONS: str(record.perturbations),
                f"{TAG_PERTURBATIONS}.{record.perturbations}": f"from env step {step}: {text}",
            })
        return {HPARAM_PREFIX + k: v for k, v in used.items() if _is_number(v)}

    def _convergence(self, record: TrialRecord) -> Dict[str, float]:
        """``conv/*``: the trial's convergence statistics so far (final at its end)."""
        from qeu_tune.convergence import curves_from_history, settings_from_config, trial_statistics

        try:
            settings = settings_from_config(record.config)
            returns, rt = curves_from_history(record.history, settings.metric)
            summary = trial_statistics(returns, settings, rt)
        except Exception as err:  # noqa: BLE001 - statistics must never stop tracking
            self.tracker.warn_once("convergence", f"convergence statistics failed ({err}); metrics are still logged.")
            return {}
        return {names.CONV_PREFIX + k: v for k, v in summary.items()}

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A crashed trial that Tune retries from its last checkpoint: the same run goes on."""
        record = self.records.get(trial.trial_id) or self._start(trial)
        record.retries += 1
        self._flush(record)
        self.tracker.set_tags(record.run_id, {TAG_RETRIES: str(record.retries),
                                              f"{TAG_ERROR}.attempt{record.retries}": redact(_error_text(trial)[:2000])})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, FINISHED)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, FAILED, _error_text(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close_open_runs()

    def close_open_runs(self, status: str = KILLED) -> None:
        """Ends every run still open (interrupted sweep): KILLED, never left RUNNING."""
        for record in self.records.values():
            if not record.ended:
                self._flush(record)
                self.tracker.end_run(record.run_id, status)
                record.ended, record.status = True, status

    def open_runs(self) -> List[str]:
        return [r.run_id for r in self.records.values() if not r.ended and r.run_id]

    def ended_with(self, status: str) -> int:
        return sum(1 for r in self.records.values() if r.status == status)


_OUR_PREFIXES = ("return/", "return_env/", "episode/", "progress/", "perf/", "learner/", "reward/", "rt/",
                 names.TASK_PREFIX, names.EVAL_PREFIX)


def _is_our_metric(key: str, include_rllib: bool) -> bool:
    return key.startswith(_OUR_PREFIXES) or (include_rllib and key.startswith(names.RLLIB_PREFIX))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Fault|Interrupt)): (.+)$", re.MULTILINE)


def _error_text(trial: Any) -> str:
    """The trial's error: the innermost exception with a message first, then the trace's end.

    RLlib re-raises env errors as a bare ``RuntimeError``; the cause's line is what a user needs.
    """
    try:
        path = trial.error_file
        if path and Path(path).exists():
            text = Path(path).read_text(errors="replace")
            causes = _EXCEPTION_LINE.findall(text)
            head = f"{causes[-1][0]}: {causes[-1][1]}\n\n" if causes else ""
            return head + text[-(3000 - len(head)):]
    except Exception:  # noqa: BLE001
        pass
    return "trial failed (no error file was written)"


def sweep_tags(*, sweep_name: str, command: str, source_dir: Path, extra: Mapping[str, str]) -> Dict[str, str]:
    """Tags of a sweep's parent run: command line, version and git commit where available."""
    tags = {
        TAG_KIND: "sweep",
        TAG_SWEEP: sweep_name,
        "qeu.command": command,
        "qeu.version": __version__,
        **{str(k): str(v) for k, v in extra.items()},
    }
    commit = git_commit(source_dir)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return redact(tags)  # the command line may hold a password or a token

