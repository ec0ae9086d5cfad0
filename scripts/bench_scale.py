"""Benchmark: sweeps of 100 to 10,000 trials (issue 20), qeu-tune against plain Ray Tune.

How to run this script::

    python scripts/bench_scale.py                                  # sizes 100,1000,10000, every variant
    python scripts/bench_scale.py --sizes 20 --variants tune,qeu_sqlite
    python scripts/bench_scale.py --sizes 1000 --resume --profile  # + SIGINT/resume runs, driver profile
    python scripts/bench_scale.py --sizes 100 --step-time 0.05     # 1-s trials, as Ray's release test

Per size N, each variant runs N trials x ``--results-per-trial`` results (20) as a subprocess
in a fresh temporary directory (removed afterwards). ``tune``: plain Ray Tune, a numpy
function trainable imitating ``algo=synthetic`` (its metric names, a checkpoint every
``--checkpoint-every`` results and at the last, ``--step-time`` of sleep per result), no
tracking, with what qeu-tune asks Ray for: ``num_cpus=os.cpu_count()``, 1 CPU per trial,
``reuse_actors``, every checkpoint kept (``--keep`` to keep fewer, as qeu-tune did before 2026-12-06). ``tune_mlflow``: the same plus Ray's
``MLflowLoggerCallback`` into SQLite. ``qeu_sqlite``: the ``qeu-tune`` console script
(``experiment=single algo=synthetic``, random search over ``algo.params.lr``) into SQLite:
a subprocess, so its wall time is the user's, its driver is measured alone and py-spy can
profile it from outside; its MLflow writer is a process of its own (``tracking.writer=process``,
the default). ``qeu_sqlite_thread``: the same with the writer as a thread of the driver
(``tracking.writer=thread``, as before 2026-12-06). ``qeu_postgres``: the same into ``qeu-tune server`` (PostgreSQL +
``mlflow server`` on 127.0.0.1; skipped without PostgreSQL's binaries).

Per run: wall time; the sweep proper (Tune: ``tuner.fit``; qeu-tune: parent run start to its
``driver/*`` metrics, logged by ``on_experiment_end``) and the end-of-sweep flush + report
(to the report's ``best_config/*`` metrics); the driver's CPU seconds and peak RSS (``/proc``,
every 0.2 s; CPU read at exit before reaping) and the CPU of the driver with every descendant
it reaped (``wait4``); child runs and points of ``return_env/mean`` read from the store's
database, against N and N x results; the callback's time per result (``driver/callback_ms_*``);
``qeu-tune report`` and ``qeu-tune best`` on the finished sweep. ``--resume`` adds a run per
qeu variant that gets SIGINT once N/2 trial runs are FINISHED, then times ``qeu-tune resume``
and counts again. ``--profile`` samples the ``qeu_sqlite`` driver and its Python descendants
(the MLflow writer process, Ray's Python daemons; Ray's trial workers did not show up in ours)
with py-spy (cProfile of the driver when py-spy is missing): the top 30 functions by cumulative share, and the top 15 per process kind. Each run
also records the time from the command's start to the k-th trial's last result at every tenth
of N (``time_to_n_s``, ``ms_per_trial_by_tenth``: does the cost per trial grow with the sweep?).
``--time-limit S`` sends a sweep SIGINT after S seconds (a user's Ctrl-C; the row keeps what
was done by then), for sizes that may not finish in the time at hand.

``--repeats R`` runs the variants R times, alternated (tune, qeu, tune, qeu, ...): on a VM whose
speed drifts, the ratios of runs next to each other and of the medians say more than one pair.

Prints a table row per run as it goes, then per size the ratios to ``tune`` and
``tune_mlflow`` (of the medians, with each repeat's own ratio) and the overhead per trial; writes machine, command, date, load averages and
every row to ``--output`` (default ``results/bench_scale.json``), after every row.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("tune", "tune_mlflow", "qeu_sqlite", "qeu_sqlite_thread", "qeu_postgres")
METRIC = "return_env/mean"
STEPS = 1000  # env steps per result
TICK = os.sysconf("SC_CLK_TCK")
# Ray's release test: 10,000 trials of 1 s on 16 CPUs in < 800 s against 625 s ideal.
TOOLS = {name: shutil.which(name) or Path(sys.executable).with_name(name) for name in ("qeu-tune", "py-spy")}
QEU, PY_SPY = (str(path) if Path(path).exists() else None for path in TOOLS.values())
ANCHOR = {"trials": 10000, "trial_s": 1.0, "cpus": 16, "limit_s": 800, "ideal_s": 625, "ratio": 1.28}


def tune_child(spec: dict) -> None:
    """The ``tune``/``tune_mlflow`` sweep, in this script's own subprocess."""
    import math

    import numpy as np
    import ray
    from ray import tune

    def trainable(config):  # the synthetic learner's curve and metric names, numpy only
        rng, start, ckpt = np.random.default_rng(config["seed"]), 0, tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as path:
                start = json.loads(Path(path, "state.json").read_text())["iteration"]
        rate = 5.0 * math.exp(-((math.log10(config["lr"]) + 3.0) ** 2) / 0.5)
        for i in range(start + 1, spec["results"] + 1):
            t0 = time.perf_counter()
            time.sleep(spec["step_time"])
            ret = 500.0 * (1.0 - math.exp(-rate * i / spec["results"])) + 10.0 * rng.standard_normal()
            metrics = {METRIC: ret, "return/mean": ret, "episode/len_mean": max(1.0, ret)}
            metrics.update({"progress/env_steps": i * STEPS, "progress/iteration": i, "episode/count_lifetime": i})
            metrics["perf/env_steps_per_s"] = STEPS / max(time.perf_counter() - t0, 1e-9)
            if spec["every"] and (i % spec["every"] == 0 or i == spec["results"]):
                with tempfile.TemporaryDirectory() as path:
                    Path(path, "state.json").write_text(json.dumps({"iteration": i}))
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(path))
            else:
                tune.report(metrics)

    callbacks = []
    if spec["uri"]:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=spec["uri"], experiment_name="bench-scale"))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"lr": tune.loguniform(1e-4, 3e-3), "seed": 0},
        tune_config=tune.TuneConfig(num_samples=spec["n"], reuse_actors=True),
        run_config=tune.RunConfig(
            name="bench", storage_path=spec["storage"], callbacks=callbacks, verbose=1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.get("keep")),
        ),
    )  # fmt: skip
    t0 = time.monotonic()
    results = tuner.fit()
    print("BENCH_SCALE_FIT " + json.dumps({"fit_s": time.monotonic() - t0, "errors": len(results.errors)}), flush=True)


