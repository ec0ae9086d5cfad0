"""The Tune callback on the driver: one nested MLflow child run per trial, through the tracker.

It turns Tune's trial events into tracker calls: a run per trial with its resolved config,
its metrics on the env-step axis (buffered, written in batches), convergence statistics,
retries and PBT perturbations, and a final status FINISHED, FAILED (with the error) or KILLED.
Each retry and each final failure is also logged as one line (``qeu_tune.engine.failures``).

The module stays whole: every Tune hook updates the same per-trial records, which Tune
snapshots with the experiment and ``qeu-tune resume`` restores; split, they would drift.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
from ray.tune import Callback

from qeu_tune.analysis.convergence import curves_from_history, settings_from_config, trial_statistics
from qeu_tune.config.trial import TrialTemplate, describe, resolve_trial_config, sampled_values, trained_with
from qeu_tune.core import names
from qeu_tune.core.redact import redact  # secrets never reach MLflow
from qeu_tune.core.tags import (
    FAILED,
    FINISHED,
    HPARAM_PREFIX,
    KILLED,
    RESOLVED_CONFIG_ARTIFACT,
    TAG_ALGO,
    TAG_CONFIG_KEY,
    TAG_ENV,
    TAG_ERROR,
    TAG_KIND,
    TAG_NODE_ID,
    TAG_PARENT,
    TAG_PERTURBATIONS,
    TAG_RETRIES,
    TAG_REWARD,
    TAG_SEED,
    TAG_SKIPPED,
    TAG_SWEEP,
    TAG_TRIAL_ID,
)
from qeu_tune.engine.failures import failure_cause, final_line, process_gone, read_error, restart_point, retry_line
from qeu_tune.engine.node import node_lost, node_tags
from qeu_tune.tracking.tracker import Tracker, config_key, flatten_params

log = logging.getLogger(__name__)


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
    node: Dict[str, str] = field(default_factory=dict)  # run tags of the node it last ran on
    conv_logged_at: float = -math.inf  # monotonic time of the last conv/* points (not in to_state)
    conv_step: int = -1  # their env step

    def to_state(self) -> Dict[str, Any]:
        """Plain data for Tune's experiment checkpoint (buffered points are flushed first)."""
        return {
            k: getattr(self, k)
            for k in (
                "run_id",
                "values",
                "config",
                "history",
                "ended",
                "status",
                "last_step",
                "last_iteration",
                "retries",
                "perturbations",
                "node",
            )
        }

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
        conv_every_s: Seconds between a trial's ``conv/*`` points: a trial logs them with its
            first result, then with the first result at least this long after the last ones, and
            always with its last result (so the final statistics are exact); 0: every result.
        log_rllib_metrics: Also log RLlib's raw keys (``rllib/...``).
        mutable_keys: Hyperparameters a scheduler may change during a trial (PBT): their
            current values are logged as ``hparam/<key>`` on the env-step axis.
        on_trial_end: Optional hook called with (record, status) when a trial ends
            (e.g. to log convergence statistics before the run is closed).
    """

    conv_every_s: float = 0.0  # for a callback pickled before this setting existed (Tuner.restore)

    def __init__(
        self,
        *,
        tracker: Optional[Tracker],
        parent_run_id: Optional[str],
        template: TrialTemplate,
        sweep_name: str,
        flush_every_s: float = 5.0,
        conv_every_s: float = 0.0,
        log_rllib_metrics: bool = False,
        mutable_keys: Sequence[str] = (),
        on_trial_end: Optional[Callable[["TrialRecord", str], None]] = None,
    ) -> None:
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.template = template
        self.sweep_name = sweep_name
        self.flush_every_s = flush_every_s
        self.conv_every_s = conv_every_s
        self.log_rllib_metrics = log_rllib_metrics
        self.mutable_keys = list(mutable_keys)
        self.on_trial_end_hook = on_trial_end
        self.records: Dict[str, TrialRecord] = {}
        self.guard: Any = None  # qeu_tune.engine.interrupts.InterruptGuard
        self.on_resume: Optional[Callable[["MLflowTrialCallback", list], None]] = None
        self.result_s = array("d")  # seconds per on_trial_result, this driver process only

    # -- driver-process wiring and Tune's experiment checkpoint ------------------
    _RUNTIME = ("tracker", "guard", "on_resume", "on_trial_end_hook")

    def attach(
        self,
        tracker: Tracker,
        guard: Any = None,
        on_resume: Optional[Callable[["MLflowTrialCallback", list], None]] = None,
    ) -> None:
        """Connects this callback (new, or unpickled by ``Tuner.restore``) to this process.

        ``on_resume(callback, trials)`` runs once, at Tune's first step: after Tune restored
        the trials and this callback's state, before any trial starts (``qeu_tune.engine.resume``
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
        state["result_s"] = array("d")  # timings describe one driver process
        return state

    def get_state(self) -> Optional[Dict]:
        for record in self.records.values():
            self._flush(record)
        return {"parent_run_id": self.parent_run_id, "records": {tid: r.to_state() for tid, r in self.records.items()}}

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

    def _final_convergence(self, record: TrialRecord) -> None:
        """``conv/*`` at the trial's last logged step, unless they were logged there already."""
        if record.history and record.conv_step != record.last_step:
            self._append(record, self._convergence(record), int(time.time() * 1000), record.last_step)

    def _flush(self, record: TrialRecord) -> None:
        if record.pending:
            batch, record.pending = record.pending, []
            self.tracker.log_metrics(record.run_id, batch)
        record.last_flush = time.monotonic()

    def _end(self, trial: Any, status: str, error: Optional[str] = None) -> None:
        record = self.records.get(trial.trial_id) or self._start(trial)
        if record.ended:
            return
        self._final_convergence(record)
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
        if status == FINISHED:  # done for good: its statistics are logged, keep only last values
            record.history = [last_values(record.history)]

    # -- Tune hooks ----------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: Dict, **info: Any) -> None:
        started = time.perf_counter()
        try:
            self._record_result(trial, result)
        finally:
            self.result_s.append(time.perf_counter() - started)

    def _record_result(self, trial: Any, result: Dict) -> None:
        record = self.records.get(trial.trial_id) or self._start(trial)
        node = node_tags(result)  # in the first result of each trial process (qeu_tune.engine.node)
        if node:
            self.tracker.set_tags(record.run_id, node)
            record.node = node  # named in the console line if the trial fails
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
        now = time.monotonic()
        if now - record.conv_logged_at >= self.conv_every_s:
            ours.update(self._convergence(record))
        ours.update(self._hyperparameters(record, result, step))
        self._append(record, ours, now_ms, step)
        if now - record.last_flush >= self.flush_every_s:
            self._flush(record)

    @staticmethod
    def _append(record: TrialRecord, values: Mapping[str, Any], now_ms: int, step: int) -> None:
        from mlflow.entities import Metric

        for key, value in values.items():
            if _is_number(value) and value == value:  # MLflow rejects NaN in some stores
                record.pending.append(Metric(key, float(value), now_ms, step))

    def _hyperparameters(self, record: TrialRecord, result: Mapping[str, Any], step: int) -> Dict[str, float]:
        """``hparam/<key>``: the values a result was trained with; a PBT change is also tagged.

        The trainable reports the values it trains with in every result
        (``qeu_tune.config.trial.trained_with``): the config Tune holds for the trial may
        already be a newer one (PBT changes it before the callbacks see the result that
        triggered it, or while the trial waits for the others in synchronous mode).
        """
        if not self.mutable_keys:
            return {}
        used = {k: result[HPARAM_PREFIX + k] for k in self.mutable_keys if HPARAM_PREFIX + k in result}
        before = trained_with(record.values)
        changed = {
            k: (before.get(HPARAM_PREFIX + k), new) for k, new in used.items() if before.get(HPARAM_PREFIX + k) != new
        }
        if changed:
            record.perturbations += 1
            record.values.update({k: new for k, (_, new) in changed.items()})
            text = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
            self.tracker.set_tags(
                record.run_id,
                {
                    TAG_PERTURBATIONS: str(record.perturbations),
                    f"{TAG_PERTURBATIONS}.{record.perturbations}": f"from env step {step}: {text}",
                },
            )
        return {HPARAM_PREFIX + k: v for k, v in used.items() if _is_number(v)}

    def _convergence(self, record: TrialRecord) -> Dict[str, float]:
        """``conv/*``: the trial's convergence statistics so far (final at its end); the record
        notes when and at which step they were last computed for logging."""
        record.conv_logged_at, record.conv_step = time.monotonic(), record.last_step
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
        error = read_error(getattr(trial, "error_file", None))
        self.tracker.set_tags(
            record.run_id,
            {TAG_RETRIES: str(record.retries), f"{TAG_ERROR}.attempt{record.retries}": redact(error[:2000])},
        )
        cause = self._cause(record, error)
        limit = getattr(trial, "max_failures", 0)
        log.warning(redact(retry_line(trial.trial_id, cause, record.retries, limit, restart_point(trial))))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, FINISHED)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = read_error(getattr(trial, "error_file", None))
        record = self.records.get(trial.trial_id)
        retries, limit = record.retries if record is not None else 0, getattr(trial, "max_failures", 0)
        log.warning(redact(final_line(trial.trial_id, self._cause(record, error), retries, limit)))
        self._end(trial, FAILED, error)

    @staticmethod
    def _cause(record: Optional[TrialRecord], error: str) -> str:
        """What happened; asks Ray whether the node is gone only when the trial's process is."""
        node = record.node if record is not None else {}
        lost = node_lost(node[TAG_NODE_ID]) if process_gone(error) and node.get(TAG_NODE_ID) else None
        return failure_cause(error, node, lost)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close_open_runs()
        self.log_driver_cost()

    def driver_cost(self) -> Dict[str, float]:
        """``driver/*``: the callback's time per Tune result in this driver process (ms)."""
        if not self.result_s:
            return {}
        p50, p99, top = np.percentile(np.frombuffer(self.result_s, dtype=float), [50, 99, 100]) * 1000.0
        return {
            names.DRIVER_RESULTS: float(len(self.result_s)),
            names.DRIVER_CALLBACK_MS_P50: float(p50),
            names.DRIVER_CALLBACK_MS_P99: float(p99),
            names.DRIVER_CALLBACK_MS_MAX: float(top),
        }

    def log_driver_cost(self) -> None:
        """The driver's cost on the parent run: what scaling a sweep up will multiply."""
        from mlflow.entities import Metric

        cost = self.driver_cost()
        if cost and self.parent_run_id and self.tracker is not None:
            now_ms = int(time.time() * 1000)
            self.tracker.log_metrics(self.parent_run_id, [Metric(k, v, now_ms, 0) for k, v in cost.items()])

    def close_open_runs(self, status: str = KILLED) -> None:
        """Ends every run still open (interrupted sweep): KILLED, never left RUNNING."""
        for record in self.records.values():
            if not record.ended:
                self._final_convergence(record)
                self._flush(record)
                self.tracker.end_run(record.run_id, status)
                record.ended, record.status = True, status

    def open_runs(self) -> List[str]:
        return [r.run_id for r in self.records.values() if not r.ended and r.run_id]

    def ended_with(self, status: str) -> int:
        return sum(1 for r in self.records.values() if r.status == status)


_OUR_PREFIXES = (
    "return/",
    "return_env/",
    "episode/",
    "progress/",
    "perf/",
    "learner/",
    "reward/",
    "rt/",
    names.TASK_PREFIX,
    names.EVAL_PREFIX,
)


def last_values(history: Sequence[Mapping[str, float]]) -> Dict[str, float]:
    """Each metric's last value that is not NaN: what a finished trial's record keeps. Tune
    snapshots this callback's state with the experiment's, so whole histories of finished
    trials would make every snapshot grow with trials x results."""
    last: Dict[str, float] = {}
    for point in history:
        last.update({k: v for k, v in point.items() if v == v})
    return last


def _is_our_metric(key: str, include_rllib: bool) -> bool:
    return key.startswith(_OUR_PREFIXES) or (include_rllib and key.startswith(names.RLLIB_PREFIX))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
