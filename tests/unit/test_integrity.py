"""``sweep_integrity`` on a hand-made record: what a complete sweep looks like, and each way
one is not (run left RUNNING, missing iteration, repeated step, short history, duplicate run)."""

from __future__ import annotations

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from qeu_tune.analysis import integrity
from qeu_tune.analysis.integrity import sweep_integrity
from qeu_tune.core import names, tags
from qeu_tune.core.errors import ConfigError

STEP, BUDGET = 500, 2000


@pytest.fixture
def client(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def make_sweep(client, trials, *, parent_status="FINISHED", name="sweep-a"):
    """``trials``: {trial id: (env steps in logged order, status or None for left running)}."""
    exp = client.create_experiment(f"exp-{name}")
    parent = client.create_run(exp, tags={tags.TAG_KIND: "sweep", tags.TAG_SWEEP: name}).info.run_id
    for trial_id, (steps, status) in trials.items():
        run = client.create_run(
            exp, tags={tags.TAG_PARENT: parent, tags.TAG_KIND: "trial", tags.TAG_TRIAL_ID: trial_id.split("#")[0]}
        ).info.run_id
        client.log_param(run, "stop.env_steps", str(BUDGET))
        client.log_batch(
            run,
            metrics=[
                m
                for i, s in enumerate(steps)
                for m in (
                    Metric(names.ENV_STEPS, float(s), 1000 + i, s),
                    Metric(names.RETURN_MEAN, 1.0, 1000 + i, s),
                    Metric(names.CONV_PREFIX + "auc", 1.0, 1000 + i, s),
                )
            ],
        )
        if status:
            client.set_terminated(run, status)
    if parent_status:
        client.set_terminated(parent, parent_status)
    return parent


FULL = [500, 1000, 1500, 2000]


def test_a_complete_sweep_has_no_problem(client):
    parent = make_sweep(client, {"t1": (FULL, "FINISHED"), "t2": ([510, 990, 1490, 2010], "FINISHED")})
    report = sweep_integrity(client, "sweep-a", iteration_steps=STEP, tolerance=0.2, check_budget=True)
    assert report.ok, report.describe()
    assert report.parent_run_id == parent and len(report.trials) == 2
    assert {t.trial_id: t.env_steps for t in report.trials}["t1"] == FULL
    assert all(t.budget == BUDGET and t.ended for t in report.trials)
    assert "complete" in report.describe()


def test_each_defect_is_listed_by_kind(client):
    parent = make_sweep(
        client,
        {
            "running": (FULL[:2], None),
            "killed": (FULL, "KILLED"),
            "gap": ([500, 1000, 2000], "FINISHED"),
            "repeat": ([500, 1000, 1000, 1500, 2000], "FINISHED"),
            "back": ([500, 1500, 1000, 2000], "FINISHED"),
            "short": (FULL[:3], "FINISHED"),
            "empty": ([], "FINISHED"),
            "dup#1": (FULL, "FINISHED"),
            "dup#2": (FULL, "FINISHED"),
        },
        parent_status=None,
    )
    report = sweep_integrity(client, parent, iteration_steps=STEP, tolerance=0.2, check_budget=True)
    kinds = {}
    for problem in report.problems:
        kinds.setdefault(problem.kind, set()).add(problem.trial_id)
    assert kinds[integrity.PARENT_NOT_FINISHED] == {None}
    assert kinds[integrity.RUNNING] == {"running"}
    assert kinds[integrity.NOT_FINISHED] == {"killed"}
    assert kinds[integrity.GAP] == {"gap"}
    assert kinds[integrity.REPEATED_STEP] == {"repeat"}  # env steps and return/mean; conv/* is left alone
    assert {p.metric for p in report.of_kind(integrity.REPEATED_STEP)} == {names.ENV_STEPS, names.RETURN_MEAN}
    assert kinds[integrity.WENT_BACK] == {"back"}
    assert kinds[integrity.SHORT] == {"short", "running"}
    assert kinds[integrity.NO_STEPS] == {"empty"}
    assert kinds[integrity.DUPLICATE_RUN] == {"dup"}
    assert set(kinds) <= set(integrity.PROBLEM_KINDS)
    assert not report.ok and "2000" in str(report.of_kind(integrity.GAP)[0])


def test_default_iteration_size_is_the_median_increment_and_budget_is_optional(client):
    make_sweep(client, {"t1": ([100, 200, 300, 500], "FINISHED"), "t2": ([100, 200], "FINISHED")})
    report = sweep_integrity(client, "sweep-a")
    assert [p.kind for p in report.problems] == [integrity.GAP], report.describe()  # 300 -> 500


def test_a_trial_run_is_not_a_sweep(client):
    make_sweep(client, {"t1": (FULL, "FINISHED")})
    ids = [e.experiment_id for e in client.search_experiments()]
    (trial,) = client.search_runs(ids, filter_string=f"tags.`{tags.TAG_KIND}` = 'trial'")
    with pytest.raises(ConfigError, match="not a sweep"):
        sweep_integrity(client, trial.info.run_id)