def proc_sample(pid: int) -> tuple:
    """(CPU seconds, peak RSS in MiB or None) of one process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        hwm = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        return cpu, int(hwm.group(1)) / 1024 if hwm else None
    except (OSError, IndexError, ValueError):
        return None, None


def run(cmd, env, cwd, log, *, poll=None, profile=None) -> dict:
    """Runs ``cmd``, its output into ``log``; ``poll(pid, elapsed_s, found)`` each 0.2 s while it runs."""
    t0, started = time.monotonic(), time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail, found = collections.deque(maxlen=40), {}

    def read():
        with open(log, "a") as out:
            for line in proc.stdout:
                out.write(line)
                tail.append(line.rstrip())
                if line.startswith("BENCH_SCALE_FIT "):
                    found.update(json.loads(line.split(" ", 1)[1]))
                done = re.match(r"Progress: (\d+)/\d+ trials done", line)  # qeu-tune's line, every 10 s
                if done:
                    found["progress_done"] = int(done.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    spy = None
    if profile and PY_SPY:
        spy_cmd = [PY_SPY, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "50", "--nonblocking",
                   "--subprocesses"]  # fmt: skip
        spy = subprocess.Popen([*spy_cmd, "-o", str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu, rss = None, None
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        cpu, rss = (a if a is not None else b for a, b in zip(proc_sample(proc.pid), (cpu, rss)))
        if poll is not None:
            poll(proc.pid, time.monotonic() - t0, found)
        time.sleep(0.2)
    cpu = proc_sample(proc.pid)[0] or cpu  # a zombie still shows its final CPU times
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)
    if spy is not None:
        spy.wait(timeout=60)
    return {
        "wall_s": round(wall, 2), "rc": proc.returncode, "driver_cpu_s": cpu,
        "driver_peak_rss_mb": round(rss, 1) if rss else None,
        "reaped_tree_cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "tail": list(tail), "started_epoch": started,
        **found,
    }  # fmt: skip


def time_to_n(tmp: Path, started: float, n: int) -> dict:
    """Seconds from the command's start until the k-th trial reported its last result, at every
    tenth of ``n`` (the ``timestamp`` Tune adds to each result, last line of each trial's
    ``result.json``; Tune's and qeu-tune's alike; whole seconds), and the milliseconds per trial
    within each tenth: how the per-trial cost grows with the sweep. (The files' modification
    times do not serve: Tune writes them out at the end.)"""
    ends = []
    for path in tmp.rglob("result.json"):
        lines = path.read_text().splitlines()
        if lines:
            ends.append(json.loads(lines[-1])["timestamp"] - started)
    ends.sort()
    step = max(1, n // 10)
    marks = {k: round(ends[k - 1], 1) for k in range(step, min(n, len(ends)) + 1, step)}
    per_trial, last = {}, (0, 0.0)
    for k, t in marks.items():
        per_trial[k] = round((t - last[1]) / (k - last[0]) * 1000, 1)
        last = (k, t)
    return {"trials_with_results": len(ends), "time_to_n_s": marks, "ms_per_trial_by_tenth": per_trial}


def query(url: str, sql: str, **params) -> list:
    import sqlalchemy as sa

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return []  # not created yet (and connecting would create an empty file)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params).fetchall()]
    finally:
        engine.dispose()


CHILDREN = "FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE t.key = 'mlflow.parentRunId' AND t.value = :p"
# Points of METRIC (all, and distinct run/step pairs), and every metric row: what the writer carried.
POINTS = ("SELECT COUNT(CASE WHEN m.key = :k THEN 1 END), COUNT(DISTINCT CASE WHEN m.key = :k THEN "
          "m.run_uuid || ':' || m.step END), COUNT(*) FROM metrics m ")  # fmt: skip


def read_store(url: str, expected_points: int) -> dict:
    """Runs and points from the MLflow database: a qeu-tune sweep, else every run (Tune's callback)."""
    sweep = query(url, "SELECT r.run_uuid, r.start_time, r.end_time FROM runs r JOIN tags t ON "
                       "t.run_uuid = r.run_uuid WHERE t.key = 'qeu.kind' AND t.value = 'sweep'")  # fmt: skip
    if not sweep:
        statuses = query(url, "SELECT status, COUNT(*) FROM runs GROUP BY status")
        points = query(url, POINTS, k=METRIC)
    else:
        parent, start, end = sweep[0]
        statuses = query(url, "SELECT r.status, COUNT(*) " + CHILDREN + " GROUP BY r.status", p=parent)
        points = query(url, POINTS + "JOIN tags t ON t.run_uuid = m.run_uuid WHERE t.key = 'mlflow.parentRunId' "
                       "AND t.value = :p", p=parent, k=METRIC)  # fmt: skip
    out = {"runs_by_status": dict(statuses), "runs": sum(n for _, n in statuses)}
    out.update(points=points[0][0] if points else 0, points_distinct=points[0][1] if points else 0)
    out["metric_rows"] = points[0][2] if points else 0
    out["points_expected"] = expected_points
    if sweep:
        own = query(url, "SELECT m.key, m.value, m.timestamp FROM metrics m WHERE m.run_uuid = :p AND (m.key LIKE "
                         "'driver/%' OR m.key LIKE 'best_config/%') ORDER BY m.timestamp", p=parent)  # fmt: skip
        last = {k: (v, ts) for k, v, ts in own}
        driver_ts = last.get("driver/results", (None, None))[1]
        report_ts = max((ts for k, (_, ts) in last.items() if k.startswith("best_config/")), default=None)
        out.update(parent_run_id=parent, driver_results=last.get("driver/results", (None,))[0])
        for key in ("p50", "p99", "max"):
            out[f"callback_ms_{key}"] = last.get(f"driver/callback_ms_{key}", (None,))[0]
        out["sweep_s"] = (driver_ts - start) / 1000 if driver_ts else None
        out["report_s"] = (report_ts - driver_ts) / 1000 if report_ts and driver_ts else None
        out["parent_open_s"] = (end - start) / 1000 if end else None
    return out


def top_functions(path: Path, n: int = 30) -> dict:
    """Top ``n`` functions by cumulative share of samples (py-spy raw) or time (cProfile)."""
    if not path.exists():
        return {}
    if path.suffix == ".prof":
        import pstats

        stats = pstats.Stats(str(path))
        total = max(s[3] for s in stats.stats.values())
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])[:n]
        return {"tool": "cProfile (main thread)", "total_s": total, "top_cumulative": [
            {"function": f"{fn} ({Path(f).name}:{ln})", "cum_s": round(s[3], 3), "self_s": round(s[2], 3),
             "calls": s[1]} for (f, ln, fn), s in rows]}  # fmt: skip
    cumulative, own, total = collections.Counter(), collections.Counter(), 0
    by_process = collections.defaultdict(collections.Counter)  # --subprocesses: first frame "process PID:CMD"
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f if f.startswith("process ") else re.sub(r":\d+\)$", ")", f).split("site-packages/")[-1]
                  for f in stack.split(";")]  # fmt: skip
        # --subprocesses nests each child under its parents: "process A;process B;frames"
        owners = [i for i, f in enumerate(frames) if f.startswith("process ")]
        process = process_kind(frames[owners[-1]]) if owners else "driver"
        frames = frames[owners[-1] + 1 :] if owners else frames
        if not frames:  # a process sampled between frames
            continue
        total += int(count)
        cumulative.update({f: int(count) for f in set(frames)})
        own[frames[-1]] += int(count)
        by_process[process].update({f: int(count) for f in set(frames)})
        by_process[process]["(all samples)"] += int(count)
    share = lambda c, k=n: [{"function": f, "share": round(v / total, 4)} for f, v in c.most_common(k)]  # noqa: E731
    return {"tool": "py-spy (driver and its Python descendants, all threads, active samples; shares of all samples)",
            "samples": total, "top_cumulative": share(cumulative), "top_self": share(own)[:15],
            "by_process": {p: share(c, 15) for p, c in sorted(by_process.items(), key=lambda kv: -kv[1]["(all samples)"])}}  # fmt: skip


