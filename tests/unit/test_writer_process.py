"""The journal's MLflow writer as a process of its own: same data as a writer thread, and
nothing lost when the writer process or the driver dies."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from test_journal import assert_recorded, record  # noqa: F401 - shared sweep through the Tracker API

from qeu_tune.tracking import journal
from qeu_tune.tracking import tracker as tracking
from qeu_tune.tracking.writer import ThreadWriter
from qeu_tune.tracking.writer_process import WriterProcess


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_the_default_writer_is_a_process_that_writes_what_a_thread_would(uri, tmp_path):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")
    writer = tracker._spool.writer
    assert isinstance(writer, WriterProcess) and writer.pid != os.getpid()
    reported = record(tracker, trials=3, iterations=8)
    assert tracker.flush(timeout_s=60) and tracker.pending_count() == 0
    keys = json.loads((tracker.spool_dir / "journal.jsonl").read_text().splitlines()[0])["run"]
    assert tracker.resolve(keys)  # run ids come back from the process
    assert tracker.close(timeout_s=10) and not tracker.spool_dir.exists()
    assert writer._proc.poll() is not None  # ended with the tracker
    assert_recorded(uri, reported, tmp_path)


def test_a_writer_process_that_dies_is_replaced_by_a_thread_and_nothing_is_lost(uri, tmp_path, caplog):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")
    writer = tracker._spool.writer
    assert os.getpgid(writer.pid) != os.getpgid(0)  # Ctrl-C in the terminal reaches the driver only
    with caplog.at_level(logging.WARNING):
        reported = record(tracker, trials=3, iterations=8)
        assert tracker.flush(timeout_s=60)
        os.kill(writer.pid, signal.SIGINT)  # ignored: the driver decides when the writer stops
        time.sleep(0.3)
        assert writer._proc.poll() is None
        os.kill(writer.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while tracker._spool.writer is writer and time.monotonic() < deadline:
            time.sleep(0.05)
    assert isinstance(tracker._spool.writer, ThreadWriter)
    assert any("writer thread takes over" in r.getMessage() for r in caplog.records)
    assert tracker.close(timeout_s=30)
    assert_recorded(uri, reported, tmp_path)


def test_a_writer_process_killed_mid_write_leaves_nothing_out_and_nothing_twice(uri, tmp_path):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")
    writer = tracker._spool.writer
    reported = record(tracker, trials=4, iterations=30)  # journaled at once; written over a while
    deadline = time.monotonic() + 60
    while tracker._spool.state.next_seq == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGKILL)  # somewhere in the middle
    assert tracker.close(timeout_s=60)
    assert_recorded(uri, reported, tmp_path)  # histories compared point by point: none twice


DRIVER = """
import os, sys
sys.path.insert(0, {tests!r})
from test_journal import record
from qeu_tune.tracking import tracker as tracking
tracker = tracking.Tracker(tracking_uri={uri!r}, experiment="qeu-tune", keep_spool=True)
record(tracker, trials=3, iterations=8)
print(tracker.spool_dir, flush=True)
os._exit(0)  # killed: no flush, no close
"""


def test_a_driver_killed_before_its_writes_leaves_the_writer_to_finish_them(uri, tmp_path):
    """The writer process outlives its driver just long enough to write what was journaled."""
    tests = os.path.dirname(__file__)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER.format(tests=tests, uri=uri))],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])},
    )
    assert out.returncode == 0, out.stderr
    spool_dir = journal.Path(out.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 60
    while journal.unconfirmed(spool_dir, uri) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert journal.unconfirmed(spool_dir, uri) is None
    lock = journal.SpoolLock(spool_dir)
    deadline = time.monotonic() + 10
    while not lock.acquire() and time.monotonic() < deadline:  # the writer ends and frees the spool
        time.sleep(0.1)
    assert lock.fd is not None
    lock.release()
    # The same sweep as a driver that closed its tracker (record() is deterministic).
    from mlflow.tracking import MlflowClient
    from test_journal import read_back

    client, parents, children = read_back(uri)
    assert len(parents) == 1 and len(children) == 3
    assert parents[0].info.status == "FINISHED"
    assert all(len(client.get_metric_history(r.info.run_id, "perf/m00")) == 8 for r in children.values())
    assert isinstance(client, MlflowClient)


def test_a_bad_writer_setting_is_a_config_error(uri):
    with pytest.raises(tracking.ConfigError, match="tracking.writer='fork'"):
        tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", writer="fork")
