"""A journaled, non-blocking MLflow writer: the tracker can go away, the data cannot.

Every tracking operation is appended to an append-only JSON-lines journal, one directory
per sweep under ``$QEU_TUNE_HOME/spool/<key>/``, and applied to MLflow by ONE writer: a
process of its own (``qeu_tune.tracking.writer_process``) that reads the journal file as it
grows, or a thread fed by a bounded in-memory queue (which may drop entries when full: the
thread then re-reads them from the file). The caller (Tune's callback on Tune's driver event
loop) only serialises a line and writes it to the page cache, so it never waits for MLflow.
The journal is the source of truth.

Layout of a spool directory:

- ``meta.json``: tracking URI, experiment name, mode, creation time.
- ``journal.jsonl``: one operation a line, ``{"s": seq, "op": ..., "run": run_key, ...}``.
- ``state.json``: per tracking URI, the acknowledged offset (``next_seq``, ``offset``: the
  first entry not yet applied). Rewritten atomically after every successful write, so it
  stays small whatever the sweep's size.
- ``runs.jsonl``: the run key -> MLflow run id map, one line per created run (appended: a
  10,000-trial sweep does not rewrite 10,000 ids after every write). A lost line costs a
  lookup by the run's ``qeu.run_key`` tag, never a duplicate run.
- ``blobs/``: copies of artifacts (text files, directories) taken when they were logged.
- ``rejected.jsonl``: entries MLflow refused permanently (invalid values), with the error.

Replays are idempotent, so a crash between a write and its acknowledgement costs nothing:
every created run carries the tag ``qeu.run_key`` and is looked up by it before creating;
metric points keep the timestamp they were reported with, so a replayed point is an exact
duplicate (same key, value, timestamp, step) that MLflow's SQL store skips; params are
re-logged with the same value, tags and artifacts overwrite themselves, ``set_terminated``
is repeatable.

``qeu_tune.tracking.writer`` applies the journal to MLflow (through ``qeu_tune.tracking.store``);
``qeu_tune.tracking.sync`` replays what a spool has not yet acknowledged (after an outage that outlived the sweep, or an ``offline`` sweep).

"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from qeu_tune.core.paths import qeu_home
from qeu_tune.core.redact import redact, redact_uri
from qeu_tune.tracking.journal_file import (  # noqa: F401 - the spool's file names, read with the Spool
    BLOBS_DIR,
    JOURNAL_FILE,
    LOCK_FILE,
    META_FILE,
    REJECTED_FILE,
    SpoolLock,
    read_journal,
)
from qeu_tune.tracking.spool_state import SpoolState, read_json, write_json_atomic
from qeu_tune.tracking.store import Applier, is_run_key
from qeu_tune.tracking.writer import ThreadWriter
from qeu_tune.tracking.writer_process import WriterProcess

log = logging.getLogger(__name__)


MODES = ("online", "offline")


def spool_root() -> Path:
    """``$QEU_TUNE_HOME/spool``: where every sweep's journal lives."""

    return qeu_home() / "spool"


def unconfirmed(spool_dir: Path, tracking_uri: Optional[str] = None) -> Optional[str]:
    """Why the spool still holds data the store has not confirmed; None when it holds none.

    Confirmed means ``state.json`` acknowledges the whole journal for ``tracking_uri`` (default:
    the URI in ``meta.json``) and no entry was rejected (``rejected.jsonl`` keeps what MLflow
    refused, which only the spool still has).
    """
    meta = read_json(spool_dir / META_FILE, None)
    if meta is None:
        return f"not a spool (no {META_FILE})"
    uri = tracking_uri or meta["tracking_uri"]
    journal = spool_dir / JOURNAL_FILE
    size = journal.stat().st_size if journal.exists() else 0
    acked = SpoolState(spool_dir, uri).offset
    if acked < size:
        return f"{size - acked} bytes of its journal not yet acknowledged by {redact(uri)}"
    rejected = spool_dir / REJECTED_FILE
    if rejected.exists() and rejected.stat().st_size:
        return f"MLflow rejected entries: see {rejected}"
    return None


# -- the spool: journal append side and its writer ------------------------------------------
WRITERS = ("process", "thread")