def process_kind(frame: str) -> str:
    """py-spy's process frame (``process 123:"python -m ..."``) as a kind: the qeu-tune driver,
    its MLflow writer process, a Ray worker (should py-spy reach one), or another process."""
    cmd = frame.split(":", 1)[-1]
    if "writer_process" in cmd:
        return "mlflow writer process"
    if "default_worker.py" in cmd or "ray::" in cmd:
        return "ray workers (trials)"
    if "qeu-tune" in cmd or "qeu_tune" in cmd:
        return "driver"
    words = cmd.strip('"').split()
    script = next((w for w in words if w.endswith(".py")), words[0] if words else "?")
    return f"other ({Path(script).name})"


def start_server(tmp: Path, env: dict) -> tuple:
    """``qeu-tune server`` on free ports; (process, tracking URI, database URL, start seconds)."""
    from qeu_tune.commands.server import LocalPostgres, postgres_bindir
    from qeu_tune.core.processes import free_ports, wait_http

    os.chmod(tmp, 0o755)  # as root, PostgreSQL runs as `postgres`, which must reach the data dir
    (port, db_port), t0 = free_ports(2), time.monotonic()
    args = ["--data-dir", str(tmp / "server"), "--port", str(port), "--db-port", str(db_port)]
    server = subprocess.Popen([QEU, "server", *args], env=env, stdout=open(tmp / "server.log", "w"),
                              stderr=subprocess.STDOUT)  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", 300, server)
    db = LocalPostgres(tmp / "server", db_port, postgres_bindir())
    return server, f"http://127.0.0.1:{port}", db.uri(with_password=True), round(time.monotonic() - t0, 1)


