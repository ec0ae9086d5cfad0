"""The MLflow side of the journal: applying journaled operations to a tracking store.

``Applier`` turns one unit of journal entries into MLflow calls (batched within MLflow's
``log_batch`` limits), resolving run keys to run ids; errors that retrying cannot fix are
told apart (``is_permanent``) so the writer sets them aside instead of retrying forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from qeu_tune.core.paths import artifact_location_for
from qeu_tune.core.tags import EXPERIMENT_KIND_TRAINING, TAG_EXPERIMENT_KIND, TAG_RUN_KEY

log = logging.getLogger(__name__)

RUN_KEY_PREFIX = "qk-"


def new_run_key() -> str:
    """An opaque, globally unique run key (``qk-`` + 32 hex digits)."""
    return RUN_KEY_PREFIX + uuid.uuid4().hex


def is_run_key(value: Any) -> bool:
    """Whether ``value`` looks like a key from ``new_run_key`` (not an MLflow run id)."""
    return isinstance(value, str) and value.startswith(RUN_KEY_PREFIX) and len(value) == len(RUN_KEY_PREFIX) + 32


# -- MLflow HTTP retries ------------------------------------------------------------------
_http_env_lock = threading.Lock()
_http_env_depth = 0
_http_env_saved: Dict[str, Optional[str]] = {}

# MLflow's log_batch limits (3.x): 1000 metrics, 100 params, 100 tags a call.
METRIC_BATCH = 1000


PARAM_BATCH = 100


TAG_BATCH = 100


# MLflow's own HTTP retries (7, backoff factor 2: ~4 minutes) are replaced for our calls.
# The first call (opening the experiment) must fail within ~10 s when the server is down:
# 1 retry, 4 s timeout (MLflow parses the backoff factor as an int; urllib3 does not sleep
# before the first retry).
HTTP_MAX_RETRIES = 1


HTTP_BACKOFF_FACTOR = 1


HTTP_TIMEOUT_S = 4.0


# The writer thread does its own backoff, so no HTTP-level retries (a refused connection
# fails at once); but a generous timeout: a busy server may take seconds for a 1,000-point
# batch (replayed duplicates cost it most), and a timed-out batch would only be sent again.
WRITER_HTTP = {"max_retries": 0, "timeout_s": 30.0}


# Error codes that retrying cannot fix: the entry is set aside in rejected.jsonl.
_PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_STATE",
        "BAD_REQUEST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_REQUEST",
    }
)


_OP_NAMES = {  # journal op -> the Tracker method, for messages
    "create_run": "create_run",
    "params": "log_params",
    "tags": "set_tags",
    "metrics": "log_metrics",
    "artifact": "log_artifact",
    "artifacts": "log_artifacts",
    "end_run": "end_run",
    "reopen_run": "reopen_run",
    "delete_run": "delete_run",
}


@contextlib.contextmanager
def short_http_retries(
    max_retries: int = HTTP_MAX_RETRIES, timeout_s: float = HTTP_TIMEOUT_S, backoff_factor: int = HTTP_BACKOFF_FACTOR
) -> Iterator[None]:
    """Shortens MLflow's HTTP retries while the block runs.

    MLflow reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR`` and ``..._TIMEOUT``
    from the environment on every request (``mlflow.utils.rest_utils.http_request``; sessions are
    cached per retry setting), so setting them around a call changes that call only. The
    environment is process-wide: other threads calling MLflow meanwhile also get short retries,
    which is harmless. Values the user set explicitly are kept. Re-entrant and thread-safe
    (reference counted; the last one out restores the environment).
    """
    global _http_env_depth
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(max_retries)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(int(backoff_factor)),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, round(timeout_s)))),
    }
    with _http_env_lock:
        if _http_env_depth == 0:
            _http_env_saved.clear()
            for name, value in wanted.items():
                _http_env_saved[name] = os.environ.get(name)
                if _http_env_saved[name] is None:
                    os.environ[name] = value
        _http_env_depth += 1
    try:
        yield
    finally:
        with _http_env_lock:
            _http_env_depth -= 1
            if _http_env_depth == 0:
                for name, value in _http_env_saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value


def is_permanent(err: BaseException) -> bool:
    """Whether retrying ``err`` cannot help (MLflow refused the values, not the connection)."""
    from mlflow.exceptions import MlflowException

    return isinstance(err, MlflowException) and str(getattr(err, "error_code", "")) in _PERMANENT_CODES


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts next to a SQLite store) if missing.

    Either way the experiment is tagged as model training (``mlflow.experimentKind`` =
    ``custom_model_development``): MLflow 3's UI opens other experiments in its GenAI layout
    (traces, judges, prompts; a sweep filed under "Evaluations"). An experiment created
    before, by another tool or by hand gets the tag on its first qeu-tune sweep. Sweeps that
    start together may race to create or tag it (on PostgreSQL the loser's write breaks a unique
    key and MLflow answers BAD_REQUEST): the loser reads it back instead of failing.
    """

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_location_for(tracking_uri),
                tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING},
            )
        except Exception:  # noqa: BLE001 - another sweep may have created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if not _is_training(found):
        try:
            client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING)
        except Exception:  # noqa: BLE001 - sweeps starting together race on the tag's unique key
            if not _is_training(client.get_experiment(found.experiment_id)):
                raise
    return found.experiment_id


