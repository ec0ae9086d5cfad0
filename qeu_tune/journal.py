"""A journaled, non-blocking MLflow writer: the tracker can go away, the data cannot.

Every tracking operation is appended to an append-only JSON-lines journal, one directory
per sweep under ``$QEU_TUNE_HOME/spool/<key>/``, and applied to MLflow by ONE writer thread.
The caller (Tune's callback on Tune's driver event loop) only serialises a line and writes
it to the page cache, so it never waits for MLflow. The journal is the source of truth:
the in-memory queue between caller and writer is bounded and may drop entries when full;
the writer then re-reads them from the journal file.

Layout of a spool directory:

- ``meta.json``: tracking URI, experiment name, mode, creation time.
- ``journal.jsonl``: one operation a line, ``{"s": seq, "op": ..., "run": run_key, ...}``.
- ``state.json``: per tracking URI, the acknowledged offset (``next_seq``, ``offset``: the
  first entry not yet applied) and the run key -> MLflow run id map. Rewritten atomically
  after every successful write.
- ``blobs/``: copies of artifacts (text files, directories) taken when they were logged.
- ``rejected.jsonl``: entries MLflow refused permanently (invalid values), with the error.

Replays are idempotent, so a crash between a write and its acknowledgement costs nothing:
every created run carries the tag ``qeu.run_key`` and is looked up by it before creating;
metric points keep the timestamp they were reported with, so a replayed point is an exact
duplicate (same key, value, timestamp, step) that MLflow's SQL store skips; params are
re-logged with the same value, tags and artifacts overwrite themselves, ``set_terminated``
is repeatable.

``sync_spool`` replays what a spool has not yet acknowledged (after an outage that outlived
the sweep, or an ``offline`` sweep); ``run_sync`` is the ``qeu-tune sync`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

TAG_RUN_KEY = "qeu.run_key"
TAG_RUN_NAME = "mlflow.runName"
RUN_KEY_PREFIX = "qk-"
MODES = ("online", "offline")

JOURNAL_FILE = "journal.jsonl"
STATE_FILE = "state.json"
META_FILE = "meta.json"
LOCK_FILE = "lock"
REJECTED_FILE = "rejected.jsonl"
BLOBS_DIR = "blobs"

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
_PERMANENT_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST",
    "RESOURCE_ALREADY_EXISTS", "INVALID_REQUEST",
})
_OP_NAMES = {  # journal op -> the Tracker method, for messages
    "create_run": "create_run", "params": "log_params", "tags": "set_tags", "metrics": "log_metrics",
    "artifact": "log_artifact", "artifacts": "log_artifacts", "end_run": "end_run",
    "reopen_run": "reopen_run", "delete_run": "delete_run",
}


def spool_root() -> Path:
    """``$QEU_TUNE_HOME/spool``: where every sweep's journal lives."""
    from qeu_tune.paths import qeu_home

    return qeu_home() / "spool"


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
    """The id of experiment ``name``, created (with artifacts next to a SQLite store) if missing."""
    from qeu_tune.paths import artifact_location_for

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # MLflow 3's UI opens GenAI views unless told this is classic model training.
    return client.create_experiment(
        name, artifact_location=artifact_location_for(tracking_uri),
        tags={"mlflow.experimentKind": "custom_model_development"},
    )


# -- files --------------------------------------------------------------------------------
def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def read_journal(path: Path, offset: int = 0, limit: Optional[int] = None) -> Iterator[Tuple[int, int, int, dict]]:
    """``(seq, start_offset, end_offset, entry)`` for each complete line from ``offset`` on.

    A torn last line (a crash mid-write: no newline) ends the journal; it is not an error.
    """
    count = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while limit is None or count < limit:
            start = f.tell()
            line = f.readline()
            if not line or not line.endswith(b"\n"):
                return
            try:
                entry = json.loads(line)
            except ValueError:
                log.warning("journal %s: unreadable line at byte %d skipped", path, start)
                continue
            count += 1
            yield int(entry["s"]), start, f.tell(), entry