def stop_server(server, tmp: Path) -> None:
    from qeu_tune.commands.server import LocalPostgres, postgres_bindir

    server.send_signal(signal.SIGTERM)  # serve() stops mlflow server and PostgreSQL
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
    db = LocalPostgres(tmp / "server", 0, postgres_bindir())
    if (db.pgdata / "postmaster.pid").exists():  # left running: stop it before its files go
        db.started_here = True
        db.stop()


def interrupt_at_limit(args, pid: int, elapsed: float, *_, row: dict) -> None:
    """``--time-limit``: one SIGINT (a user's Ctrl-C) once the command has run that long; the row
    keeps what was done by then (``time_to_n_s``, runs and points in the store)."""
    if args.time_limit and elapsed >= args.time_limit and "time_limit_sigint_s" not in row:
        os.kill(pid, signal.SIGINT)
        row["time_limit_sigint_s"] = round(elapsed, 1)


def measure(args, n: int, variant: str, resume: bool) -> dict:
    expected = n * args.results_per_trial
    row = {"size": n, "variant": variant + ("+resume" if resume else ""), "load_1m_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="qeu-bench-scale-") as name:
        tmp = Path(name)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
        env.update(QEU_TUNE_HOME=str(tmp / "home"), OMP_NUM_THREADS="1")
        url = f"sqlite:///{tmp / 'mlflow.db'}"
        if variant.startswith("tune"):
            spec = {"n": n, "results": args.results_per_trial, "step_time": args.step_time, "every": args.checkpoint_every,
                    "keep": args.keep, "storage": str(tmp / "ray_results"), "uri": url if variant == "tune_mlflow" else None}  # fmt: skip
            child = [sys.executable, __file__, "--tune-child", json.dumps(spec)]
            row.update(run(child, env, tmp, tmp / "out.log", poll=functools.partial(interrupt_at_limit, args, row=row)))
            row["sweep_s"] = round(row.pop("fit_s"), 2) if "fit_s" in row else None
            row.update(time_to_n(tmp / "ray_results", row.pop("started_epoch"), n))
            return finish(args, {**row, **(read_store(url, expected) if spec["uri"] else {})}, n)
        server, uri = None, url
        if variant == "qeu_postgres":
            server, uri, url, row["server_start_s"] = start_server(tmp, env)
        env["MLFLOW_TRACKING_URI"] = uri
        cut, profiled = {}, args.profile and variant == "qeu_sqlite" and not resume
        profile = tmp / ("pyspy.txt" if PY_SPY else "driver.prof") if profiled else None

        def poll(pid, elapsed, found):
            interrupt_at_limit(args, pid, elapsed, row=row)
            # with --resume: SIGINT once N/2 trials are FINISHED in MLflow or done by the progress line
            if resume and not cut and int(elapsed) != int(elapsed - 0.2):
                done = query(url, "SELECT COUNT(*) FROM runs WHERE status = 'FINISHED' AND run_uuid IN "
                                  "(SELECT run_uuid FROM tags WHERE key = 'qeu.kind' AND value = 'trial')")  # fmt: skip
                finished, progress = done[0][0] if done else 0, found.get("progress_done", 0)
                if max(finished, progress) >= n // 2:  # MLflow lags the driver by the writer's backlog
                    os.kill(pid, signal.SIGINT)
                    cut.update(
                        finished_at_sigint=finished, progress_at_sigint=progress, sigint_after_s=round(elapsed, 1)
                    )

        cmd = [QEU, "experiment=single", "algo=synthetic", f"search.num_samples={n}", f"checkpoint_every={args.checkpoint_every}",
               f"stop.env_steps={args.results_per_trial * STEPS}", f"algo.params.steps_per_iteration={STEPS}",
               f"algo.params.step_time_s={args.step_time}", "algo.params.lr=tag(log,interval(1e-4,3e-3))"]  # fmt: skip
        if variant == "qeu_sqlite_thread":
            cmd.append("tracking.writer=thread")
        if profile is not None and profile.suffix == ".prof":
            cmd = [sys.executable, "-c", CPROFILE, str(profile), *cmd[1:]]
        try:
            row.update(run(cmd, env, tmp, tmp / "out.log", poll=poll, profile=profile))
            state = read_store(url, expected)
            if resume:  # the row's figures are the resume's; first_* the interrupted run's
                row.update(cut, first_wall_s=row.pop("wall_s"), first_rc=row.pop("rc"), first_cpu_s=row["driver_cpu_s"])
                row["runs_at_exit"] = state["runs_by_status"]
                if cut and row["first_rc"] != 0:
                    row.update(run([QEU, "resume", str(state.get("parent_run_id"))], env, tmp, tmp / "resume.log"))
                    row.update(read_store(url, expected), sweep_s=None)
                else:
                    row.update(wall_s=0.0, rc=-1, tail=[f"not interrupted: exit {row['first_rc']}, sigint {cut}"])
                row["total_wall_s"] = round(row["first_wall_s"] + row["wall_s"], 2)
                return finish(args, row, n)
            row.update(state)
            row.update(time_to_n(tmp / "home", row.pop("started_epoch"), n))
            if profile is not None:
                row["profile"] = top_functions(profile)
            for command, out in (("report", "report"), ("best", "best.yaml")):
                if row.get("parent_run_id"):
                    call = [QEU, command, row["parent_run_id"], "--out", str(tmp / out)]
                    row[f"cli_{command}_s"] = run(call, env, tmp, tmp / f"{command}.log")["wall_s"]
        finally:
            if server is not None:
                stop_server(server, tmp)
    return finish(args, row, n)


CPROFILE = (
    "import cProfile, sys\nfrom qeu_tune.commands.main import main\nout, p = sys.argv[1], cProfile.Profile()\n"
    "p.enable()\ntry:\n    main(sys.argv[2:])\nfinally:\n    p.disable()\n    p.dump_stats(out)\n"
)


def finish(args, row: dict, n: int) -> dict:
    """Ideal time (N x trial time / CPUs), per-trial overhead over it, the release test's ratio."""
    ideal = n * args.results_per_trial * args.step_time / (os.cpu_count() or 1)
    row.update(ideal_s=round(ideal, 2), load_1m_end=os.getloadavg()[0])
    wall = row.get("total_wall_s", row["wall_s"])
    row["overhead_ms_per_trial"] = round((wall - ideal) / n * 1000, 1)
    row["wall_over_ideal"] = round(wall / ideal, 3) if ideal else None
    ok = row["rc"] == 0 and row.get("runs", n) == n and row.get("points_distinct", 0) in (0, row.get("points_expected"))
    if not ok:
        print("\n".join(["  !! unexpected result; last output lines:", *row["tail"][-15:]]), flush=True)
    row["tail"] = row["tail"][-15:] if not ok else []
    return row


COLUMNS = "size variant wall_s sweep_s report_s driver_cpu_s driver_peak_rss_mb runs points metric_rows callback_ms_p50 " \
          "callback_ms_p99 cli_report_s cli_best_s overhead_ms_per_trial rc".split()  # fmt: skip


def cell(row: dict, key: str) -> str:
    value = row.get(key)
    if key == "runs" and value is not None:
        return f"{value}/{row['size']}"
    if key == "points" and value is not None:
        return f"{row['points_distinct']}/{row['points_expected']}" + (
            "" if value == row["points_distinct"] else "+dup"
        )
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _median(values: list) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarise(rows: list, n: int) -> list:
    """Per qeu variant against ``tune`` and ``tune_mlflow``: the ratio of the median wall times
    (and sweeps proper) and each repeat's ratio to the baseline run of the same repeat."""
    runs = collections.defaultdict(list)
    for row in rows:
        if row["size"] == n and row.get("rc") == 0 and row.get("wall_s"):
            runs[row["variant"]].append(row)
    summary = []
    for base in ("tune", "tune_mlflow"):
        for name in ("qeu_sqlite", "qeu_sqlite_thread", "qeu_postgres"):
            if not runs.get(base) or not runs.get(name):
                continue
            a, b = runs[name], runs[base]
            wall_a, wall_b = _median([r["wall_s"] for r in a]), _median([r["wall_s"] for r in b])
            s = {"size": n, "variant": name, "vs": base, "runs": [len(a), len(b)],
                 "wall_ratio": round(wall_a / wall_b, 3), "overhead_ms_per_trial": round((wall_a - wall_b) / n * 1000, 1),
                 "wall_ratio_each_repeat": [round(x["wall_s"] / y["wall_s"], 3) for x, y in zip(a, b)]}  # fmt: skip
            if all(r.get("sweep_s") for r in a + b):  # the sweep proper, without start and exit
                sweep_a, sweep_b = _median([r["sweep_s"] for r in a]), _median([r["sweep_s"] for r in b])
                s.update(sweep_ratio=round(sweep_a / sweep_b, 3),
                         sweep_overhead_ms_per_trial=round((sweep_a - sweep_b) / n * 1000, 1),
                         sweep_ratio_each_repeat=[round(x["sweep_s"] / y["sweep_s"], 3) for x, y in zip(a, b)])  # fmt: skip
            summary.append(s)
            print(f"  N={n}: {name} / {base} ({len(a)} and {len(b)} runs, medians): wall {s['wall_ratio']}x "
                  f"({s['overhead_ms_per_trial']:+} ms per trial; each repeat {s['wall_ratio_each_repeat']}), sweep "
                  f"proper {s.get('sweep_ratio')}x ({s.get('sweep_overhead_ms_per_trial')} ms per trial; each repeat "
                  f"{s.get('sweep_ratio_each_repeat')})", flush=True)  # fmt: skip
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--results-per-trial", type=int, default=20)
    parser.add_argument("--step-time", type=float, default=0.0, help="sleep per result (algo.params.step_time_s)")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="qeu-tune's checkpoint_every, for both")
    parser.add_argument("--keep", type=int, default=None, help="plain Tune's num_to_keep (qeu-tune keeps all)")
    parser.add_argument("--resume", action="store_true", help="also SIGINT each qeu variant at N/2 and resume it")
    parser.add_argument("--repeats", type=int, default=1, help="run the variants this many times, alternated")
    parser.add_argument("--time-limit", type=float, default=None, help="SIGINT each sweep after this many seconds")
    parser.add_argument("--profile", action="store_true", help="profile the qeu_sqlite driver (py-spy or cProfile)")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "bench_scale.json")
    parser.add_argument("--tune-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tune_child:
        return tune_child(json.loads(args.tune_child))
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {','.join(VARIANTS)}")
    from qeu_tune.commands.server import postgres_bindir

    if "qeu_postgres" in variants and postgres_bindir() is None:
        print("qeu_postgres skipped: PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)", flush=True)
        variants.remove("qeu_postgres")
    import mlflow
    import ray

    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "ray": ray.__version__, "mlflow": mlflow.__version__}  # fmt: skip
    settings = {**{k: v for k, v in vars(args).items() if k != "tune_child"}, "output": str(args.output),
                "cpus_per_trial": 1, "concurrent_trials": os.cpu_count(), "env_steps_per_result": STEPS}  # fmt: skip
    out = {"command": " ".join(["python", "scripts/bench_scale.py", *sys.argv[1:]]), "machine": machine,
           "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load_average_at_start": os.getloadavg(),
           "settings": settings, "anchor_ray_release_test": ANCHOR, "rows": [], "summary": []}  # fmt: skip
    print(" | ".join(COLUMNS), flush=True)
    for n in [int(s) for s in args.sizes.split(",")]:
        plan = [(v, False) for v in variants] * max(1, args.repeats)
        plan += [(v, True) for v in variants if args.resume and v.startswith("qeu")]
        for variant, resume in plan:
            try:
                row = measure(args, n, variant, resume)
            except Exception as err:  # noqa: BLE001 - one broken run must not lose the others
                row = {"size": n, "variant": variant + ("+resume" if resume else ""), "error": repr(err), "rc": None}
                print(f"  !! {row['variant']} at N={n} failed: {err!r}", flush=True)
            out["rows"].append(row)
            print(" | ".join(cell(row, k) for k in COLUMNS), flush=True)
            if resume:
                print(f"    SIGINT after {row.get('sigint_after_s')} s at {row.get('finished_at_sigint')}/{n} FINISHED "
                      f"in MLflow, {row.get('progress_at_sigint')} by the progress line; exit {row['first_rc']} after {row['first_wall_s']} s (driver CPU "
                      f"{row['first_cpu_s']} s), runs at its exit {row['runs_at_exit']}; `qeu-tune resume` above, total "
                      f"{row['total_wall_s']} s; final runs {row.get('runs_by_status')}", flush=True)  # fmt: skip
            out["load_average_at_end"] = os.getloadavg()
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=1) + "\n")
        out["summary"] += summarise(out["rows"], n)
        args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}", flush=True)


if __name__ == "__main__":
    main()
