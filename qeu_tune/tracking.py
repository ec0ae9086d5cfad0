"""MLflow tracking: the only module that writes to MLflow while a sweep runs.

One parent run per sweep; one nested child run per trial. Every MLflow call goes
through ``_guard``: a tracker failure becomes a warning, never a crashed trial or sweep.
Metrics are buffered and written with ``log_batch``; every run ends FINISHED, FAILED
(with the error) or KILLED.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar
from urllib.parse import unquote, urlparse

import yaml
from ray.tune import Callback

from qeu_tune import __version__, names
from qeu_tune.trial_config import TrialTemplate, describe, resolve_trial_config, sampled_values

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow limits (3.x): param values 6000 chars, keys 250, 100 params / 1000 metrics a batch.
MAX_PARAM_VALUE = 500  # shorter than MLflow's limit keeps the comparison views readable
MAX_KEY = 250
PARAM_BATCH = 100
METRIC_BATCH = 1000

# Tags (also read back by reports and reruns).
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_KIND = "qeu.kind"  # "sweep" or "trial"
TAG_SWEEP = "qeu.sweep"
TAG_TRIAL_ID = "qeu.trial_id"
TAG_ALGO = "qeu.algo"
TAG_ENV = "qeu.env"
TAG_REWARD = "qeu.reward"
TAG_SEED = "qeu.seed"
TAG_CONFIG_KEY = "qeu.config_key"  # identifies a configuration across its seeds
TAG_ERROR = "qeu.error"
TAG_SKIPPED = "qeu.skipped_keys"
RESOLVED_CONFIG_ARTIFACT = "config/resolved.yaml"
SWEEP_CONFIG_ARTIFACT = "config/sweep.yaml"
SEARCH_SPEC_ARTIFACT = "config/search.yaml"

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


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


def artifact_location_for(tracking_uri: str) -> Optional[str]:
    """Artifacts next to a SQLite/file store (MLflow's default is ./mlruns: cwd-dependent)."""
    if urlparse(tracking_uri).scheme != "sqlite":
        return None  # a file store keeps artifacts in its own tree; a server decides
    db_path = Path(unquote(tracking_uri[len("sqlite:///"):]))
    return (db_path.parent / "mlartifacts").resolve().as_uri()


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
    """A thin, failure-tolerant wrapper around ``MlflowClient`` for one sweep.

    Args:
        tracking_uri: Resolved MLflow tracking URI.
        experiment: MLflow experiment name (created if missing).
    """

    def __init__(self, *, tracking_uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._warned: set[str] = set()
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            # MLflow 3's UI opens GenAI views unless told this is classic model training.
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_location_for(tracking_uri),
                tags={"mlflow.experimentKind": "custom_model_development"},
            )

    def warn_once(self, what: str, message: str) -> None:
        """Logs one warning per kind of failure, not one per call."""
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message)

    def _guard(self, what: str, call: Callable[[], T]) -> Optional[T]:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - logging must never kill training
            self.warn_once(what, f"MLflow {what} failed ({type(err).__name__}: {err}); training continues.")
            return None

    def create_run(self, *, run_name: str, tags: Mapping[str, str]) -> Optional[str]:
        run = self._guard(
            "create_run",
            lambda: self.client.create_run(
                self.experiment_id, run_name=run_name, tags={TAG_RUN_NAME: run_name, **tags}
            ),
        )
        return run.info.run_id if run is not None else None

    def log_params(self, run_id: Optional[str], params: Mapping[str, str]) -> None:
        if run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self._guard("log_params", lambda b=items[i : i + PARAM_BATCH]: self.client.log_batch(run_id, params=b))

    def set_tags(self, run_id: Optional[str], tags: Mapping[str, str]) -> None:
        if run_id is None:
            return
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        self._guard("set_tags", lambda: self.client.log_batch(run_id, tags=batch))

    def log_metrics(self, run_id: Optional[str], metrics: List[Any]) -> None:
        if run_id is None:
            return
        for i in range(0, len(metrics), METRIC_BATCH):
            self._guard("log_metrics", lambda b=metrics[i : i + METRIC_BATCH]: self.client.log_batch(run_id, metrics=b))

    def log_text(self, run_id: Optional[str], text: str, artifact_file: str) -> None:
        if run_id is not None:
            self._guard("log_artifact", lambda: self.client.log_text(run_id, text, artifact_file))

    def log_dict_yaml(self, run_id: Optional[str], data: Any, artifact_file: str) -> None:
        self.log_text(run_id, yaml.safe_dump(data, sort_keys=False), artifact_file)

    def log_artifacts(self, run_id: Optional[str], local_dir: str, artifact_path: Optional[str] = None) -> None:
        if run_id is not None:
            self._guard("log_artifacts", lambda: self.client.log_artifacts(run_id, local_dir, artifact_path))

    def end_run(self, run_id: Optional[str], status: str) -> None:
        if run_id is not None:
            self._guard("end_run", lambda: self.client.set_terminated(run_id, status=status))


