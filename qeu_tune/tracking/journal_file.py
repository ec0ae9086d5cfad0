"""A spool's files: their names, reading the journal, and the lock that gives it one writer.

``qeu_tune.tracking.journal`` appends to the journal (``Spool``); ``qeu_tune.tracking.writer``
and ``qeu_tune.tracking.sync`` read it back and apply it to MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Iterator, Optional, Tuple

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
META_FILE = "meta.json"
LOCK_FILE = "lock"
REJECTED_FILE = "rejected.jsonl"
BLOBS_DIR = "blobs"


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