class Spool:
    """One sweep's journal: ``append`` for the caller, one writer that applies it to MLflow.

    The writer is a process of its own (``writer="process"``: MLflow's store work, a third of a
    large sweep's driver CPU, then runs beside Tune's loop instead of sharing its GIL; see
    ``qeu_tune.tracking.writer_process``) or a thread of this process (``writer="thread"``).

    Args:
        spool_dir: The sweep's spool directory (created).
        tracking_uri: Where the writer writes (recorded in meta.json for ``sync``).
        experiment: Experiment name (recorded for ``sync``).
        mode: ``online`` (start the writer) or ``offline`` (journal only).
        client: The MLflow client (online).
        experiment_id: The experiment's id (online).
        warn: ``warn_once(kind, message)`` of the owning tracker.
        writer: ``process`` or ``thread`` (online).
        queue_size: Bound of the in-memory queue of a writer thread (journal lines, ~1.6 KB for
            40 metrics); beyond it, the writer re-reads the journal file.
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
        writer: str = "thread",
        queue_size: int = 2000,
        min_backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.dir = Path(spool_dir)
        (self.dir / BLOBS_DIR).mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.mode = mode
        self._warn = warn
        write_json_atomic(
            self.dir / META_FILE,
            {
                "version": 1,
                "tracking_uri": redact_uri(tracking_uri),  # `sync` needs the password given again
                "experiment": experiment,
                "mode": mode,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "pid": os.getpid(),
            },
        )
        self._lock = threading.RLock()  # append side: seq, file position (close re-enters it)
        self._file = open(self.dir / JOURNAL_FILE, "ab")
        self._offset = self._file.tell()
        self._seq = 0
        self.last_seq = -1  # highest seq fully written (published after the flush)
        self._progress = threading.Condition()
        self._closed = False
        self._close_result = False
        self._client, self._experiment_id = client, str(experiment_id)
        self._queue_size = queue_size
        self._backoff = (min_backoff_s, max_backoff_s)
        self.state = SpoolState(self.dir, tracking_uri)
        self._spool_lock = SpoolLock(self.dir)
        self._spool_lock.acquire()  # a concurrent `qeu-tune sync` leaves this spool alone
        self.writer: Any = None  # ThreadWriter or writer_process.WriterProcess
        if mode != "online":
            return
        if writer not in WRITERS:
            raise ValueError(f"writer={writer!r} is not one of {', '.join(WRITERS)}")
        if writer == "process":
            self.writer = WriterProcess(self, lock_fd=self._spool_lock.fd)
        else:
            # Every entry of a live spool was appended by this process: a run it creates is new
            # (no lookup by tag first, which scans the experiment) unless its creation is retried.
            self.writer = self._thread_writer(replaying=False)

    def _thread_writer(self, *, replaying: bool) -> ThreadWriter:
        applier = Applier(self._client, self._experiment_id, self.state, self.dir, replaying=replaying)
        return ThreadWriter(self, applier, queue_size=self._queue_size, backoff=self._backoff)

    def writer_lost(self, why: str) -> None:
        """The writer process ended on its own: a writer thread takes over from what it
        acknowledged on disk (re-reading the run map; a run it may have created is looked up)."""
        self._warn("writer-process", f"the MLflow writer process {why}; a writer thread takes over.")
        with self._lock:
            if self._closed:
                return
            self.state = SpoolState(self.dir, self.tracking_uri)
            self.writer = self._thread_writer(replaying=True)
        with self._progress:
            self._progress.notify_all()

    def notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

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
            if self.writer is not None:
                self.writer.offer(seq, start, start + len(line), line)
            return True
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn(
                "journal",
                f"could not write the tracking journal in {self.dir} ({type(err).__name__}: "
                f"{err}); this tracking data is lost, training continues.",
            )
            return False

    def blob_dir(self) -> Path:
        """A fresh directory for an artifact's copy (written before its journal line)."""
        path = self.dir / BLOBS_DIR / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    @property
    def rejected(self) -> int:
        """Entries MLflow refused (set aside in rejected.jsonl)."""
        return self.writer.rejected if self.writer is not None else 0

    def pending_count(self) -> int:
        """Entries journaled but not yet acknowledged by MLflow."""
        return self.last_seq + 1 - self.state.next_seq

    def resolve(self, run_key: Optional[str]) -> Optional[str]:
        if run_key is None or not is_run_key(run_key):
            return run_key
        return self.state.runs.get(run_key)

    def flush(self, timeout_s: float) -> bool:
        """Waits until everything journaled so far is in MLflow; False offline, or once
        ``timeout_s`` passed without progress (a slow tracking server that still takes writes,
        as at the end of a 1,000-trial sweep, is waited for; one that is down is not)."""
        self.sync_file()
        if self.writer is None:
            return False
        target, seen = self.last_seq + 1, self.state.next_seq
        deadline = time.monotonic() + max(0.0, timeout_s)
        writer = self.writer
        writer.hurry(True)
        try:
            with self._progress:
                while self.state.next_seq < target:
                    if self.state.next_seq > seen:
                        seen, deadline = self.state.next_seq, time.monotonic() + max(0.0, timeout_s)
                    if self.writer is not writer:  # a writer thread took over from the process
                        writer = self.writer
                        writer.hurry(True)
                    left = deadline - time.monotonic()
                    if left <= 0 or not writer.alive():
                        return False
                    self._progress.wait(min(left, 0.2))
            return True
        finally:
            writer.hurry(False)

    def close(self, timeout_s: float) -> bool:
        """Flushes for up to ``timeout_s``, stops the writer, closes the journal.

        Returns:
            True when everything reached MLflow (the spool may then be removed).
        """
        if self._closed:
            return self._close_result
        done = self.flush(timeout_s)
        with self._lock:
            self._closed = True  # no writer takes over from here on
            writer = self.writer
        stopped = True
        if writer is not None:
            stopped = writer.stop(wait_s=2.0 if done else 0.5)  # a hung request must not hold the sweep
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if stopped:
            self._spool_lock.release()
        self._close_result = done and self.pending_count() == 0
        return self._close_result

    def sync_file(self) -> None:
        """fsyncs the journal. Without the append lock: each append already flushed Python's
        buffer, and an fsync that waits for a busy disk must not stall the caller."""
        try:
            os.fsync(self._file.fileno())
        except (OSError, ValueError):  # ValueError: closed meanwhile
            pass

    def release_lock(self) -> None:
        """For a writer that outlived ``close`` (a hung request): frees the spool when it ends."""
        if self._closed:
            self._spool_lock.release()
