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

``qeu_tune.tracking.store`` applies entries to MLflow; ``qeu_tune.tracking.sync`` replays what a
spool has not yet acknowledged (after an outage that outlived the sweep, or an ``offline`` sweep).

The module stays whole: the spool's file format and the writer loop that reads it change
together; applying entries to MLflow is ``qeu_tune.tracking.store``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from qeu_tune.core.paths import qeu_home
from qeu_tune.core.redact import redact, redact_uri
from qeu_tune.tracking.spool_state import SpoolState, read_json, write_json_atomic
from qeu_tune.tracking.store import (
    _OP_NAMES,
    METRIC_BATCH,
    WRITER_HTTP,
    Applier,
    _Unresolved,
    is_permanent,
    is_run_key,
    short_http_retries,
)

log = logging.getLogger(__name__)


MODES = ("online", "offline")

JOURNAL_FILE = "journal.jsonl"
META_FILE = "meta.json"
LOCK_FILE = "lock"
REJECTED_FILE = "rejected.jsonl"
BLOBS_DIR = "blobs"


def spool_root() -> Path:
    """``$QEU_TUNE_HOME/spool``: where every sweep's journal lives."""

    return qeu_home() / "spool"


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
        self._mutex = threading.Lock()  # a writer and close() may both release

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

    @property
    def fd(self) -> Optional[int]:
        """The locked descriptor (a writer process inherits it: the lock lasts while either lives)."""
        return self._fd

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)  # closing drops the flock
                self._fd = None


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


MERGED_UNIT = 500  # entries applied as one merged unit (acknowledged together)
# The writer writes at most this often while little is pending: a trial's results then reach
# MLflow in a few calls instead of one per result (a 1,000-trial sweep made ~20,000).
LINGER_S = 0.25


def next_unit(
    pending: Sequence[Tuple[int, int, int, dict]], careful_through: int = -1, max_points: int = METRIC_BATCH
) -> int:
    """How many entries from the front of ``pending`` form the next write.

    Normally a stretch of up to ``MERGED_UNIT`` entries of any kind, applied with one
    ``log_batch`` per run (``Applier._apply_merged``). Entries up to seq ``careful_through``
    (a merged unit that failed) go one op at a time, so that an error is retried or set aside
    for the one entry that caused it: a single entry, or consecutive ``metrics`` entries (any
    runs) while each run's batch stays within ``max_points``.
    """
    if not pending:
        return 0
    if pending[0][0] > careful_through:
        return min(len(pending), MERGED_UNIT)
    if pending[0][3]["op"] != "metrics":
        return 1
    per_run: Dict[str, int] = {}
    n = 0
    for seq, _, _, entry in pending:
        if entry["op"] != "metrics" or seq > careful_through:
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
            f.write(json.dumps({"entry": entry, "error": redact(f"{type(err).__name__}: {err}")}) + "\n")
    except OSError:
        pass


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
            from qeu_tune.tracking.writer_process import WriterProcess

            self.writer = WriterProcess(self, lock_fd=self._spool_lock.fd)
        else:
            # Every entry of a live spool was appended by this process: a run it creates is new
            # (no lookup by tag first, which scans the experiment) unless its creation is retried.
            self.writer = self._thread_writer(replaying=False)

    def _thread_writer(self, *, replaying: bool) -> "ThreadWriter":
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


class ThreadWriter:
    """The spool's writer as a thread of the caller's process, fed by a bounded queue."""

    def __init__(self, spool: Spool, applier: Applier, *, queue_size: int, backoff: Tuple[float, float]) -> None:
        self.spool = spool
        self.applier = applier
        # Lines, not parsed entries: a few MB at most, parsed by the writer thread.
        self._queue: "queue.Queue[Tuple[int, int, int, bytes]]" = queue.Queue(maxsize=queue_size)
        self.dropped = 0  # entries the queue had no room for (re-read from the journal)
        self.loop = WriterLoop(
            spool.dir,
            applier,
            lambda: spool.state,
            self._fill,
            warn=spool._warn,
            sync_file=spool.sync_file,
            on_ack=spool.notify_progress,
            min_backoff_s=backoff[0],
            max_backoff_s=backoff[1],
        )
        self._carry: Optional[Tuple[int, int, int, bytes]] = None
        self._fill_seq, self._fill_off = spool.state.next_seq, spool.state.offset
        self._thread = threading.Thread(target=self._run, name="qeu-tune-mlflow-writer", daemon=True)
        self._thread.start()

    @property
    def rejected(self) -> int:
        return self.loop.rejected

    def _run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.spool.release_lock()  # close() gave up waiting for a hung request: free the spool now

    def offer(self, seq: int, start: int, end: int, line: bytes) -> None:
        try:
            self._queue.put_nowait((seq, start, end, line))
        except queue.Full:
            self.dropped += 1  # the writer re-reads it from the journal
        self.loop.wake.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def hurry(self, on: bool) -> None:
        self.loop.set_hurry(on)

    def stop(self, wait_s: float) -> bool:
        """Stops the thread; True when it ended within ``wait_s``."""
        self.loop.request_stop()
        self._thread.join(timeout=wait_s)
        return not self._thread.is_alive()

    def _fill(self, pending: list, limit: int) -> None:
        """Moves the next entries into ``pending``: from the queue, or the journal file when
        the queue dropped some (a gap in seq)."""
        spool = self.spool
        while len(pending) < limit and self._fill_seq <= spool.last_seq:
            item = self._carry
            if item is None:
                try:
                    item = self._carry = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if item is not None and item[0] < self._fill_seq:
                self._carry = None  # already read from the journal
                continue
            if item is not None and item[0] == self._fill_seq:
                pending.append((item[0], item[1], item[2], json.loads(item[3])))
                self._carry = None
                self._fill_seq, self._fill_off = self._fill_seq + 1, item[2]
                continue
            upto = item[0] if item is not None else spool.last_seq + 1
            want = min(limit - len(pending), upto - self._fill_seq)
            got = 0
            for rec in read_journal(spool.dir / JOURNAL_FILE, self._fill_off, want):
                pending.append(rec)
                self._fill_seq, self._fill_off = rec[0] + 1, rec[2]
                got += 1
            if got == 0:
                break  # not visible yet; next round


