"""`qeu-tune server`: a real PostgreSQL cluster and `mlflow server`, many concurrent writers.

Needs Debian's PostgreSQL (`apt-get install postgresql`); skipped with that reason where
initdb/pg_ctl are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from fake_sweep import record_sweep
from mlflow.tracking import MlflowClient

from qeu_tune.commands.server import DB_NAME, DB_USER, postgres_bindir
from qeu_tune.core import names, tags
from qeu_tune.core.processes import free_ports, port_open

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        postgres_bindir() is None, reason="needs PostgreSQL's initdb/pg_ctl: apt-get install postgresql"
    ),
]

STEPS = np.arange(500, 5001, 500)  # 10 points per trial


@pytest.fixture
def server(tmp_path):
    data_dir, port, db_port = tmp_path / "server", *free_ports(2)
    log_path = tmp_path / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qeu_tune.commands.main",
            "server",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--db-port",
            str(db_port),
        ],
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while "MLflow tracking server:" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            assert response.status == 200
        yield {"url": url, "port": port, "db_port": db_port, "data_dir": data_dir, "log": log_path, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `qeu-tune server` stops MLflow and PostgreSQL itself
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        link = data_dir / "pgdata"
        if link.is_symlink():  # as root the cluster lives in /var/lib/postgresql/qeu-tune/<id>
            bindir = postgres_bindir()
            target = link.resolve()
            subprocess.run(
                [str(bindir / "pg_ctl"), "-D", str(target), "-m", "immediate", "stop"],
                user="postgres",
                capture_output=True,
            )
            shutil.rmtree(target, ignore_errors=True)


def curve(values, seed, steps):
    return steps / 100.0 * values["algo.params.lr"] * 1000 + seed


def test_server_on_postgresql_takes_concurrent_trials_without_losing_a_point(server, tmp_path):
    url = server["url"]
    MlflowClient(tracking_uri=url).create_experiment("qeu-tune")  # once, before the writers race
    recorded, errors = [], []

    def writer(i: int) -> None:
        try:
            recorded.append(
                record_sweep(
                    url,
                    {f"s{i}a": {"algo.params.lr": 0.001 * (i + 1)}, f"s{i}b": {"algo.params.lr": 0.002 * (i + 1)}},
                    curve,
                    seeds=(0, 1),
                    steps=STEPS,
                    sweep_name=f"concurrent-{i}",
                )
            )
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]  # 4 sweeps x 4 trials
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(recorded) == 4

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("qeu-tune")
    trials = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=1000)
        if r.data.tags.get(tags.TAG_KIND) == "trial"
    ]
    assert len(trials) == 16
    for run in trials:
        assert run.info.status == "FINISHED"
        for key in (names.ENV_STEPS, names.RETURN_ENV_MEAN, "rt/route/mean"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(STEPS), (key, run.info.run_name)
    log = server["log"].read_text(errors="replace")
    assert "database is locked" not in log and "Traceback" not in log

    # The database is PostgreSQL, and its password is in no output.
    password = (server["data_dir"] / "db_password").read_text().strip()
    assert password not in log and "postgresql+psycopg://mlflow:***@" in log


def test_postgresql_uri_works_directly_as_tracking_uri_and_the_server_stops_cleanly(server, tmp_path):
    import sqlalchemy

    password = (server["data_dir"] / "db_password").read_text().strip()
    db_port = server["db_port"]
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, the driver of the `server` extra.
    assert sqlalchemy.engine.make_url(f"postgresql://u@127.0.0.1:{db_port}/x").get_dialect().driver == "psycopg"
    for scheme in ("postgresql+psycopg", "postgresql"):
        uri = f"{scheme}://{DB_USER}:{password}@127.0.0.1:{db_port}/{DB_NAME}"
        rec = record_sweep(
            uri, {"a": {"algo.params.lr": 0.001}}, curve, seeds=(0,), steps=STEPS, sweep_name=f"direct-{scheme}"
        )
        client = MlflowClient(tracking_uri=uri)
        (trial,) = [
            t
            for t in client.search_runs(
                [rec.tracker.experiment_id], filter_string=f"tags.`{tags.TAG_PARENT}` = '{rec.parent_run_id}'"
            )
        ]
        assert len(client.get_metric_history(trial.info.run_id, names.ENV_STEPS)) == len(STEPS)
    # Runs written directly are visible through the server (same database).
    via_server = MlflowClient(tracking_uri=server["url"])
    names_seen = {
        r.data.tags.get(tags.TAG_SWEEP)
        for r in via_server.search_runs([via_server.get_experiment_by_name("qeu-tune").experiment_id])
    }
    assert {"direct-postgresql+psycopg", "direct-postgresql"} <= names_seen

    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not port_open(server["port"]) and not port_open(db_port)  # MLflow and PostgreSQL are down