class SpoolLock:
    """An exclusive ``flock`` on a spool: one writer (a live tracker or a sync) at a time."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / LOCK_FILE
        self._fd: Optional[int] = None
        self._mutex = threading.Lock()  # the writer thread and close() may both release

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)  # closing drops the flock
                self._fd = None


class SpoolState:
    """``state.json``: per tracking URI, the acknowledged offset and the run id map."""

    def __init__(self, spool_dir: Path, tracking_uri: str) -> None:
        self.path = spool_dir / STATE_FILE
        self.tracking_uri = tracking_uri
        data = _read_json(self.path, {})
        self._all = {"acked": data.get("acked", {}), "runs": data.get("runs", {})}
        acked = self._all["acked"].get(tracking_uri) or {}
        self.next_seq = int(acked.get("next_seq", 0))
        self.offset = int(acked.get("offset", 0))
        self.runs: Dict[str, str] = dict(self._all["runs"].get(tracking_uri) or {})

    def ack(self, next_seq: int, offset: int) -> None:
        """Records that every entry before ``next_seq`` (byte ``offset``) was applied, on disk."""
        self.next_seq, self.offset = next_seq, offset
        self._all["acked"][self.tracking_uri] = {"next_seq": next_seq, "offset": offset}
        self._all["runs"][self.tracking_uri] = dict(self.runs)
        _write_json_atomic(self.path, self._all)


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

    def __init__(self, client: Any, experiment_id: str, state: SpoolState, spool_dir: Path) -> None:
        self.client = client
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
        self.state.runs[key] = runs[0].info.run_id
        return runs[0].info.run_id

    def _tag_value(self, value: str) -> str:
        # A run key in a tag (mlflow.parentRunId, qeu.best_run_id) becomes the real run id,
        # also a key handed out by an earlier process (the parent of a resumed sweep).
        if not is_run_key(value):
            return value
        return self.state.runs.get(value) or self._find(value) or value

    def apply(self, unit: Sequence[dict]) -> None:
        """Applies one unit: a single entry, or consecutive ``metrics`` entries (coalesced)."""
        first = unit[0]
        op = first["op"]
        if op == "metrics":
            self._metrics(unit)
            return
        if op == "create_run":
            self._create_run(first)
            return
        run_id = self.run_id(first["run"])
        if op == "params":
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in first["params"].items()]
            for i in range(0, len(items), PARAM_BATCH):
                self.client.log_batch(run_id, params=items[i : i + PARAM_BATCH])
        elif op == "tags":
            from mlflow.entities import RunTag

            items = [RunTag(k, self._tag_value(v)) for k, v in first["tags"].items()]
            for i in range(0, len(items), TAG_BATCH):
                self.client.log_batch(run_id, tags=items[i : i + TAG_BATCH])
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

    def _create_run(self, entry: dict) -> None:
        key = entry["run"]
        if key in self.state.runs or self._find(key) is not None:
            return  # a replay: the run exists already
        tags = {k: self._tag_value(str(v)) for k, v in entry["tags"].items()}
        tags[TAG_RUN_KEY] = key
        run = self.client.create_run(self.experiment_id, start_time=entry.get("time"), tags=tags,
                                     run_name=entry.get("name"))
        self.state.runs[key] = run.info.run_id
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


def next_unit(pending: Sequence[Tuple[int, int, int, dict]], max_points: int = METRIC_BATCH) -> int:
    """How many entries from the front of ``pending`` form the next write.

    Consecutive ``metrics`` entries (any runs) are coalesced while each run's batch stays
    within ``max_points``: one ``log_batch`` per run instead of one per reported result.
    """
    if not pending or pending[0][3]["op"] != "metrics":
        return 1 if pending else 0
    per_run: Dict[str, int] = {}
    n = 0
    for _, _, _, entry in pending:
        if entry["op"] != "metrics":
            break
        size = per_run.get(entry["run"], 0) + len(entry["m"])
        if n and size > max_points:
            break
        per_run[entry["run"]] = size
        n += 1
    return n


def _reject(spool_dir: Path, entry: dict, err: BaseException) -> None:
    try:
        with open(spool_dir / REJECTED_FILE, "a") as f:
            f.write(json.dumps({"entry": entry, "error": f"{type(err).__name__}: {err}"}) + "\n")
    except OSError:
        pass


# -- the spool: journal append side and the writer thread ---------------------------------
class Spool:
    """One sweep's journal: ``append`` for the caller, a writer thread that applies it.

    Args:
        spool_dir: The sweep's spool directory (created).
        tracking_uri: Where the writer writes (recorded in meta.json for ``sync``).
        experiment: Experiment name (recorded for ``sync``).
        mode: ``online`` (start the writer) or ``offline`` (journal only).
        client: The MLflow client (online).
        experiment_id: The experiment's id (online).
        warn: ``warn_once(kind, message)`` of the owning tracker.
        queue_size: Bound of the in-memory queue (journal lines, ~1.6 KB for 40 metrics);
            beyond it, the writer re-reads the journal file.
        min_backoff_s: First retry delay after a failure (doubles up to ``max_backoff_s``).
        max_backoff_s: Longest retry delay.
    """

    def __init__(
        self,
        spool_dir: Path,
        *,
        tracking_uri: str,
        experiment: str,
        mode: str,
        client: Any = None,
        experiment_id: Optional[str] = None,
        warn: Callable[[str, str], None],
        queue_size: int = 2000,
        min_backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.dir = Path(spool_dir)
        (self.dir / BLOBS_DIR).mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.mode = mode
        self._warn = warn
        _write_json_atomic(self.dir / META_FILE, {
            "version": 1, "tracking_uri": tracking_uri, "experiment": experiment, "mode": mode,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(),
        })
        self._lock = threading.RLock()  # append side: seq, file position (close re-enters it)
        self._file = open(self.dir / JOURNAL_FILE, "ab")
        self._offset = self._file.tell()
        self._seq = 0
        self.last_seq = -1  # highest seq fully written (published after the flush)
        # Lines, not parsed entries: a few MB at most, parsed by the writer thread.
        self._queue: "queue.Queue[Tuple[int, int, int, bytes]]" = queue.Queue(maxsize=queue_size)
        self.dropped = 0  # entries the queue had no room for (re-read from the journal)
        self.rejected = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._closed = False
        self._close_result = False
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.state = SpoolState(self.dir, tracking_uri)
        self._spool_lock = SpoolLock(self.dir)
        self._spool_lock.acquire()  # a concurrent `qeu-tune sync` leaves this spool alone
        self._thread: Optional[threading.Thread] = None
        self.failing = False
        if mode == "online":
            self.applier = Applier(client, str(experiment_id), self.state, self.dir)
            self._thread = threading.Thread(target=self._run, name="qeu-tune-mlflow-writer", daemon=True)
            self._thread.start()

    # -- caller side (must stay cheap: Tune's driver loop) ------------------------------
    def append(self, entry: dict) -> bool:
        """Journals ``entry``; hands it to the writer. Never blocks on MLflow, never raises."""
        try:
            with self._lock:
                if self._closed:
                    self._warn("closed", "MLflow tracking was already closed; a late tracking call was dropped.")
                    return False
                entry["s"] = seq = self._seq
                line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
                self._file.write(line)
                self._file.flush()  # to the OS page cache: visible to the writer's reads
                start, self._offset = self._offset, self._offset + len(line)
                self._seq += 1
                self.last_seq = seq
            if self._thread is not None:
                try:
                    self._queue.put_nowait((seq, start, start + len(line), line))
                except queue.Full:
                    self.dropped += 1  # the writer re-reads it from the journal
                self._wake.set()
            return True
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("journal", f"could not write the tracking journal in {self.dir} ({type(err).__name__}: "
                                  f"{err}); this tracking data is lost, training continues.")
            return False

    def blob_dir(self) -> Path:
        """A fresh directory for an artifact's copy (written before its journal line)."""
        path = self.dir / BLOBS_DIR / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def pending_count(self) -> int:
        """Entries journaled but not yet acknowledged by MLflow."""
        return self.last_seq + 1 - self.state.next_seq

    def resolve(self, run_key: Optional[str]) -> Optional[str]:
        if run_key is None or not is_run_key(run_key):
            return run_key
        return self.state.runs.get(run_key)

    def flush(self, timeout_s: float) -> bool:
        """Waits until everything journaled so far is in MLflow; False on timeout or offline."""
        self._sync_file()
        if self._thread is None:
            return False
        target = self.last_seq + 1
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._wake.set()
        with self._progress:
            while self.state.next_seq < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._progress.wait(min(left, 0.2))
        return True

    def close(self, timeout_s: float) -> bool:
        """Flushes for up to ``timeout_s``, stops the writer, closes the journal.

        Returns:
            True when everything reached MLflow (the spool may then be removed).
        """
        if self._closed:
            return self._close_result
        done = self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0 if done else 0.5)  # a hung request must not hold the sweep
        with self._lock:
            self._closed = True
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if self._thread is None or not self._thread.is_alive():
            self._spool_lock.release()
        self._close_result = done and self.pending_count() == 0
        return self._close_result

    def _sync_file(self) -> None:
        # Without the append lock: each append already flushed Python's buffer, and an fsync
        # that waits for a busy disk must not stall the caller.
        try:
            os.fsync(self._file.fileno())
        except (OSError, ValueError):  # ValueError: closed meanwhile
            pass

    # -- writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as err:  # noqa: BLE001 - a writer bug must not take the sweep down
            self._warn("writer", f"the MLflow writer thread stopped ({type(err).__name__}: {err}); the data "
                                 f"stays in {self.dir}: upload it with `qeu-tune sync {self.dir}`.")
        finally:
            if self._closed:  # close() gave up waiting for a hung request: free the spool now
                self._spool_lock.release()

    def _loop(self) -> None:
        pending: List[Tuple[int, int, int, dict]] = []
        carry: List[Optional[Tuple[int, int, int, dict]]] = [None]
        fill_seq, fill_off = self.state.next_seq, self.state.offset
        backoff = self.min_backoff_s
        last_fsync = time.monotonic()
        while True:
            if len(pending) < 500:
                fill_seq, fill_off = self._fill(pending, carry, fill_seq, fill_off, limit=1000)
            if not pending:
                if self._stop.is_set():
                    return
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            n = next_unit(pending)
            unit = [p[3] for p in pending[:n]]
            try:
                with short_http_retries(**WRITER_HTTP):
                    self.applier.apply(unit)
            except Exception as err:  # noqa: BLE001 - classify: set aside or retry
                if isinstance(err, _Unresolved) or is_permanent(err):
                    self._set_aside(pending[:n], err)
                else:
                    self.failing = True
                    op = _OP_NAMES.get(unit[0]["op"], unit[0]["op"])
                    self._warn(op, f"MLflow {op} failed ({type(err).__name__}: {err}); training continues, the "
                                   f"data is kept in {self.dir} and retried.")
                    if self._stop.wait(backoff):
                        return  # closing: the rest stays in the journal for `qeu-tune sync`
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
            if self.failing:
                log.info("MLflow at %s is reachable again; replaying the journal", self.tracking_uri)
                self.failing = False
            backoff = self.min_backoff_s
            seq, _, end, _ = pending[n - 1]
            del pending[:n]
            if time.monotonic() - last_fsync > 1.0:  # the ack must not get ahead of the disk
                self._sync_file()
                last_fsync = time.monotonic()
            try:
                self.state.ack(seq + 1, end)
            except OSError as err:
                self._warn("state", f"could not record tracking progress in {self.dir} ({err}); "
                                    "a later sync replays more (harmless).")
                self.state.next_seq, self.state.offset = seq + 1, end
            with self._progress:
                self._progress.notify_all()

    def _set_aside(self, items: Sequence[Tuple[int, int, int, dict]], err: BaseException) -> None:
        self.rejected += len(items)
        for item in items:
            _reject(self.dir, item[3], err)
        op = _OP_NAMES.get(items[0][3]["op"], items[0][3]["op"])
        self._warn(f"rejected-{op}", f"MLflow refused {op} ({type(err).__name__}: {err}); the entry is set aside "
                                     f"in {self.dir / REJECTED_FILE}, tracking continues.")

    def _fill(self, pending: list, carry: list, fill_seq: int, fill_off: int, limit: int) -> Tuple[int, int]:
        """Moves entries ``fill_seq...`` into ``pending``: from the queue, or the journal file
        when the queue dropped some (a gap in seq)."""
        while len(pending) < limit and fill_seq <= self.last_seq:
            item = carry[0]
            if item is None:
                try:
                    item = carry[0] = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if item is not None and item[0] < fill_seq:
                carry[0] = None  # already read from the journal
                continue
            if item is not None and item[0] == fill_seq:
                pending.append((item[0], item[1], item[2], json.loads(item[3])))
                carry[0] = None
                fill_seq, fill_off = fill_seq + 1, item[2]
                continue
            upto = item[0] if item is not None else self.last_seq + 1
            want = min(limit - len(pending), upto - fill_seq)
            got = 0
            for rec in read_journal(self.dir / JOURNAL_FILE, fill_off, want):
                pending.append(rec)
                fill_seq, fill_off = rec[0] + 1, rec[2]
                got += 1
            if got == 0:
                break  # not visible yet; next round
        return fill_seq, fill_off