class WriterLoop:
    """Applies the journal to MLflow in order, one unit at a time: retries what failed with
    backoff, sets aside what MLflow refuses, acknowledges what it wrote on disk.

    The same loop runs in a writer thread and in the writer process; what differs is where the
    entries come from (``fill(pending, limit)``) and who hears of progress (``on_ack``).
    """

    def __init__(
        self,
        spool_dir: Path,
        applier: Applier,
        state: Callable[[], SpoolState],
        fill: Callable[[list, int], None],
        *,
        warn: Callable[[str, str], None],
        sync_file: Callable[[], None],
        on_ack: Callable[[], None],
        min_backoff_s: float,
        max_backoff_s: float,
        idle_wait_s: float = 0.5,
    ) -> None:
        self.dir = spool_dir
        self.applier = applier
        self._state, self._fill, self._warn = state, fill, warn
        self._sync_file, self._on_ack = sync_file, on_ack
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.idle_wait_s = idle_wait_s
        self.wake = threading.Event()
        self._hurry = threading.Event()  # someone waits for the writer: no lingering
        self._stop = threading.Event()
        self.failing = False
        self.rejected = 0

    def set_hurry(self, on: bool) -> None:
        if on:
            self._hurry.set()
            self.wake.set()
        else:
            self._hurry.clear()

    def request_stop(self) -> None:
        """Writes what is journaled, unless MLflow fails (the rest stays for ``sync``), then ends."""
        self._hurry.set()
        self._stop.set()
        self.wake.set()

    def run(self) -> None:
        try:
            self._loop()
        except Exception as err:  # noqa: BLE001 - a writer bug must not take the sweep down
            self._warn(
                "writer",
                f"the MLflow writer stopped ({type(err).__name__}: {err}); the data "
                f"stays in {self.dir}: upload it with `qeu-tune sync {self.dir}`.",
            )

    def _loop(self) -> None:
        pending: List[Tuple[int, int, int, dict]] = []
        backoff = self.min_backoff_s
        last_fsync = last_write = time.monotonic()
        careful_through = -1
        while True:
            if len(pending) < 500:
                self._fill(pending, 1000)
            if not pending:
                if self._stop.is_set():
                    return
                self.wake.wait(self.idle_wait_s)
                self.wake.clear()
                continue
            if self._linger(pending, last_write):
                continue
            n = next_unit(pending, careful_through)
            unit = [p[3] for p in pending[:n]]
            try:
                last_write = time.monotonic()
                with short_http_retries(**WRITER_HTTP):
                    self.applier.apply(unit)
            except Exception as err:  # noqa: BLE001 - classify: set aside or retry
                if n > 1 and pending[0][0] > careful_through:
                    careful_through = pending[n - 1][0]  # again, one op at a time
                    continue
                if isinstance(err, _Unresolved) or is_permanent(err):
                    self._set_aside(pending[:n], err)
                else:
                    self.failing = True
                    op = _OP_NAMES.get(unit[0]["op"], unit[0]["op"])
                    self._warn(
                        op,
                        f"MLflow {op} failed ({type(err).__name__}: {err}); training continues, the "
                        f"data is kept in {self.dir} and retried.",
                    )
                    if self._stop.wait(backoff):
                        return  # closing: the rest stays in the journal for `qeu-tune sync`
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
            if self.failing:
                log.info("MLflow is reachable again; replaying the journal of %s", self.dir)
                self.failing = False
            backoff = self.min_backoff_s
            seq, _, end, _ = pending[n - 1]
            del pending[:n]
            if time.monotonic() - last_fsync > 1.0:  # the ack must not get ahead of the disk
                self._sync_file()
                last_fsync = time.monotonic()
            state = self._state()
            try:
                state.ack(seq + 1, end)
            except OSError as err:
                self._warn(
                    "state",
                    f"could not record tracking progress in {self.dir} ({err}); a later sync replays more (harmless).",
                )
                state.next_seq, state.offset = seq + 1, end
            self._on_ack()

    def _linger(self, pending: Sequence[Tuple[int, int, int, dict]], last_write: float) -> bool:
        """Waits a moment before a small write, so that the next one carries more (one
        ``log_batch`` per run for several of its results). True when it waited (refill first).

        Never while ``flush`` or ``close`` waits, nor when a full unit is ready.
        """
        left = last_write + LINGER_S - time.monotonic()
        if left <= 0 or len(pending) >= MERGED_UNIT or self._hurry.is_set() or self._stop.is_set():
            return False
        self._hurry.wait(left)
        return True

    def _set_aside(self, items: Sequence[Tuple[int, int, int, dict]], err: BaseException) -> None:
        self.rejected += len(items)
        for item in items:
            _reject(self.dir, item[3], err)
        op = _OP_NAMES.get(items[0][3]["op"], items[0][3]["op"])
        self._warn(
            f"rejected-{op}",
            f"MLflow refused {op} ({type(err).__name__}: {err}); the entry is set aside "
            f"in {self.dir / REJECTED_FILE}, tracking continues.",
        )
