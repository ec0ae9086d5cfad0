"""No secret reaches MLflow, the console or the disk: passwords in URIs, tokens in the
environment, values interpolated from the environment. The live driver keeps the real values.

A real `mlflow server` (SQLite backend, artifacts on disk) is reached through an http URI
that carries a password (the server has no auth and ignores it); the sweep runs through the
CLI. Then the whole backend store (the SQLite file, as bytes), the artifact directory and
the console output are searched for every secret; the second test also searches every file
under $QEU_TUNE_HOME (Hydra's run directory, the journal) and the Tune storage path (the
sweep state, Tune's pickles and experiment state, checkpoints), and resumes the interrupted
sweep only once the secrets are given again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer

from qeu_tune.core import redact, tags

pytestmark = pytest.mark.slow

PASSWORD = "S3CRETPW"
TOKEN = "tok-XYZ123"  # in QEU_TEST_TOKEN: secret by its name, and interpolated
TEAM = "team-QRS456"  # in QEU_TEST_TEAM: not secret by name, secret because interpolated
API_KEY = "key-LMN789"  # in QEU_TEST_API_KEY: secret by name, typed on the command line
SECRETS = (PASSWORD, TOKEN, TEAM, API_KEY)


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_secrets_are_masked_in_params_tags_artifacts_command_and_console(ray_session, tmp_path):
    server = MlflowServer(tmp_path / "mlflow-server").start()
    try:
        uri = f"http://alice:{PASSWORD}@127.0.0.1:{server.port}"
        env = {**os.environ, "QEU_TEST_TOKEN": TOKEN, "QEU_TEST_TEAM": TEAM, "QEU_TEST_API_KEY": API_KEY}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "qeu_tune.commands.main",
                "debug=smoke",
                "experiment=single",
                "cluster=remote",
                f"cluster.address={ray_session.get_runtime_context().gcs_address}",
                f"tracking.uri={uri}",
                f"cluster.storage_path={tmp_path / 'ray'}",
                "+tags.owner=${oc.env:QEU_TEST_TOKEN}",
                "+tags.team=team:${oc.env:QEU_TEST_TEAM}",
                f"+tags.note={API_KEY}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        console = proc.stdout + proc.stderr
        assert proc.returncode == 0, console[-4000:]
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{server.port}")
        runs = client.search_runs([client.get_experiment_by_name("qeu-tune").experiment_id])
    finally:
        server.stop()

    (parent,) = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "sweep"]
    (trial,) = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "trial"]
    assert trial.info.status == "FINISHED"
    # What was recorded, masked: the values are there, the secrets are not.
    assert parent.data.tags["owner"] == redact.MASK and parent.data.tags["team"] == "team:***"
    assert parent.data.tags["note"] == redact.MASK
    assert f"tracking.uri=http://alice:{redact.MASK}@127.0.0.1" in parent.data.tags["qeu.command"]
    assert trial.data.params["tracking.uri"] == f"http://alice:{redact.MASK}@127.0.0.1:{server.port}"
    assert trial.data.params["tags.owner"] == redact.MASK
    assert f"Tracking URI: http://alice:{redact.MASK}@" in console

    store = all_bytes(tmp_path / "mlflow-server")  # mlflow.db (+ journal files) and artifacts/
    assert b"config/resolved.yaml" in store or any((tmp_path / "mlflow-server" / "artifacts").rglob("resolved.yaml"))
    for secret in SECRETS:
        assert secret.encode() not in store, f"{secret} is in the MLflow backend store or artifacts"
        assert secret not in console, f"{secret} was printed"


QEU_TUNE = [sys.executable, "-m", "qeu_tune.commands.main"]


def files_holding(secret: str, *roots: Path) -> list:
    """Every file under ``roots`` (binary files too: pickles, checkpoints, databases) holding ``secret``."""
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file() and secret.encode() in p.read_bytes()]


def test_no_secret_on_disk_and_resume_needs_the_secrets_given_again(ray_session, tmp_path):
    """An interrupted sweep with a password in its tracking URI and secrets from the environment
    leaves none on disk; `resume` refuses, in one sentence, until each is given again, then finishes."""
    home, storage = tmp_path / "home", tmp_path / "ray"
    server = MlflowServer(tmp_path / "mlflow-server").start()
    secret_env = {"QEU_TEST_TOKEN": TOKEN, "QEU_TEST_TEAM": TEAM, "QEU_TEST_API_KEY": API_KEY}
    env = {**os.environ, "QEU_TUNE_HOME": str(home), **secret_env}
    console = []

    def resume(*args: str, **extra: str) -> subprocess.CompletedProcess:
        run_env = {k: v for k, v in {**env, **extra}.items() if v is not None}
        done = subprocess.run([*QEU_TUNE, *args], env=run_env, capture_output=True, text=True, timeout=300)
        console.append(done.stdout + done.stderr)
        return done

    try:
        plain = f"http://127.0.0.1:{server.port}"  # the same server, as a client without the password
        uri = f"http://alice:{PASSWORD}@127.0.0.1:{server.port}"
        client = MlflowClient(tracking_uri=plain)
        proc = subprocess.Popen(
            [
                *QEU_TUNE,
                "debug=smoke",
                "experiment=single",
                "search.num_seeds=2",
                "stop.env_steps=2000",
                "stop.time_s=null",
                "checkpoint_every=1",
                "cluster=remote",
                f"cluster.address={ray_session.get_runtime_context().gcs_address}",
                f"tracking.uri={uri}",
                f"cluster.storage_path={storage}",
                "+tags.owner=${oc.env:QEU_TEST_TOKEN}",
                "+tags.team=team:${oc.env:QEU_TEST_TEAM}",
                f"+tags.note={API_KEY}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.time() + 240
            while not list(storage.glob("*/*/checkpoint_*")):  # a checkpoint on disk: something to grep
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "slow"
                time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        console.append(out)
        assert proc.returncode == 130, out[-4000:]
        experiment = client.get_experiment_by_name("qeu-tune").experiment_id
        (parent,) = client.search_runs([experiment], filter_string=f"tags.`{tags.TAG_KIND}` = 'sweep'")
        ref = parent.info.run_id
        masked = f"http://alice:{redact.MASK}@127.0.0.1:{server.port}"
        assert f"Continue it with: qeu-tune --tracking-uri {masked} resume {ref}" in out

        # Without a secret: exit 2, one sentence saying what is missing, nothing resumed.
        from_env = f"tracking.uri=http://alice:${{oc.env:QEU_TEST_PASSWORD}}@127.0.0.1:{server.port}"
        refused = {
            "holds ***, which qeu-tune prints in place of its password": resume(
                "--tracking-uri", masked, "resume", ref
            ),
            f"was recorded with a password in its tracking URI ({masked})": resume(
                "--tracking-uri", f"http://alice@127.0.0.1:{server.port}", "resume", ref
            ),
            "names the environment variable QEU_TEST_PASSWORD, which is not set here": resume("resume", ref, from_env),
            "takes tags.owner from the environment variable QEU_TEST_TOKEN, which is not set here": resume(
                "resume", ref, from_env, QEU_TEST_PASSWORD=PASSWORD, QEU_TEST_TOKEN=None
            ),
        }
        for sentence, done in refused.items():
            assert done.returncode == 2 and sentence in done.stderr, done.stdout + done.stderr
            errors = [line for line in done.stderr.splitlines() if line.startswith("qeu-tune: error: ")]
            assert len(errors) == 1 and sentence in errors[0], done.stderr
            assert "Traceback" not in done.stdout + done.stderr
        assert client.get_run(ref).info.status == "KILLED"

        # Given again (the password from the variable the override names): the sweep finishes.
        done = resume("resume", ref, from_env, QEU_TEST_PASSWORD=PASSWORD)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        assert client.get_run(ref).info.status == "FINISHED"
        trials = client.search_runs([experiment], filter_string=f"tags.`{tags.TAG_PARENT}` = '{ref}'")
        assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    finally:
        server.stop()

    # What the grep covers: Hydra's run files, Tune's state and pickles, the sweep state, checkpoints.
    written = {p.name for root in (home, storage) for p in root.rglob("*") if p.is_file()}
    assert {"config.yaml", "hydra.yaml", "overrides.yaml", "qeu_sweep.yaml", "tuner.pkl"} <= written, written
    assert any(n.startswith("callback-states") for n in written) and any(
        n.startswith("experiment_state") for n in written
    )
    assert list(storage.glob("*/*/checkpoint_*"))
    recorded = (next(storage.glob("*/qeu_sweep.yaml"))).read_text()
    assert "owner: ${oc.env:QEU_TEST_TOKEN}" in recorded and f"uri: http://alice:{redact.MASK}@127.0.0.1" in recorded
    text = "\n".join(console)
    for secret in SECRETS:
        assert files_holding(secret, home, storage, tmp_path / "mlflow-server") == [], secret
        assert secret not in text, f"{secret} was printed"
