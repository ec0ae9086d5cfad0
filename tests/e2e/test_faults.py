"""Trial faults and PBT through real Ray Tune + RLlib + MLflow: retried trials continue their
run without repeated steps, a trial past its retry limit ends FAILED, PBT's perturbations are
recorded and really used."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import names, tags
from qeu_tune.engine.plan import plan_sweep
from qeu_tune.engine.run import run_sweep

pytestmark = pytest.mark.slow


def run(overrides, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [*overrides, f"tracking.uri={uri}", f"cluster.storage_path={tmp_path / 'ray'}", "verbose=0"]
    result = run_sweep(plan_sweep(to_plain(compose(overrides)), overrides))
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(
        [result.experiment_id], filter_string=f"tags.`{tags.TAG_PARENT}` = '{result.parent_run_id}'"
    )
    return result, client, runs


def steps_of(client, run_id, key=names.ENV_STEPS):
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_injected_env_fault_is_retried_from_checkpoint_and_a_persistent_one_fails(ray_session, tmp_path):
    # Smoke PPO samples 500 env steps an iteration. at_step=1700: the first attempt reports
    # 500, 1000 (checkpoint), 1500, then crashes; the retry restores 1000 and repeats 1500
    # (not logged again) before finishing at 2500. at_step=300 crashes every attempt.
    result, client, runs = run(
        [
            "debug=smoke",
            "experiment=single",
            "search=grid",
            "++search.space={env.fault.at_step:'choice(300,1700)'}",
            "env.fault.retries_too=true",
            "checkpoint_every=2",
            "max_failures=1",
            "stop.env_steps=2500",
            "algo.num_envs_per_env_runner=1",
        ],  # one env instance: its step count is the trial's
        tmp_path,
    )
    assert result.num_trials == 2 and result.num_errors == 1 and result.status == "FINISHED"
    by_fault = {r.data.params["env.fault.at_step"]: r for r in runs}
    retried, failed = by_fault["1700"], by_fault["300"]
    assert retried.info.status == "FINISHED"
    assert retried.data.tags[tags.TAG_RETRIES] == "1"
    assert "injected environment fault" in retried.data.tags[f"{tags.TAG_ERROR}.attempt1"]
    assert steps_of(client, retried.info.run_id) == [500, 1000, 1500, 2000, 2500]
    for key in (names.RETURN_ENV_MEAN, names.ENV_STEPS_PER_S):
        steps = steps_of(client, retried.info.run_id, key)
        assert len(steps) == len(set(steps)), key  # no repeated (metric, step) point
    assert failed.info.status == "FAILED"
    assert "injected environment fault at step 300" in failed.data.tags[tags.TAG_ERROR]


def test_pbt_perturbations_are_recorded_and_the_optimizer_uses_the_new_learning_rate(ray_session, tmp_path):
    # Synchronous PBT: both trials meet at every perturbation point, so the worse one is
    # perturbed there. Asynchronously, a trial reaching a point first has no partner yet,
    # and whether any perturbation happens in 4000 steps depends on the machine's load.
    result, client, runs = run(
        [
            "debug=smoke",
            "scheduler=pbt",
            "search=grid",
            "++search.space={algo.params.lr:'choice(0.0001,0.01)'}",
            "scheduler.params.perturbation_interval=1000",
            "scheduler.params.quantile_fraction=0.5",
            "scheduler.params.resample_probability=0",
            "scheduler.params.synch=true",
            "stop.env_steps=4000",
        ],
        tmp_path,
    )
    assert result.num_trials == 2 and result.num_errors == 0
    perturbed = [r for r in runs if int(r.data.tags.get(tags.TAG_PERTURBATIONS, "0")) > 0]
    assert perturbed, "PBT made no perturbation in 4000 env steps"
    checked = 0
    for run_ in perturbed:
        lr_set = {m.step: m.value for m in client.get_metric_history(run_.info.run_id, "hparam/algo.params.lr")}
        assert len(set(lr_set.values())) > 1  # the recorded value changed mid-trial
        used = {
            m.step: m.value
            for m in client.get_metric_history(run_.info.run_id, "learner/default_optimizer_learning_rate")
        }
        for step, value in lr_set.items():
            if step in used:  # the learner's reported lr is the one PBT set for that step
                assert used[step] == pytest.approx(value, rel=1e-6), (step, used[step], value)
                checked += 1
        assert any(
            "algo.params.lr" in v for k, v in run_.data.tags.items() if k.startswith(tags.TAG_PERTURBATIONS + ".")
        )
    assert checked >= 2
