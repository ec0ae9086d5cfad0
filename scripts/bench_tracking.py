"""Benchmark: driver-side cost of tracking through the journaled Tracker, and lost points,
against a real local ``mlflow server`` that this script stops mid-sweep and restarts.

Simulates Tune's driver loop: TRIALS trials report ITERATIONS results of METRICS metrics each,
interleaved; every result is one ``Tracker.log_metrics`` call (what ``MLflowTrialCallback``
does with ``flush_every_s=0``). The server (SQLite backend, proxied artifacts, 1 worker) is
killed after the first 25% of the iterations, stays down for ``--outage-s`` seconds while the
sweep keeps reporting, and comes back on the same port and database. Then the tracker is
flushed and the points are counted straight from the server's database.

Usage:
    .venv/bin/python scripts/bench_tracking.py [--trials 16] [--iterations 100] [--metrics 40]
        [--outage-s 8] [--pause-s 0.3] [--out results/bench_tracking.json]

Prints p50/p99 of the per-result call time (before, during and after the outage), the drain
time, and the number of lost and duplicated points (both must be 0); writes the figures to
``--out``. 2-3 minutes on 2 busy cores (most of it the server starting twice).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qeu_tune.commands.server import LocalMlflowServer

ROOT = Path(__file__).resolve().parent.parent


def percentiles(times):
    if not times:
        return {"n": 0}
    p50, p99, mx = np.percentile(times, [50, 99, 100]) * 1000
    return {
        "n": len(times),
        "p50_ms": round(float(p50), 3),
        "p99_ms": round(float(p99), 3),
        "max_ms": round(float(mx), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=40)
    parser.add_argument("--outage-s", type=float, default=8.0, help="how long the server stays down")
    parser.add_argument("--pause-s", type=float, default=0.3, help="driver pause between rounds of results")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_tracking.json"))
    args = parser.parse_args(argv)

    load_at_start = round(os.getloadavg()[0], 1)
    work = Path(tempfile.mkdtemp(prefix="qeu-bench-tracking-"))
    os.environ["QEU_TUNE_HOME"] = str(work / "home")  # the spool goes there, not into ~/.qeu-tune
    from mlflow.entities import Metric

    from qeu_tune.core import tags
    from qeu_tune.tracking import tracker as tracking

    server = LocalMlflowServer(work / "server")
    t0 = time.monotonic()
    server.start(timeout_s=120)
    start_s = time.monotonic() - t0
    keys = [f"perf/m{i:02d}" for i in range(args.metrics)]
    times = {"normal": [], "outage": [], "recovery": []}
    stop_at = int(args.iterations * 0.25)
    outage = {}
    try:
        tracker = tracking.Tracker(tracking_uri=server.uri, experiment="bench-tracking")
        parent = tracker.create_run(run_name="bench", tags={tags.TAG_KIND: "sweep"})
        runs = [
            tracker.create_run(run_name=f"t{i:02d}", tags={tags.TAG_PARENT: parent, tags.TAG_KIND: "trial"})
            for i in range(args.trials)
        ]
        phase, down_since, restart_thread = "normal", None, None
        sweep_start = time.monotonic()
        for step in range(args.iterations):
            if step == stop_at:
                server.stop()
                phase, down_since = "outage", time.monotonic()
                outage["pending_at_stop"] = tracker.pending_count()
            if phase == "outage" and time.monotonic() - down_since >= args.outage_s and restart_thread is None:
                import threading  # restart in the background: the sweep goes on meanwhile

                restart_thread = threading.Thread(target=server.start, kwargs={"timeout_s": 120})
                restart_thread.start()
                outage["down_s"] = round(time.monotonic() - down_since, 1)
            if restart_thread is not None and not restart_thread.is_alive() and phase == "outage":
                phase = "recovery"
                outage["back_after_s"] = round(time.monotonic() - down_since, 1)
                outage["pending_at_restart"] = tracker.pending_count()
            now = int(time.time() * 1000)
            for i, run in enumerate(runs):
                batch = [Metric(k, float(i * 1e6 + step * 100 + j), now, step) for j, k in enumerate(keys)]
                c0 = time.perf_counter()
                tracker.log_metrics(run, batch)
                times[phase].append(time.perf_counter() - c0)
            time.sleep(args.pause_s)
            if step == args.iterations - 1 and phase == "outage":
                # Sweep shorter than the outage: wait for the server before the final flush.
                if restart_thread is None:
                    server.start(timeout_s=120)
                else:
                    restart_thread.join()
        for run in runs:
            tracker.end_run(run, tags.FINISHED)
        tracker.end_run(parent, tags.FINISHED)
        sweep_s = time.monotonic() - sweep_start
        d0 = time.monotonic()
        flushed = tracker.flush(timeout_s=600)
        drain_s = time.monotonic() - d0
        closed = tracker.close(timeout_s=10)
        writer = {"dropped_from_queue": tracker._spool.dropped, "rejected": tracker._spool.rejected}
    finally:
        server.stop()

    with sqlite3.connect(work / "server" / "mlflow.db") as con:
        rows = con.execute(
            "SELECT r.name, m.key, COUNT(*), COUNT(DISTINCT m.step) FROM metrics m "
            "JOIN runs r ON r.run_uuid = m.run_uuid WHERE r.name LIKE 't%' GROUP BY r.name, m.key"
        ).fetchall()
        n_runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    expected = args.trials * args.iterations * args.metrics
    stored = sum(n for _, _, n, _ in rows)
    distinct = sum(d for _, _, _, d in rows)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_1m_at_start": load_at_start,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        },
        "command": " ".join(["python scripts/bench_tracking.py", *(argv if argv is not None else sys.argv[1:])]),
        "params": vars(args),
        "server_start_s": round(start_s, 1),
        "outage": outage,
        "log_metrics_call": {k: percentiles(v) for k, v in times.items()},
        "log_metrics_call_all": percentiles([t for v in times.values() for t in v]),
        "sweep_s": round(sweep_s, 1),
        "drain_after_sweep_s": round(drain_s, 1),
        "flushed": flushed,
        "closed_clean": closed,
        "points_reported": expected,
        "points_stored": stored,
        "points_lost": expected - distinct,
        "points_duplicated": stored - distinct,
        "runs_in_mlflow": n_runs,
        **writer,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    calls = result["log_metrics_call"]
    print(
        f"{args.trials} trials x {args.iterations} iterations x {args.metrics} metrics = {expected} points "
        f"into {server.uri} (mlflow server, SQLite); outage {outage}"
    )
    for phase, stats in calls.items():
        if stats["n"]:
            print(
                f"  log_metrics per result, {phase:8s}: p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms, "
                f"max {stats['max_ms']:.2f} ms (n={stats['n']})"
            )
    print(
        f"  sweep {result['sweep_s']} s, drain after the sweep {result['drain_after_sweep_s']} s; "
        f"lost points: {result['points_lost']}, duplicated: {result['points_duplicated']}, runs: {n_runs}"
    )
    print(f"  written to {out}")
    return 0 if result["points_lost"] == 0 and result["points_duplicated"] == 0 and flushed else 1


if __name__ == "__main__":
    raise SystemExit(main())
