"""MLflow tracking: the only module that writes to MLflow while a sweep runs.

One parent run per sweep; one nested child run per trial (``qeu_tune.engine.callback``
turns Tune's events into calls here). ``Tracker`` journals every
call on disk and one writer (a process of its own) applies the journal to MLflow (``qeu_tune.tracking.journal``):
the driver never waits for MLflow, an outage is retried, never dropped, and a tracker
failure becomes a warning, never a crashed trial or sweep. Metrics are buffered and written
with ``log_batch``; every run ends FINISHED, FAILED (with the error) or KILLED.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import yaml

from qeu_tune import __version__
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.redact import redact  # secrets never reach MLflow
from qeu_tune.core.tags import TAG_COMMAND, TAG_KIND, TAG_RUN_NAME, TAG_SWEEP, TAG_VERSION
from qeu_tune.tracking import journal, store
from qeu_tune.tracking.store import new_run_key

log = logging.getLogger(__name__)

# MLflow limits (3.x): param values 6000 chars, keys 250, 100 params / 1000 metrics a batch.
MAX_PARAM_VALUE = 500  # shorter than MLflow's limit keeps the comparison views readable
MAX_KEY = 250


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


def git_commit(path: Path) -> Optional[str]:
    """The git commit of the source tree at ``path``, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def config_key(values: Mapping[str, Any]) -> str:
    """A stable key for one configuration: its sampled values without the seed."""
    kept = {k: v for k, v in sorted(values.items()) if k != "seed"}
    return json.dumps(kept, sort_keys=True, default=str)


# libyaml's emitter when PyYAML has it: the same text as yaml.safe_dump, several times faster
# (each trial's resolved config is dumped on the driver as the trial starts; in pure Python that
# was ~40% of the trial callback's own time).
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def yaml_text(data: Any) -> str:
    """``yaml.safe_dump(data, sort_keys=False)``, with libyaml's emitter when available."""
    return yaml.dump(data, Dumper=_YAML_DUMPER, sort_keys=False)


