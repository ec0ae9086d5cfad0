"""The journal's writer: applies a spool's journal to MLflow, in order, retrying outages.

``WriterLoop`` is the one loop, whether it runs as a thread of the sweep's driver
(``ThreadWriter``, fed by a bounded in-memory queue) or in a process of its own
(``qeu_tune.tracking.writer_process``, reading the journal file as it grows); ``next_unit``
decides what one write carries, also for ``qeu-tune sync``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from qeu_tune.core.redact import redact
from qeu_tune.tracking.journal_file import JOURNAL_FILE, REJECTED_FILE, read_journal
from qeu_tune.tracking.spool_state import SpoolState
from qeu_tune.tracking.store import (
    _OP_NAMES,
    METRIC_BATCH,
    WRITER_HTTP,
    Applier,
    _Unresolved,
    is_permanent,
    short_http_retries,
)

log = logging.getLogger(__name__)


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


def reject_entry(spool_dir: Path, entry: dict, err: BaseException) -> None:
    """Sets ``entry`` aside in rejected.jsonl with the error MLflow gave for it."""
    try:
        with open(spool_dir / REJECTED_FILE, "a") as f:
            f.write(json.dumps({"entry": entry, "error": redact(f"{type(err).__name__}: {err}")}) + "\n")
    except OSError:
        pass


class ThreadWriter:
    """The spool's writer as a thread of the caller's process, fed by a bounded queue."""

    def __init__(self, spool: Any, applier: Applier, *, queue_size: int, backoff: Tuple[float, float]) -> None:
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
            reject_entry(self.dir, item[3], err)
        op = _OP_NAMES.get(items[0][3]["op"], items[0][3]["op"])
        self._warn(
            f"rejected-{op}",
            f"MLflow refused {op} ({type(err).__name__}: {err}); the entry is set aside "
            f"in {self.dir / REJECTED_FILE}, tracking continues.",
        )
