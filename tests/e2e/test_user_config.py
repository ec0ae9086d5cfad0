"""A user's own config directory, know-how from the command line and command-line sweep
dimensions, through the real ``qeu-tune`` command (a subprocess, cwd outside the repo); and
``qeu-tune resume`` building the rest of a sweep from the configs it started with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from qeu_tune.core import names, tags
from qeu_tune.engine import synthetic

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


RESUME_BUDGET, RESUME_STEP = 4000, 100


def write_resumable_conf(conf):
    """A user config dir: its own algo/synthetic.yaml (replacing the shipped one), an env of its
    own and an experiment that searches between that env and a shipped one."""
    for group in ("algo", "env", "experiment"):
        (conf / group).mkdir(parents=True, exist_ok=True)
    (conf / "algo" / "synthetic.yaml").write_text(
        "defaults: [base_algo]\nname: synthetic\n"
        f"params: {{noise_sd: 0.0, base_rate: 3.0, steps_per_iteration: {RESUME_STEP}, step_time_s: 0.2}}\n"
    )
    (conf / "env" / "my_task.yaml").write_text(
        "defaults: [base_env]\nname: my_task\nid: CartPole-v1\nreturn_threshold: 90.0\nreturn_range: [0.0, 100.0]\n"
    )
    (conf / "experiment" / "resumable.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /algo: synthetic\n"
        "search: {algorithm: grid, space: {env: 'choice(cartpole, my_task)'}, num_samples: 1, num_seeds: 1}\n"
        f"stop: {{env_steps: {RESUME_BUDGET}}}\ncheckpoint_every: 2\nsweep_name: resumable\n"
    )


def test_resume_builds_the_remaining_trials_from_the_configs_the_sweep_started_with(ray_session, tmp_path):
    work = tmp_path / "work"
    conf = work / "conf"
    write_resumable_conf(conf)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    address = ray_session.get_runtime_context().gcs_address
    common = [f"tracking.uri={uri}", "cluster=remote", f"cluster.address={address}"]
    command = [sys.executable, "-m", "qeu_tune.commands.main"]
    proc = subprocess.Popen(
        [*command, "experiment=resumable", *common, f"cluster.storage_path={tmp_path / 'ray'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=work,  # ./conf is the user config dir
        start_new_session=True,
    )
    client = MlflowClient(uri)
    try:
        deadline = time.monotonic() + 240
        while True:  # interrupted once a trial is past a checkpoint
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the sweep made no progress"
            try:
                runs = client.search_runs(["1"], filter_string=f"tags.`{tags.TAG_KIND}` = 'trial'")
            except Exception:  # noqa: BLE001 - the database may not exist yet
                runs = []
            if any(r.data.metrics.get(names.ENV_STEPS, 0) >= 5 * RESUME_STEP for r in runs):
                break
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    (parent,) = client.search_runs(["1"], filter_string=f"tags.`{tags.TAG_KIND}` = 'sweep'")
    assert parent.info.status == "KILLED"

    # The user's configs change before the resume: their env is gone, a file of their own now
    # replaces the shipped cartpole, and their synthetic learner learns faster.
    (conf / "env" / "my_task.yaml").unlink()
    (conf / "env" / "cartpole.yaml").write_text(
        "defaults: [base_env]\nname: cartpole\nid: CartPole-v1\nreturn_range: [0.0, 50.0]\n"
    )
    (conf / "algo" / "synthetic.yaml").write_text(
        "defaults: [base_algo]\nname: synthetic\nparams: {noise_sd: 0.0, base_rate: 10.0, steps_per_iteration: 50}\n"
    )
    done = subprocess.run(
        [*command, "--tracking-uri", uri, "resume", parent.info.run_id],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    parent = client.get_run(parent.info.run_id)
    trials = client.search_runs(["1"], filter_string=f"tags.`{tags.TAG_PARENT}` = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and len(trials) == 2
    envs = set()
    for run in trials:
        assert run.info.status == "FINISHED"
        path = client.download_artifacts(run.info.run_id, tags.RESOLVED_CONFIG_ARTIFACT, str(tmp_path))
        config = yaml.safe_load(open(path))  # as resolved when the trial started
        envs.add(config["env"]["name"])
        history = sorted(client.get_metric_history(run.info.run_id, names.RETURN_ENV_MEAN), key=lambda m: m.step)
        steps = [m.step for m in history]
        assert steps == list(range(RESUME_STEP, RESUME_BUDGET + 1, RESUME_STEP))  # the old step size, to the end
        truth = synthetic.true_curve(config, steps, seed=config["seed"])  # noise_sd 0: exactly the model's curve
        assert [m.value for m in history] == pytest.approx(truth.tolist(), rel=1e-9, abs=1e-9), config["env"]["name"]
    assert envs == {"cartpole", "my_task"}