@dataclass
class TrialRecord:
    """What the callback keeps per trial: its run, buffered metrics and its trajectory."""

    run_id: Optional[str]
    values: Dict[str, Any]
    config: Dict[str, Any]
    pending: List[Any] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    history: List[Dict[str, float]] = field(default_factory=list)
    ended: bool = False


class MLflowTrialCallback(Callback):
    """Tune callback on the driver: one nested MLflow child run per trial.

    Args:
        tracker: The sweep's tracker.
        parent_run_id: The sweep's parent run.
        template: The sweep's trial template, to log each trial's full resolved config.
        sweep_name: Shown in run names and tags.
        flush_every_s: Metric batching interval.
        log_rllib_metrics: Also log RLlib's raw keys (``rllib/...``).
        on_trial_end: Optional hook called with (record, status) when a trial ends
            (e.g. to log convergence statistics before the run is closed).
    """

    def __init__(
        self,
        *,
        tracker: Tracker,
        parent_run_id: Optional[str],
        template: TrialTemplate,
        sweep_name: str,
        flush_every_s: float = 5.0,
        log_rllib_metrics: bool = False,
        on_trial_end: Optional[Callable[["TrialRecord", str], None]] = None,
    ) -> None:
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.template = template
        self.sweep_name = sweep_name
        self.flush_every_s = flush_every_s
        self.log_rllib_metrics = log_rllib_metrics
        self.on_trial_end_hook = on_trial_end
        self.records: Dict[str, TrialRecord] = {}

    # -- run lifecycle -------------------------------------------------------------
    def _start(self, trial: Any) -> TrialRecord:
        if trial.trial_id in self.records:  # resumed (PBT, retry): keep the same run
            return self.records[trial.trial_id]
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
        run_id = self.tracker.create_run(run_name=run_name, tags=tags)
        record = TrialRecord(run_id=run_id, values={**values, "seed": seed}, config=config)
        self.records[trial.trial_id] = record
        self.tracker.log_params(run_id, flatten_params(config))
        self.tracker.log_dict_yaml(run_id, config, RESOLVED_CONFIG_ARTIFACT)
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
            self.tracker.set_tags(record.run_id, {TAG_ERROR: error[-4000:]})
        self.tracker.end_run(record.run_id, status)
        record.ended = True

    # -- Tune hooks ----------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: Dict, **info: Any) -> None:
        from mlflow.entities import Metric

        record = self.records.get(trial.trial_id) or self._start(trial)
        step = int(result.get(names.ENV_STEPS, result.get("training_iteration", 0)) or 0)
        now_ms = int(time.time() * 1000)
        ours = {k: v for k, v in result.items() if _is_our_metric(k, self.log_rllib_metrics)}
        record.history.append({k: float(v) for k, v in ours.items() if _is_number(v)})
        ours.update(self._convergence(record))
        for key, value in ours.items():
            if _is_number(value) and value == value:  # MLflow rejects NaN in some stores
                record.pending.append(Metric(key, float(value), now_ms, step))
        if time.monotonic() - record.last_flush >= self.flush_every_s:
            self._flush(record)

    def _convergence(self, record: TrialRecord) -> Dict[str, float]:
        """``conv/*``: the trial's convergence statistics so far (final at its end)."""
        from qeu_tune.convergence import curves_from_history, settings_from_config, trial_statistics

        try:
            returns, rt = curves_from_history(record.history)
            summary = trial_statistics(returns, settings_from_config(record.config), rt)
        except Exception as err:  # noqa: BLE001 - statistics must never stop tracking
            self.tracker.warn_once("convergence", f"convergence statistics failed ({err}); metrics are still logged.")
            return {}
        return {names.CONV_PREFIX + k: v for k, v in summary.items()}

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
                record.ended = True


_OUR_PREFIXES = ("return/", "return_env/", "episode/", "progress/", "perf/", "learner/", "reward/", "rt/")


def _is_our_metric(key: str, include_rllib: bool) -> bool:
    return key.startswith(_OUR_PREFIXES) or (include_rllib and key.startswith(names.RLLIB_PREFIX))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _error_text(trial: Any) -> str:
    """The trial's error trace (text file written by Tune), last lines first-class."""
    try:
        path = trial.error_file
        if path and Path(path).exists():
            return Path(path).read_text(errors="replace")
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
    return tags

