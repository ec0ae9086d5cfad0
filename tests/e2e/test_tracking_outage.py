"""A real ``mlflow server`` goes away while a sweep writes through the Tracker: nothing is lost.

The tests share one ``mlflow server`` (SQLite backend, proxied artifacts) on a free port of
127.0.0.1 (starting it costs 10-25 s on 2 busy cores); each kills its process group mid-sweep
for longer than the tracker's shortened HTTP retry window, restarts it on the same port and
database, and counts the points per run and key straight from the server's database.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow_server import MlflowServer

from qeu_tune.commands import sync as sync_command
from qeu_tune.core import tags
from qeu_tune.tracking import spool_state
from qeu_tune.tracking import tracker as tracking
from qeu_tune.tracking.sync import sync_spool

pytestmark = pytest.mark.slow

KEYS = [f"perf/m{i:02d}" for i in range(40)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture
def running(server):
    if server.proc is None:
        server.start()
    return server


def simulate_sweep(tracker, trials, iterations, *, pause_s=0.0, times=None, progress=None):
    """``trials`` x ``iterations`` results x 40 metrics, interleaved like Tune's driver loop."""
    parent = tracker.create_run(run_name="sweep", tags={tags.TAG_KIND: "sweep"})
    runs = [
        tracker.create_run(
            run_name=f"t{i}", tags={tags.TAG_PARENT: parent, tags.TAG_KIND: "trial", tags.TAG_TRIAL_ID: f"t{i}"}
        )
        for i in range(trials)
    ]
    for run in runs:
        tracker.log_params(run, {"seed": "0"})
    base = int(time.time() * 1000)
    for step in range(iterations):
        for i, run in enumerate(runs):
            batch = [Metric(k, float(i + step + j / 10), base + step, step) for j, k in enumerate(KEYS)]
            t0 = time.perf_counter()
            tracker.log_metrics(run, batch)
            if times is not None:
                times.append(time.perf_counter() - t0)
        if progress is not None:
            progress.append(step)
        time.sleep(pause_s)
    for run in runs:
        tracker.end_run(run, tags.FINISHED)
    tracker.end_run(parent, tags.FINISHED)
    return parent, runs


def counts(server: MlflowServer, experiment: str):
    """{(run name, key): (points, distinct steps)} and {run name: status}, from the server's database."""
    with sqlite3.connect(server.root / "mlflow.db") as con:
        runs = (
            "SELECT r.run_uuid, r.name, r.status FROM runs r JOIN experiments e ON e.experiment_id = "
            "r.experiment_id WHERE e.name = ?"
        )
        rows = con.execute(
            f"SELECT r.name, m.key, COUNT(*), COUNT(DISTINCT m.step) FROM metrics m "
            f"JOIN ({runs}) r ON r.run_uuid = m.run_uuid GROUP BY r.name, m.key",
            (experiment,),
        ).fetchall()
        statuses = [(name, status) for _, name, status in con.execute(runs, (experiment,)).fetchall()]
    return {(name, key): (n, distinct) for name, key, n, distinct in rows}, statuses


def assert_complete(server: MlflowServer, experiment: str, trials: int, iterations: int):
    got, statuses = counts(server, experiment)
    assert len(statuses) == trials + 1  # no duplicate runs from replays
    assert all(status == "FINISHED" for _, status in statuses)
    expected = {(f"t{i}", k): (iterations, iterations) for i in range(trials) for k in KEYS}
    assert got == expected  # every point, none twice
    return got


def test_server_outage_mid_sweep_loses_and_duplicates_nothing(running, caplog):
    server, trials, iterations = running, 16, 12
    tracker = tracking.Tracker(tracking_uri=server.uri, experiment="outage")
    times, progress = [], []
    driver = threading.Thread(
        target=simulate_sweep,
        args=(tracker, trials, iterations),
        kwargs={"pause_s": 0.5, "times": times, "progress": progress},
    )
    with caplog.at_level(logging.WARNING):
        driver.start()
        while len(progress) < 4:
            time.sleep(0.05)
        server.stop()  # the tracker goes away mid-sweep ...
        time.sleep(6)  # ... for longer than the shortened per-request retries (~1 s when refused)
        assert tracker.pending_count() > 0
        server.start()  # ... and comes back on the same port and database
        driver.join()
        # ~10 s on a quiet machine; minutes when other jobs load the 2 cores (the server then
        # takes seconds per 1,000-point batch).
        assert tracker.flush(timeout_s=300)
    assert any("kept in" in r.getMessage() for r in caplog.records)
    assert tracker.close(timeout_s=10)
    assert_complete(server, "outage", trials, iterations)
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    print(f"\nlog_metrics on the driver: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(times)} calls")
    assert p99 < 50  # 5 ms in the unit test and the benchmark; headroom for a shared machine


def test_server_that_never_returns_then_sync_uploads_everything_once(running, capsys):
    server, trials, iterations = running, 4, 10
    tracker = tracking.Tracker(tracking_uri=server.uri, experiment="never")
    server.stop()
    simulate_sweep(tracker, trials, iterations)
    start = time.monotonic()
    assert not tracker.close(timeout_s=3)  # the sweep still finishes
    assert time.monotonic() - start < 10
    spool = tracker.spool_dir
    assert spool.exists() and tracker.pending_count() > 0

    server.start()
    first = sync_spool(spool)  # to the URI the sweep was recorded for
    assert first["errors"] == 0 and first["runs_created"] == trials + 1
    assert first["points"] == trials * iterations * len(KEYS)
    before = assert_complete(server, "never", trials, iterations)
    assert sync_command.sync(str(spool), None) == 0  # `qeu-tune sync SPOOL_DIR`
    assert " 0 entries" in capsys.readouterr().out
    assert counts(server, "never")[0] == before
    # A full replay (acknowledged offset lost): the server's SQL store skips every point as an
    # exact duplicate, and runs are found by their qeu.run_key tag instead of created again.
    (spool / spool_state.STATE_FILE).unlink()
    replay = sync_spool(spool)
    assert replay["errors"] == 0 and replay["runs_created"] == 0 and replay["points"] == first["points"]
    assert assert_complete(server, "never", trials, iterations) == before
