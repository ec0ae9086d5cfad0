"""The spool's writer as a process of its own, and the driver's handle on it.

MLflow's store work (SQLAlchemy, a transaction per ``log_batch``) was a third of a large sweep's
driver CPU and shared the GIL with Tune's event loop. In its own process it runs beside that
loop, on a core the loop does not use. The writer reads the journal file as it grows (the
journal is the only data channel) and runs the same ``WriterLoop`` as a writer thread.

Protocol, one JSON object a line:

- driver -> writer (stdin): a header (spool, tracking URI, experiment id; the URI travels here,
  never on disk or in ``ps``), then ``"hurry"`` / ``"calm"`` (a flush waits / stopped waiting)
  and ``"stop"``. End of input (the driver died) also means stop: the writer writes what is
  journaled, so a killed driver still gets its data into MLflow, and ends.
- writer -> driver (stdout): ``{"ack": next_seq, "off": offset, "rejected": n}`` after each
  write, ``{"run": key, "id": run_id}`` for each created run, ``{"warn": kind, "msg": text}``.

When the process ends on its own (a crash, killed), a writer thread in the driver takes over
from what the process acknowledged on disk (``Spool.writer_lost``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Callable, Dict, Optional

from qeu_tune.tracking.journal_file import JOURNAL_FILE, read_journal
from qeu_tune.tracking.spool_state import SpoolState
from qeu_tune.tracking.store import Applier
from qeu_tune.tracking.writer import WriterLoop

IDLE_POLL_S = 0.1  # how often an idle writer looks for new journal lines
# The writer yields the CPU to the trials and Tune's loop, and takes what they leave: it may
# fall behind while a machine is full and catches up at the sweep's end (the journal holds it).
NICENESS = 10


class WriterProcess:
    """The driver's side: starts the writer process and mirrors its acknowledgements into the
    spool's state (the process writes state.json and runs.jsonl; the driver only reads)."""

    def __init__(self, spool: Any, *, lock_fd: Optional[int]) -> None:
        self.spool = spool
        self.rejected = 0
        self._stopping = False
        self._send_lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "qeu_tune.tracking.writer_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=() if lock_fd is None else (lock_fd,),
            # Its own session: Ctrl-C and a closed terminal reach the driver, which stops the
            # writer when it has written what is journaled (or the writer sees the driver gone).
            start_new_session=True,
        )
        self._send(
            {
                "spool_dir": str(Path(spool.dir).resolve()),
                "tracking_uri": spool.tracking_uri,
                "experiment_id": spool._experiment_id,
                "backoff": list(spool._backoff),
            }
        )
        self._reader = threading.Thread(target=self._read, name="qeu-tune-mlflow-writer-reports", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, message: Any) -> None:
        with self._send_lock:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write((json.dumps(message) + "\n").encode())
                self._proc.stdin.flush()
            except (OSError, ValueError):  # the process is gone (its end is handled by _read)
                pass

    def _read(self) -> None:
        state = self.spool.state
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                report = json.loads(raw)
            except ValueError:
                continue
            if "ack" in report:
                state.next_seq, state.offset = int(report["ack"]), int(report["off"])
                self.rejected = int(report.get("rejected", self.rejected))
                self.spool.notify_progress()
            elif "run" in report:
                state.runs[report["run"]] = report["id"]
            elif "warn" in report:
                self.spool._warn(str(report["warn"]), str(report["msg"]))
        code = self._proc.wait()
        if not self._stopping:
            self.spool.writer_lost(f"ended (exit code {code})")

    def offer(self, seq: int, start: int, end: int, line: bytes) -> None:
        """Nothing to hand over: the process reads the journal file."""

    def alive(self) -> bool:
        return self._reader.is_alive()

    def hurry(self, on: bool) -> None:
        self._send("hurry" if on else "calm")

    def stop(self, wait_s: float) -> bool:
        """Asks the process to write what is journaled and end; kills it after ``wait_s`` (a
        hung request; the journal keeps the rest). True: it has ended."""
        self._stopping = True
        self._send("stop")
        try:
            self._proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=1.0)
        return True


# -- the writer process ---------------------------------------------------------------------
class _ReportingState(SpoolState):
    """The spool's state on disk, each created run also reported to the driver."""

    def __init__(self, spool_dir: Path, tracking_uri: str, report: Callable[[Dict[str, Any]], None]) -> None:
        super().__init__(spool_dir, tracking_uri)
        self._report = report

    def add_run(self, key: str, run_id: str) -> None:
        super().add_run(key, run_id)
        self._report({"run": key, "id": run_id})


class JournalTail:
    """The journal's complete lines from ``offset`` on, as the driver appends them."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path, self.offset = path, offset

    def __call__(self, pending: list, limit: int) -> None:
        for rec in read_journal(self.path, self.offset, limit - len(pending)):
            pending.append(rec)
            self.offset = rec[2]


def _commands(stream: IO[str], loop: WriterLoop) -> None:
    for line in stream:
        command = line.strip().strip('"')
        if command == "hurry":
            loop.set_hurry(True)
        elif command == "calm":
            loop.set_hurry(False)
        elif command == "stop":
            break
    loop.request_stop()  # "stop", or the driver is gone


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which stops us
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    reports = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the protocol
    report_lock = threading.Lock()

    def report(message: Dict[str, Any]) -> None:
        with report_lock:
            try:
                reports.write(json.dumps(message) + "\n")
            except (OSError, ValueError):
                pass  # the driver is gone; the journal and state.json still say everything

    header = json.loads(sys.stdin.readline())
    spool_dir = Path(header["spool_dir"])
    try:
        from mlflow.tracking import MlflowClient

        state = _ReportingState(spool_dir, header["tracking_uri"], report)
        client = MlflowClient(tracking_uri=header["tracking_uri"])
    except Exception as err:  # noqa: BLE001 - the driver's thread takes over
        report({"warn": "writer-process", "msg": f"the MLflow writer process could not start ({err})"})
        sys.exit(1)
    applier = Applier(client, str(header["experiment_id"]), state, spool_dir, replaying=False)
    journal_fd = os.open(spool_dir / JOURNAL_FILE, os.O_RDONLY)
    loop: WriterLoop

    def on_ack() -> None:
        report({"ack": state.next_seq, "off": state.offset, "rejected": loop.rejected})

    loop = WriterLoop(
        spool_dir,
        applier,
        lambda: state,
        JournalTail(spool_dir / JOURNAL_FILE, state.offset),
        warn=lambda kind, message: report({"warn": kind, "msg": message}),
        sync_file=lambda: os.fsync(journal_fd),
        on_ack=on_ack,
        min_backoff_s=float(header["backoff"][0]),
        max_backoff_s=float(header["backoff"][1]),
        idle_wait_s=IDLE_POLL_S,
    )
    threading.Thread(target=_commands, args=(sys.stdin, loop), daemon=True).start()
    loop.run()
    reports.flush()


if __name__ == "__main__":
    main()
