"""The same `qeu-tune` command on a real multi-node Ray cluster on this machine.

A head with ``num_cpus=0`` (so no trial can run on it) and two 1-CPU worker nodes, started
with the project's scripts/ray_head.sh and scripts/ray_worker.sh as separate `ray start`
processes, with token authentication. The sweep runs (a) through the CLI connected with
``cluster.address=HOST:PORT`` and (b) submitted with ``ray job submit``, with a user env
given by import path that reaches the workers only through ``--working-dir``. MLflow must
show every trial on a worker node, FINISHED, with its full metric history.

First, on the same shape built with ``ray.cluster_utils.Cluster`` (whose ``remove_node`` kills
a node as a lost machine would), a worker node is lost mid-sweep: its trial goes on from its
checkpoint on the other worker, and the console says so in one line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from ray_cluster import VENV_BIN, LocalRayCluster, losable_cluster

from qeu_tune.analysis.integrity import sweep_integrity
from qeu_tune.core import names, tags
from qeu_tune.core.tags import TAG_NODE_ID, TAG_NODE_IP, TAG_RETRIES, TAG_TRIAL_ID

pytestmark = pytest.mark.slow

BUDGET = 1000  # stop.env_steps of debug=smoke

# The node-loss sweep: the synthetic learner (no RLlib), 100 env steps an iteration, 0.3 s each,
# a checkpoint every 3 iterations: 30 iterations leave time to lose a node after a checkpoint.
LOSS_BUDGET, LOSS_STEP, LOSS_CHECKPOINT_EVERY = 3000, 100, 3


def _first_checkpointed_trial(client: MlflowClient, proc: subprocess.Popen, timeout: float = 150) -> Any:
    """A trial run that knows its node and logged the iteration after its first checkpoint (so
    the driver has registered that checkpoint), and is not finished yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            runs = client.search_runs(["1"], filter_string=f"tags.`{tags.TAG_KIND}` = 'trial'")
        except Exception:  # noqa: BLE001 - the database may not exist yet
            runs = []
        for run in runs:
            logged = max((m.step for m in client.get_metric_history(run.info.run_id, names.ENV_STEPS)), default=0)
            if run.data.tags.get(TAG_NODE_ID) and logged > LOSS_CHECKPOINT_EVERY * LOSS_STEP:
                assert logged < LOSS_BUDGET, "the trial finished before its node could be lost"
                return run
        time.sleep(0.3)
    raise AssertionError(f"no trial passed its first checkpoint in {timeout:.0f} s")


def test_a_worker_node_lost_mid_sweep_costs_one_retry_from_the_checkpoint_and_one_console_line(tmp_path):
    started = time.monotonic()
    with losable_cluster(num_workers=2, worker_cpus=1) as (cluster, workers):
        up = time.monotonic() - started
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        args = [
            "algo=synthetic",
            "experiment=single",
            "search.num_seeds=2",  # two trials, one per worker (1 CPU each, none on the head)
            f"stop.env_steps={LOSS_BUDGET}",
            f"algo.params.steps_per_iteration={LOSS_STEP}",
            "algo.params.step_time_s=0.3",
            f"checkpoint_every={LOSS_CHECKPOINT_EVERY}",
            "max_failures=1",
            "tracking.flush_every_s=0.5",
            f"tracking.uri={uri}",
            f"cluster.address={cluster.address}",
            f"cluster.storage_path={tmp_path / 'shared-storage'}",
        ]
        proc = subprocess.Popen(
            [str(VENV_BIN / "qeu-tune"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        client = MlflowClient(uri)
        try:
            victim = _first_checkpointed_trial(client, proc)
            lost = victim.data.tags[TAG_NODE_ID]
            (node,) = [w for w in workers if w.node_id == lost]
            cluster.remove_node(node, allow_graceful=False)  # SIGKILL: raylet, object store, the trial's process
            out, _ = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    print(f"cluster up in {up:.0f} s, whole test {time.monotonic() - started:.0f} s")
    (survivor,) = [w.node_id for w in workers if w.node_id != lost]
    trial_id = victim.data.tags[TAG_TRIAL_ID]

    # The sweep finished; the console has one line for the event and none of Ray's or Tune's own.
    assert proc.returncode == 0, out[-5000:]
    assert "Sweep FINISHED: 2 trials." in out, out[-3000:]
    (line,) = [x for x in out.splitlines() if " lost its " in x]
    event = re.search(
        rf"trial {trial_id} lost its node {lost[:8]} \(\S+\); retry 1 of 1 from (checkpoint_\d+) "
        r"\(iteration (\d+), ([\d,]+) env steps\)",
        line,
    )
    assert event, line
    restored_iteration = int(event.group(2))
    assert restored_iteration >= LOSS_CHECKPOINT_EVERY and restored_iteration % LOSS_CHECKPOINT_EVERY == 0, line
    for noise in (
        "[state-dump]",
        "Raylet is terminated",
        "has been marked dead",
        "Number of errored trials",
        "Trial task failed",
        "Traceback",
    ):
        assert noise not in out, noise

    # MLflow: every run ended FINISHED; the lost trial retried once, into the same run, on the survivor.
    (experiment,) = [e for e in client.search_experiments() if e.name == "qeu-tune"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}  # nothing left RUNNING
    (parent,) = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "sweep"]
    trials = {r.data.tags[TAG_TRIAL_ID]: r for r in runs if r.data.tags.get(tags.TAG_KIND) == "trial"}
    retried = trials[trial_id]
    assert retried.data.tags[TAG_RETRIES] == "1" and retried.data.tags[TAG_NODE_ID] == survivor
    assert f"{tags.TAG_ERROR}.attempt1" in retried.data.tags
    (other,) = [r for t, r in trials.items() if t != trial_id]
    assert TAG_RETRIES not in other.data.tags and other.data.tags[TAG_NODE_ID] == survivor

    # Its env-step axis went on without a duplicated or missing step (every metric, both trials).
    report = sweep_integrity(client, parent.info.run_id, iteration_steps=LOSS_STEP, tolerance=0.01, check_budget=True)
    assert report.ok, report.describe()
    expected = list(range(LOSS_STEP, LOSS_BUDGET + 1, LOSS_STEP))
    for run in trials.values():
        assert [m.step for m in client.get_metric_history(run.info.run_id, names.ENV_STEPS)] == expected

    # Tune's own record of every result: the retry's first result, on the survivor, is the
    # iteration after the checkpoint's (it was restored from it, not restarted).
    (results,) = (tmp_path / "shared-storage").glob(f"*/{trial_id}/result.json")
    attempts = [json.loads(x) for x in results.read_text().splitlines()]
    first_on_survivor = next(r for r in attempts if r.get("qeu_node_id") == survivor)
    assert first_on_survivor["training_iteration"] == restored_iteration + 1
    assert attempts[0].get("qeu_node_id") == lost
    redone = sum(1 for r in attempts if r["training_iteration"] > restored_iteration) - (
        LOSS_BUDGET // LOSS_STEP - restored_iteration
    )
    print(
        f"{line}\nlost node after iteration {restored_iteration + redone}; {redone} iterations re-run, none logged twice"
    )


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
        run_tags = run.data.tags
        assert run.info.status == "FINISHED", run_tags.get(tags.TAG_ERROR)
        assert run_tags[TAG_NODE_ID] in cluster.worker_ids and run_tags[TAG_NODE_ID] != cluster.head_id
        assert run_tags[TAG_NODE_IP]
        nodes.add(run_tags[TAG_NODE_ID])
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