class Tracker:
    """The sweep's tracking facade: journaled, non-blocking writes to MLflow.

    Every call appends one entry to the sweep's journal (``spool_dir``) and returns at once;
    one writer applies the journal to MLflow in order, retrying with backoff while
    MLflow is unreachable (see ``qeu_tune.tracking.journal``). Tracking never raises into the caller:
    a failure becomes one warning per kind. ``close`` at the end of the sweep; whatever did not
    reach MLflow stays in ``spool_dir`` for ``qeu-tune sync``.

    Args:
        tracking_uri: Resolved MLflow tracking URI.
        experiment: MLflow experiment name (created if missing; offline: by ``sync``).
        mode: ``online`` (write to MLflow as the sweep runs) or ``offline`` (journal only: no
            MLflow contact at all; upload later with ``qeu-tune sync``).
        spool_root: Parent of the spool directory (default ``$QEU_TUNE_HOME/spool``).
        writer: ``process`` (the default: MLflow's store work runs in a process of its own,
            beside the caller's; ``qeu_tune.tracking.writer_process``) or ``thread`` (in this
            process: for a caller that replaces the MLflow client, as tests do).
        queue_size: Journal lines a writer thread holds in memory; beyond that it re-reads the journal.
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
        writer: str = "process",
        queue_size: int = 2000,
        keep_spool: bool = False,
    ) -> None:
        if mode not in journal.MODES:
            raise ConfigError(f"tracking.mode={mode!r} is not one of {', '.join(journal.MODES)}.")
        if writer not in journal.WRITERS:
            raise ConfigError(f"tracking.writer={writer!r} is not one of {', '.join(journal.WRITERS)}.")
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
                with store.short_http_retries():  # fail fast, not after MLflow's ~4 minutes of retries
                    self.experiment_id = store.ensure_experiment(self.client, experiment, tracking_uri)
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
                self.spool_dir,
                tracking_uri=tracking_uri,
                experiment=experiment,
                mode=mode,
                client=self.client,
                experiment_id=self.experiment_id,
                warn=self.warn_once,
                writer=writer,
                queue_size=queue_size,
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

        key = new_run_key()
        self._append(
            "create_run",
            lambda: {
                "op": "create_run",
                "run": key,
                "name": run_name,
                "time": int(time.time() * 1000),
                "tags": {TAG_RUN_NAME: run_name, **{str(k): str(v) for k, v in tags.items()}},
            },
        )
        return key

    def log_params(self, run_id: Optional[str], params: Mapping[str, str]) -> None:
        if run_id is not None and params:
            self._append(
                "log_params",
                lambda: {"op": "params", "run": run_id, "params": {str(k): str(v) for k, v in params.items()}},
            )

    def set_tags(self, run_id: Optional[str], tags: Mapping[str, str]) -> None:
        if run_id is not None and tags:
            self._append(
                "set_tags",
                lambda: {"op": "tags", "run": run_id, "tags": {str(k): str(v)[:5000] for k, v in tags.items()}},
            )

    def log_metrics(self, run_id: Optional[str], metrics: List[Any]) -> None:
        """Journals ``mlflow.entities.Metric`` points; their timestamps are kept as reported, so a
        replayed point is an exact duplicate that MLflow skips."""
        if run_id is not None and metrics:
            self._append(
                "log_metrics",
                lambda: {
                    "op": "metrics",
                    "run": run_id,
                    "m": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                },
            )

    def log_text(self, run_id: Optional[str], text: str, artifact_file: str) -> None:
        if run_id is None:
            return

        def build() -> Dict[str, Any]:
            blob = self._spool.blob_dir() / Path(artifact_file).name
            blob.write_text(text)
            parent = str(Path(artifact_file).parent)
            return {
                "op": "artifact",
                "run": run_id,
                "blob": str(blob.relative_to(self.spool_dir)),
                "path": None if parent in ("", ".") else parent,
            }

        self._append("log_artifact", build)

    def log_dict_yaml(self, run_id: Optional[str], data: Any, artifact_file: str) -> None:
        self.log_text(run_id, yaml_text(data), artifact_file)

    def log_artifacts(self, run_id: Optional[str], local_dir: str, artifact_path: Optional[str] = None) -> None:
        """Copies ``local_dir`` into the spool now (it may change later) and journals the upload."""
        if run_id is None:
            return

        def build() -> Dict[str, Any]:
            import shutil

            blob = self._spool.blob_dir()
            shutil.copytree(local_dir, blob, dirs_exist_ok=True)
            return {
                "op": "artifacts",
                "run": run_id,
                "blob": str(blob.relative_to(self.spool_dir)),
                "path": artifact_path,
            }

        self._append("log_artifacts", build)

    def end_run(self, run_id: Optional[str], status: str) -> None:
        if run_id is not None:
            self._append(
                "end_run", lambda: {"op": "end_run", "run": run_id, "status": status, "time": int(time.time() * 1000)}
            )

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
        """Waits for everything journaled so far to reach MLflow, giving up once ``timeout_s``
        pass without progress.

        Returns:
            True when it did; False on timeout, or always in offline mode.
        """
        try:
            return self._spool.flush(timeout_s)
        except Exception as err:  # noqa: BLE001 - logging never kills training
            self.warn_once("flush", f"tracking flush failed ({err}); the data stays in {self.spool_dir}.")
            return False

    def close(self, timeout_s: float = 30.0) -> bool:
        """Flushes (until ``timeout_s`` pass without progress) and stops the writer; returns
        within about that time if MLflow never comes back.

        Returns:
            True when everything reached MLflow (the spool directory is then removed unless
            ``keep_spool``); False when data is left in ``spool_dir`` for ``qeu-tune sync``.
        """
        try:
            done = self._spool.close(timeout_s)
        except Exception as err:  # noqa: BLE001 - logging never kills training
            self.warn_once("close", f"tracking close failed ({err}); the data stays in {self.spool_dir}.")
            return False
        if done and not self.keep_spool and self._spool.rejected == 0:
            import shutil

            shutil.rmtree(self.spool_dir, ignore_errors=True)
        return done


def sweep_tags(*, sweep_name: str, command: str, source_dir: Path, extra: Mapping[str, str]) -> Dict[str, str]:
    """Tags of a sweep's parent run: command line, version and git commit where available."""
    tags = {
        TAG_KIND: "sweep",
        TAG_SWEEP: sweep_name,
        TAG_COMMAND: command,
        TAG_VERSION: __version__,
        **{str(k): str(v) for k, v in extra.items()},
    }
    commit = git_commit(source_dir)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return redact(tags)  # the command line may hold a password or a token