# -- sync ---------------------------------------------------------------------------------
def sync_spool(
    spool_dir: Optional[os.PathLike] = None,
    tracking_uri: Optional[str] = None,
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> Dict[str, Any]:
    """Replays what a spool has not yet acknowledged into MLflow; running it twice adds nothing.

    Args:
        spool_dir: One sweep's spool; None: every spool under ``$QEU_TUNE_HOME/spool``.
        tracking_uri: Where to write; None: the URI the sweep was recorded for.
        retries: Retries of a failing write before giving up (the spool stays as it is).
        backoff_s: First retry delay (doubles).

    Returns:
        A summary: ``{"spools": [per-spool summary], "entries": ..., "points": ..., "runs_created": ...}``;
        per spool also ``spool``, ``tracking_uri``, ``already_acknowledged``, ``rejected``, ``error``.
    """
    dirs = [Path(spool_dir)] if spool_dir is not None else sorted(
        p for p in spool_root().glob("*") if (p / META_FILE).exists()
    )
    summaries = [_sync_one(d, tracking_uri, retries, backoff_s) for d in dirs]
    return {
        "spools": summaries,
        "entries": sum(s["entries"] for s in summaries),
        "points": sum(s["points"] for s in summaries),
        "runs_created": sum(s["runs_created"] for s in summaries),
        "errors": sum(1 for s in summaries if s.get("error")),
    }


def _sync_one(spool_dir: Path, tracking_uri: Optional[str], retries: int, backoff_s: float) -> Dict[str, Any]:
    from mlflow.tracking import MlflowClient

    meta = _read_json(spool_dir / META_FILE, None)
    if meta is None:
        raise FileNotFoundError(f"{spool_dir} is not a qeu-tune spool (no {META_FILE})")
    uri = tracking_uri or meta["tracking_uri"]
    summary: Dict[str, Any] = {"spool": str(spool_dir), "tracking_uri": uri, "entries": 0, "points": 0,
                               "runs_created": 0, "rejected": 0, "already_acknowledged": 0, "error": None}
    lock = SpoolLock(spool_dir)
    applier: Optional[Applier] = None
    if not lock.acquire():
        summary["skipped"] = "in use by a running sweep or another sync"
        return summary
    try:
        state = SpoolState(spool_dir, uri)
        summary["already_acknowledged"] = state.next_seq
        client = MlflowClient(tracking_uri=uri)
        with short_http_retries(**WRITER_HTTP):
            experiment_id = ensure_experiment(client, meta["experiment"], uri)
            applier = Applier(client, experiment_id, state, spool_dir)
            journal = spool_dir / JOURNAL_FILE
            while True:
                pending = list(read_journal(journal, state.offset, limit=2000)) if journal.exists() else []
                if not pending:
                    break
                while pending:
                    n = next_unit(pending)
                    err = _apply_with_retries(applier, [p[3] for p in pending[:n]], retries, backoff_s)
                    if err is not None and not (isinstance(err, _Unresolved) or is_permanent(err)):
                        summary["error"] = f"{type(err).__name__}: {err}"
                        return summary
                    if err is not None:
                        summary["rejected"] += n
                        for p in pending[:n]:
                            _reject(spool_dir, p[3], err)
                    seq, _, end, _ = pending[n - 1]
                    state.ack(seq + 1, end)
                    summary["entries"] += n
                    del pending[:n]
    except Exception as err:  # noqa: BLE001 - one spool's failure is reported, the others go on
        summary["error"] = f"{type(err).__name__}: {err}"
        return summary
    finally:
        lock.release()
        if applier is not None:
            summary["points"], summary["runs_created"] = applier.points, applier.runs_created
    return summary


def _apply_with_retries(applier: Applier, unit: List[dict], retries: int, backoff_s: float) -> Optional[BaseException]:
    for attempt in range(retries + 1):
        try:
            applier.apply(unit)
            return None
        except Exception as err:  # noqa: BLE001 - classified by the caller
            if isinstance(err, _Unresolved) or is_permanent(err) or attempt == retries:
                return err
            time.sleep(backoff_s * 2**attempt)
    return None


def sync_parser() -> argparse.ArgumentParser:
    """``qeu-tune sync [SPOOL_DIR] [--tracking-uri URI]``."""
    parser = argparse.ArgumentParser(
        prog="qeu-tune sync",
        description="Upload tracking data kept in a spool (offline sweep, or MLflow was unreachable) to MLflow. "
                    "Replays only what was not yet acknowledged; running it twice adds nothing.",
    )
    parser.add_argument("spool_dir", nargs="?", default=None,
                        help="a sweep's spool directory (default: every spool under $QEU_TUNE_HOME/spool)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: the URI each sweep was recorded for)")
    return parser


def run_sync(argv: Sequence[str]) -> int:
    """Runs ``qeu-tune sync``; prints one line per spool; returns the exit code (1 if any failed)."""
    args = sync_parser().parse_args(list(argv))
    if args.spool_dir is not None and not (Path(args.spool_dir) / META_FILE).exists():
        print(f"{args.spool_dir} is not a qeu-tune spool directory (it has no {META_FILE}); spools are under "
              f"{spool_root()}.")
        return 2
    summary = sync_spool(args.spool_dir, args.tracking_uri)
    if not summary["spools"]:
        print(f"No spools under {spool_root()}: nothing to sync.")
    for s in summary["spools"]:
        status = f"FAILED ({s['error']}); run sync again when MLflow is reachable" if s["error"] else (
            f"skipped ({s['skipped']})" if s.get("skipped") else "ok")
        print(f"{s['spool']} -> {s['tracking_uri']}: {s['entries']} entries, {s['points']} metric points, "
              f"{s['runs_created']} runs created, {s['rejected']} rejected; {status}")
    return 1 if summary["errors"] else 0
