"""No secret reaches MLflow or the console: passwords in URIs, tokens in the environment,
values interpolated from the environment. The trial still gets the real values.

A real `mlflow server` (SQLite backend, artifacts on disk) is reached through an http URI
that carries a password (the server has no auth and ignores it); the sweep runs through the
CLI. Then the whole backend store (the SQLite file, as bytes), the artifact directory and
the console output are searched for every secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
