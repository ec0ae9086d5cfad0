"""The same `qeu-tune` command on a real multi-node Ray cluster on this machine.

A head with ``num_cpus=0`` (so no trial can run on it) and two 1-CPU worker nodes, started
with the project's scripts/ray_head.sh and scripts/ray_worker.sh as separate `ray start`
processes, with token authentication. The sweep runs (a) through the CLI connected with
``cluster.address=HOST:PORT`` and (b) submitted with ``ray job submit``, with a user env
given by import path that reaches the workers only through ``--working-dir``. MLflow must
show every trial on a worker node, FINISHED, with its full metric history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray_cluster import VENV_BIN, LocalRayCluster

from qeu_tune.core import names, tags
from qeu_tune.core.tags import TAG_NODE_ID, TAG_NODE_IP

pytestmark = pytest.mark.slow

BUDGET = 1000  # stop.env_steps of debug=smoke


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("cluster-home")
    ray_cluster = LocalRayCluster(env={"QEU_TUNE_HOME": str(home)})
    try:
        ray_cluster.start_head()
        ray_cluster.wait_for(1)
        ray_cluster.add_worker(num_cpus=1)
        ray_cluster.add_worker(num_cpus=1)
        nodes = ray_cluster.wait_for(3)
        head = [n["NodeID"] for n in nodes if not n["Resources"].get("CPU")]
        workers = [n["NodeID"] for n in nodes if n["Resources"].get("CPU")]
        assert len(head) == 1 and len(workers) == 2, nodes
        ray_cluster.head_id, ray_cluster.worker_ids = head[0], set(workers)
        yield ray_cluster
    finally:
        ray_cluster.stop()


def run(cmd, cluster: LocalRayCluster, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command against the cluster; a hang fails with its output and the nodes' logs."""
    try:
        return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=300, **kwargs)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        pytest.fail(f"{cmd[:3]} hung for 300 s:\n{out[-3000:]}\n{cluster.tail_logs()}")


def check_trials_ran_on_workers(uri: str, cluster: LocalRayCluster, num_trials: int = 2) -> None:
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "qeu-tune"]
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "trial"]
    (parent,) = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "sweep"]
    assert parent.info.status == "FINISHED"
    assert len(trials) == num_trials
    nodes = set()
    for run in trials:
        tags = run.data.tags
        assert run.info.status == "FINISHED", tags.get(tags.TAG_ERROR)
        assert tags[TAG_NODE_ID] in cluster.worker_ids and tags[TAG_NODE_ID] != cluster.head_id
        assert tags[TAG_NODE_IP]
        nodes.add(tags[TAG_NODE_ID])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, names.ENV_STEPS)]
        assert len(steps) >= 2 and all(a < b for a, b in zip(steps, steps[1:])), steps
        assert steps[-1] >= BUDGET
        returns = client.get_metric_history(run.info.run_id, names.RETURN_ENV_MEAN)
        assert [m.step for m in returns] == steps  # one point per reported iteration
        assert not any(k.startswith("qeu_node") for k in run.data.metrics)  # strings are tags only
    assert nodes == cluster.worker_ids  # 1 CPU per worker: one trial on each node


def test_cli_sweep_on_a_multi_node_cluster_runs_trials_on_workers_only(cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run(
        [
            str(VENV_BIN / "qeu-tune"),
            "debug=smoke",
            "cluster=remote",
            f"cluster.address={cluster.address}",
            f"tracking.uri={uri}",
            f"cluster.storage_path={tmp_path / 'shared-storage'}",
            "search.num_samples=2",
            "++cluster.runtime_env={env_vars: {QEU_CLUSTER_TEST: '1'}}",
        ],  # ray.init(runtime_env=...)
        cluster,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_trials_ran_on_workers(uri, cluster)
    # Checkpoints went to the shared storage path, where a retry on another node finds them.
    assert list((tmp_path / "shared-storage").rglob("checkpoint_*"))


USER_ENV = textwrap.dedent('''
    """A user's environment, known to the workers only through ray job submit --working-dir."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv


    class UserCartPole(CartPoleEnv):
        pass
''')


def test_ray_job_submit_runs_the_same_sweep_with_user_code_from_the_working_dir(cluster, tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "user_envs.py").write_text(USER_ENV)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime_env = {"env_vars": {"QEU_TUNE_HOME": str(tmp_path / "job-home")}}
    proc = run(
        [
            str(VENV_BIN / "ray"),
            "job",
            "submit",
            "--address",
            cluster.dashboard_url,
            "--working-dir",
            str(workdir),
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "qeu-tune",
            "debug=smoke",
            "cluster=remote",
            "env.id=user_envs:UserCartPole",
            f"tracking.uri={uri}",
            f"cluster.storage_path={tmp_path / 'shared-storage'}",
            "search.num_samples=2",
        ],
        cluster,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in output, output[-5000:]
    assert "Parent run:" in output  # the driver's summary, streamed back by ray job submit
    check_trials_ran_on_workers(uri, cluster)
    client = MlflowClient(tracking_uri=uri)
    trials = [
        r
        for r in client.search_runs([client.get_experiment_by_name("qeu-tune").experiment_id])
        if r.data.tags.get(tags.TAG_KIND) == "trial"
    ]
    assert {r.data.params["env.id"] for r in trials} == {"user_envs:UserCartPole"}
    assert not (Path(os.getcwd()) / "user_envs.py").exists() and "user_envs" not in sys.modules
