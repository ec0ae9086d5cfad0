"""A user's own config directory, know-how from the command line and command-line sweep
dimensions, through the real ``qeu-tune`` command (a subprocess, cwd outside the repo)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from qeu_tune.core import tags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "config"))
from test_cmdline import cartpole_csv, write_user_conf  # noqa: E402 - after its sys.path entry

pytestmark = pytest.mark.slow


def qeu_tune(args, cwd, ray_session, uri, timeout=400):
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qeu_tune.commands.main",
            *args,
            "cluster=remote",
            f"cluster.address={address}",
            f"tracking.uri={uri}",
            f"cluster.storage_path={cwd / 'ray'}",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def sweeps(client):
    (experiment,) = [e for e in client.search_experiments() if e.name == "qeu-tune"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "sweep"]
    return parents, runs


def test_user_experiment_and_reward_design_with_a_two_dimension_command_line_sweep_then_best(ray_session, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    conf = write_user_conf(work, cartpole_csv(work / "demos.csv"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = qeu_tune(
        [
            "experiment=my_study",
            "debug=smoke",
            "stop.env_steps=500",
            "search.num_samples=2",
            "algo.params.lr=tag(log,interval(1e-4,1e-2))",
            "reward.metrics.balance.weight=choice(0.0,0.2)",
        ],
        work,
        ray_session,
        uri,
    )
    assert "Progress: 2/2 trials done" in proc.stdout  # the line above Tune's table
    assert "Token authentication is enabled" not in proc.stderr
    assert "Creating initial MLflow database tables" not in proc.stderr
    client = MlflowClient(uri)
    parents, runs = sweeps(client)
    assert len(parents) == 1  # ONE sweep, the command-line values are its dimensions
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags[tags.TAG_SWEEP] == "my_study"
    children = [r for r in runs if r.data.tags.get(tags.TAG_PARENT) == parent.info.run_id]
    assert len(children) == 2
    for child in children:
        assert child.data.params["reward.name"] == "my_design" and child.data.params["env.name"] == "my_task"
        assert child.data.params["reward.metrics.balance.weight"] in ("0.0", "0.2")
        assert 1e-4 <= float(child.data.params["algo.params.lr"]) <= 1e-2
        assert child.data.params["reward.metrics.balance.source.path"] == str(work / "demos.csv")
    assert "search_space.algo.params.lr" in parent.data.params

    best = subprocess.run(
        [sys.executable, "-m", "qeu_tune.commands.main", "best", parent.info.run_id, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=work,
    )
    assert best.returncode == 0, best.stderr[-2000:]
    written = list((conf / "experiment").glob("best_*.yaml"))
    assert len(written) == 1 and "rerun it: qeu-tune experiment=best_my_study" in best.stdout


def test_know_how_file_from_the_command_line(ray_session, tmp_path):
    cartpole_csv(tmp_path / "demos.csv")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    qeu_tune(
        [
            "reward=cartpole_rt",
            "reward.metrics.balance.source.type=file",
            "reward.metrics.balance.source.path=demos.csv",
            "experiment=single",
            "debug=smoke",
            "stop.env_steps=500",
        ],
        tmp_path,
        ray_session,
        uri,
    )
    parents, runs = sweeps(MlflowClient(uri))
    (trial,) = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "trial"]
    assert trial.info.status == "FINISHED"
    assert trial.data.params["reward.metrics.balance.source.type"] == "file"
    assert "reward.metrics.balance.source.name" not in trial.data.params  # the builtin's fields are gone
    assert any(k.startswith("rt/balance/") for k in trial.data.metrics)