def _is_training(experiment: Any) -> bool:
    return (experiment.tags or {}).get(TAG_EXPERIMENT_KIND) == EXPERIMENT_KIND_TRAINING


# -- applying entries to MLflow -----------------------------------------------------------
class _Unresolved(Exception):
    """An entry names a run key whose creation was rejected: nothing to write it to."""


class Applier:
    """Applies journal entries to an ``MlflowClient``, translating run keys to run ids.

    Args:
        client: The MLflow client (looked up at call time, so tests may patch its methods).
        experiment_id: Where runs are created.
        state: Holds the run key -> run id map (updated as runs are created).
        spool_dir: For artifact blobs.
    """

    def __init__(self, client: Any, experiment_id: str, state: Any, spool_dir: Path, *, replaying: bool = True) -> None:
        self.client = client
        self.replaying = replaying  # entries may have been applied before (sync): look runs up first
        self._attempted: set = set()  # run keys whose creation this applier tried
        self.experiment_id = experiment_id
        self.state = state
        self.spool_dir = spool_dir
        self.points = 0
        self.runs_created = 0
        self._built: Tuple[Any, Dict[str, List[Any]]] = (None, {})  # the last metrics unit, for retries

    def run_id(self, ref: Optional[str]) -> str:
        if not is_run_key(ref):
            return str(ref)  # a real MLflow run id passed through
        found = self.state.runs.get(ref) or self._find(ref)
        if found is None:
            raise _Unresolved(f"run {ref} was never created")
        return found

    def _find(self, key: str) -> Optional[str]:
        from mlflow.entities import ViewType

        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{TAG_RUN_KEY}` = '{key}'", run_view_type=ViewType.ALL, max_results=1
        )
        if not runs:
            return None
        self.state.add_run(key, runs[0].info.run_id)
        return runs[0].info.run_id

    def _tag_value(self, value: str) -> str:
        # A run key in a tag (mlflow.parentRunId, qeu.best_run_id) becomes the real run id,
        # also a key handed out by an earlier process (the parent of a resumed sweep).
        if not is_run_key(value):
            return value
        return self.state.runs.get(value) or self._find(value) or value

    def apply(self, unit: Sequence[dict]) -> None:
        """Applies one unit: a single entry, consecutive ``metrics`` entries (coalesced), or a
        stretch of any entries (``_apply_merged``)."""
        first = unit[0]
        op = first["op"]
        if op == "metrics" and all(entry["op"] == "metrics" for entry in unit):
            self._metrics(unit)
            return
        if len(unit) > 1:
            self._apply_merged(unit)
            return
        if op == "create_run":
            self._create_run(first)
            return
        run_id = self.run_id(first["run"])
        if op == "params":
            self._log_batch(run_id, params=self._params(first))
        elif op == "tags":
            self._log_batch(run_id, tags=self._tags(first))
        elif op == "artifact":
            self.client.log_artifact(run_id, str(self.spool_dir / first["blob"]), first.get("path"))
        elif op == "artifacts":
            self.client.log_artifacts(run_id, str(self.spool_dir / first["blob"]), first.get("path"))
        elif op == "end_run":
            self.client.set_terminated(run_id, status=first["status"], end_time=first.get("time"))
        elif op == "reopen_run":
            self.client.update_run(run_id, status="RUNNING")
        elif op == "delete_run":  # soft delete; repeating it is harmless
            self.client.delete_run(run_id)
        else:
            raise _Unresolved(f"unknown journal op {op!r}")

    def _apply_merged(self, unit: Sequence[dict]) -> None:
        """Applies a stretch of entries with one ``log_batch`` per run for its params, tags and
        metrics, instead of one call per entry (a trial journals ~20 results, a params and a
        tags entry; a call costs a transaction in a SQL store, a request to a server).

        Entries of different runs are independent, so a run's batch may wait while other runs'
        entries are applied; a change of the run itself (end, reopen, delete) sends its batch
        first, so its status changes in journal order. A tag set twice keeps the later value, as
        two calls would; a param set twice to different values is sent twice (MLflow refuses it).
        """
        from mlflow.entities import Metric

        batches: Dict[str, Tuple[list, dict, dict]] = {}  # run key -> (metrics, params, tags)

        def send(ref: str) -> None:
            metrics, params, tags = batches.pop(ref, ([], {}, {}))
            if metrics or params or tags:
                self._log_batch(self.run_id(ref), metrics, list(params.values()), list(tags.values()))
                self.points += len(metrics)

        for entry in unit:
            op, ref = entry["op"], entry.get("run")
            if op not in ("metrics", "params", "tags"):
                if op not in ("artifact", "artifacts"):  # files do not depend on the batch
                    send(ref)
                self.apply([entry])
                continue
            metrics, params, tags = batches.setdefault(ref, ([], {}, {}))
            if op == "metrics":
                metrics.extend(Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in entry["m"])
            elif op == "params":
                logged = self._params(entry)
                if any(params.get(p.key, p).value != p.value for p in logged):
                    send(ref)  # a changed value: MLflow must see (and refuse) it as a second call
                    metrics, params, tags = batches.setdefault(ref, ([], {}, {}))
                params.update((param.key, param) for param in logged)
            else:
                tags.update((tag.key, tag) for tag in self._tags(entry))
        for ref in list(batches):
            send(ref)

    def _params(self, entry: dict) -> List[Any]:
        from mlflow.entities import Param

        return [Param(k, v) for k, v in entry["params"].items()]

    def _tags(self, entry: dict) -> List[Any]:
        from mlflow.entities import RunTag

        return [RunTag(k, self._tag_value(v)) for k, v in entry["tags"].items()]

    def _log_batch(
        self, run_id: str, metrics: Sequence[Any] = (), params: Sequence[Any] = (), tags: Sequence[Any] = ()
    ) -> None:
        """``log_batch`` calls within MLflow's limits (100 params, 100 tags, 1000 entities a call)."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            p, params = params[:PARAM_BATCH], params[PARAM_BATCH:]
            t, tags = tags[:TAG_BATCH], tags[TAG_BATCH:]
            room = METRIC_BATCH - len(p) - len(t)
            m, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(run_id, metrics=m, params=p, tags=t)

    def _create_run(self, entry: dict) -> None:
        key = entry["run"]
        if key in self.state.runs:
            return
        # A replay, or a retry after an error that may have come after the write: the run may
        # exist. Otherwise the lookup is skipped: it scans the experiment's tags, and a sweep of
        # N trials would pay it N times (quadratic).
        if (self.replaying or key in self._attempted) and self._find(key) is not None:
            return
        self._attempted.add(key)
        tags = {k: self._tag_value(str(v)) for k, v in entry["tags"].items()}
        tags[TAG_RUN_KEY] = key
        run = self.client.create_run(
            self.experiment_id, start_time=entry.get("time"), tags=tags, run_name=entry.get("name")
        )
        self.state.add_run(key, run.info.run_id)
        self.runs_created += 1

    def _metrics(self, unit: Sequence[dict]) -> None:
        from mlflow.entities import Metric

        # During an outage the same unit is retried many times: build its Metric objects once
        # (less time holding the GIL that the caller's thread needs).
        key = (unit[0]["s"], len(unit))
        by_run = self._built[1] if self._built[0] == key else {}
        if not by_run:
            for entry in unit:
                by_run.setdefault(self.run_id(entry["run"]), []).extend(
                    Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in entry["m"]
                )
            self._built = (key, by_run)
        for run_id, metrics in by_run.items():
            for i in range(0, len(metrics), METRIC_BATCH):
                self.client.log_batch(run_id, metrics=metrics[i : i + METRIC_BATCH])
        self.points += sum(len(m) for m in by_run.values())
