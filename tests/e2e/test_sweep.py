"""Tiny sweeps that really run Ray Tune, RLlib and MLflow, checked by reading MLflow back."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient
from sweeps import children, run

from qeu_tune.commands.best import best_command
from qeu_tune.core import names, tags

pytestmark = pytest.mark.slow


def test_two_algorithm_sweep_records_parent_children_params_metrics_artifacts(ray_session, tmp_path):
    result, client = run(
        [
            "debug=smoke",
            "search=grid",
            "experiment=single",
            "++search.space={algo:'choice(ppo,dqn)',env.env_config.max_episode_steps:'choice(100,200)'}",
        ],
        tmp_path,
    )
    assert result.num_trials == 4 and result.num_errors == 0

    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    # One best: the summary, the parent's tags and `qeu-tune best` agree (IQM-over-seeds rule).
    best = best_command(f"sqlite:///{tmp_path / 'mlflow.db'}", result.parent_run_id, out=str(tmp_path / "best"))
    assert result.best["label"] == parent.data.tags["qeu.best_config"] == best.label
    assert parent.data.tags["qeu.best_run_id"] in best.run_ids
    assert parent.data.tags[tags.TAG_KIND] == "sweep"
    assert "qeu-tune" in parent.data.tags["qeu.command"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "config")}
    assert {tags.SWEEP_CONFIG_ARTIFACT, tags.SEARCH_SPEC_ARTIFACT} <= artifacts

    runs = children(client, result)
    assert len(runs) == 4
    combos = {(r.data.params["algo.name"], r.data.params["env.env_config.max_episode_steps"]) for r in runs}
    assert combos == {("ppo", "100"), ("ppo", "200"), ("dqn", "100"), ("dqn", "200")}
    for run_ in runs:
        assert run_.info.status == "FINISHED"
        run_tags = run_.data.tags
        assert run_tags[tags.TAG_ALGO] == run_.data.params["algo.name"]
        assert run_tags[tags.TAG_SEED] == run_.data.params["seed"] == "0"
        # The PPO-only hyperparameter is absent from DQN trials and vice versa.
        assert ("algo.params.num_epochs" in run_.data.params) == (run_tags[tags.TAG_ALGO] == "ppo")
        history = client.get_metric_history(run_.info.run_id, names.ENV_STEPS)
        steps = [m.step for m in history]
        assert len(steps) >= 2 and steps == sorted(steps) and steps[-1] >= 1000
        assert [m.value for m in history] == steps  # the step axis is env steps
        assert client.get_metric_history(run_.info.run_id, names.RETURN_ENV_MEAN)
        assert any(k.startswith(names.LEARNER_PREFIX) for k in run_.data.metrics)
        path = client.download_artifacts(run_.info.run_id, tags.RESOLVED_CONFIG_ARTIFACT, str(tmp_path))
        resolved = yaml.safe_load(open(path))
        assert resolved["algo"]["name"] == run_tags[tags.TAG_ALGO]
        assert resolved["seed"] == 0
        assert resolved["env"]["env_config"]["max_episode_steps"] in (100, 200)


def test_crashed_trial_is_failed_with_its_error_and_the_sweep_goes_on(ray_session, tmp_path):
    result, client = run(
        [
            "debug=smoke",
            "search=grid",
            "experiment=single",
            "++search.space={env.id:'choice(CartPole-v1,qeu_test_envs:CrashingCartPole)'}",
            "stop.env_steps=800",
        ],
        tmp_path,
    )
    assert result.num_trials == 2 and result.num_errors == 1
    statuses = {r.data.params["env.id"]: r for r in children(client, result)}
    assert statuses["CartPole-v1"].info.status == "FINISHED"
    crashed = statuses["qeu_test_envs:CrashingCartPole"]
    assert crashed.info.status == "FAILED"
    assert "injected crash" in crashed.data.tags[tags.TAG_ERROR]
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def test_cli_runs_a_smoke_sweep_on_an_existing_ray_cluster(ray_session, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qeu_tune.commands.main",
            "debug=smoke",
            "cluster=remote",
            f"cluster.address={ray_session.get_runtime_context().gcs_address}",
            f"tracking.uri={uri}",
            f"cluster.storage_path={tmp_path / 'ray'}",
            "search.num_samples=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Best configuration (IQM over 1 seed of final_mean)" in proc.stdout and "Parent run:" in proc.stdout
    assert "single trial with the best last return_env/mean, not the ranking rule" in proc.stdout
    assert "Ranked by IQM over seeds" in proc.stdout  # the end-of-sweep report table
    assert "env_steps" in proc.stdout  # the live progress table
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "qeu-tune"]
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if r.data.tags.get(tags.TAG_KIND) == "trial"]) == 2


@pytest.mark.parametrize(
    "scheduler",
    ["scheduler=asha scheduler.params.grace_period=500", "scheduler=pbt scheduler.params.perturbation_interval=500"],
)
def test_asha_and_pbt_sweeps_finish_with_every_run_closed(ray_session, tmp_path, scheduler):
    result, client = run(["debug=smoke", *scheduler.split(), "search.num_samples=2", "stop.env_steps=2000"], tmp_path)
    assert result.num_trials == 2 and result.num_errors == 0
    runs = children(client, result)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for run_ in runs:
        steps = [m.step for m in client.get_metric_history(run_.info.run_id, names.ENV_STEPS)]
        assert steps and steps == sorted(steps)


def test_reward_design_metrics_reach_mlflow_through_the_real_rllib_path(ray_session, tmp_path):
    result, client = run(
        ["debug=smoke", "experiment=single", "env=qeu_cliff", "reward=cliff_signed", "stop.env_steps=1500"], tmp_path
    )
    assert result.num_trials == 1 and result.num_errors == 0  # no search dimensions: one configuration
    (trial,) = children(client, result)
    metrics = trial.data.metrics
    for key in (
        "rt/route/mean",
        "rt/route/min",
        "rt/route/max",
        "reward/route/sum",
        "reward/env/sum",
        "conv/rt_trend/route",
        names.RETURN_ENV_MEAN,
        names.RETURN_MEAN,
    ):
        assert key in metrics, key
    assert client.get_metric_history(trial.info.run_id, "rt/route/mean")
    # The shaped return is the env's return plus the route feedback (per-episode means).
    assert abs(metrics[names.RETURN_MEAN] - metrics[names.RETURN_ENV_MEAN] - metrics["reward/route/sum"]) < 1e-4 * (
        1 + abs(metrics[names.RETURN_MEAN])
    )
    assert trial.data.params["reward.name"] == "cliff_signed"


def test_greedy_evaluation_is_logged_at_its_iterations_and_ranks_the_sweep(ray_session, tmp_path):
    from qeu_tune.analysis import build_report
    from qeu_tune.analysis.runs import load_sweep

    result, client = run(
        [
            "debug=smoke",
            "experiment=single",
            "env=qeu_cliff",
            "stop.env_steps=2500",
            "evaluation.interval=2",
            "evaluation.episodes=1",
            "search.metric=eval/return_env/mean",
            "convergence.metric=eval/return_env/mean",
            "convergence.last_k=2",
        ],
        tmp_path,
    )
    assert result.num_errors == 0
    (trial,) = children(client, result)
    run_id = trial.info.run_id
    iterations = client.get_metric_history(run_id, names.ITERATION)
    assert [int(m.value) for m in iterations] == [1, 2, 3, 4, 5]  # 500 env steps each
    step_of = {int(m.value): m.step for m in iterations}
    evaluated = client.get_metric_history(run_id, names.EVAL_RETURN_ENV_MEAN)
    # The first iteration, every second one, and the last: never a repeat in between.
    assert sorted(m.step for m in evaluated) == [step_of[i] for i in (1, 2, 4, 5)]
    assert sorted(m.step for m in client.get_metric_history(run_id, "eval/task/route_adherence")) == [
        step_of[i] for i in (1, 2, 4, 5)
    ]
    last_two = [m.value for m in sorted(evaluated, key=lambda m: m.step)][-2:]
    assert trial.data.metrics["conv/final_mean"] == pytest.approx(sum(last_two) / 2)
    assert trial.data.params["convergence.metric"] == names.EVAL_RETURN_ENV_MEAN
    report = build_report(client, load_sweep(client, result.parent_run_id), reps=50)
    assert report.trials["final_mean"].iloc[0] == pytest.approx(sum(last_two) / 2)
    training = build_report(client, load_sweep(client, result.parent_run_id), metric=names.RETURN_ENV_MEAN, reps=50)
    returns = [m.value for m in sorted(client.get_metric_history(run_id, names.RETURN_ENV_MEAN), key=lambda m: m.step)]
    assert training.trials["final_mean"].iloc[0] == pytest.approx(sum(returns[-2:]) / 2)
