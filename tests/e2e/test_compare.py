"""A real 2 configurations x 3 seeds sweep, then report, best and rerun, read back from MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from qeu_tune.analysis.runs import load_config_artifact, load_sweep, metric_history
from qeu_tune.commands.best import best_command
from qeu_tune.commands.report import report_command
from qeu_tune.commands.rerun import rerun_command
from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import names, tags
from qeu_tune.engine.plan import plan_sweep
from qeu_tune.engine.run import run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recorded(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    overrides = [
        "debug=smoke",
        "experiment=single",
        "search=grid",
        "search.num_seeds=3",
        "stop.env_steps=1500",
        "++search.space={algo.params.lr:'choice(0.0003,0.003)'}",
        "sweep_name=lr-compare",
        f"tracking.uri={uri}",
        f"cluster.storage_path={tmp / 'ray'}",
        "verbose=0",
    ]
    result = run_sweep(plan_sweep(to_plain(compose(overrides)), overrides))
    assert result.num_trials == 6 and result.num_errors == 0
    return uri, result, tmp


def test_sweep_end_report_is_on_the_parent_run(recorded):
    uri, result, _ = recorded
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/ranking.csv", "report/ranking.html", "report/learning_curves.png"} <= logged
    parent = client.get_run(result.parent_run_id)
    assert "best_config/final_mean/iqm" in parent.data.metrics
    assert result.report is not None and len(result.report.ranked) == 2
    assert set(result.report.ranked["n_seeds"]) == {3}


def test_report_best_and_rerun_on_fresh_seeds(recorded, capsys):
    uri, result, tmp = recorded
    report = report_command(uri, "lr-compare", out=str(tmp / "report"))
    table = capsys.readouterr().out
    assert "final_mean IQM [95% CI]" in table and "lr=0.0003" in table and "lr=0.003" in table
    assert (tmp / "report" / "learning_curves.png").exists()

    best = best_command(uri, result.parent_run_id, out=str(tmp / "conf" / "experiment"))
    assert best.label == report.ranked.index[0] and best.seeds == [0, 1, 2]
    overrides = [f"hydra.searchpath=[file://{tmp / 'conf'}]", "experiment=best_lr_compare"]
    plan = plan_sweep(to_plain(compose(overrides)), overrides)  # the exported file composes and plans
    assert plan.config["algo"]["params"]["lr"] == best.config["algo"]["params"]["lr"]

    comparison = rerun_command(uri, "lr-compare", seeds=2, overrides=["verbose=0"])
    printed = capsys.readouterr().out
    assert "rerun    final_mean IQM" in printed and "original final_mean IQM" in printed
    assert "The tuning result" in printed
    assert comparison["seeds"] == [3, 4]  # fresh: after the tuning seeds 0..2
    client = MlflowClient(uri)
    rerun = load_sweep(client, comparison["rerun_parent"])
    assert rerun.parent.data.tags["qeu.rerun_of"] == result.parent_run_id
    assert sorted(t.seed for t in rerun.trials) == [3, 4]
    assert {t.params["algo.params.lr"] for t in rerun.trials} == {str(best.config["algo"]["params"]["lr"])}


def test_rerun_of_one_trial_reproduces_it_exactly(recorded):
    uri, result, _ = recorded
    client = MlflowClient(uri)
    original = load_sweep(client, result.parent_run_id).trials[0]
    comparison = rerun_command(uri, original.run_id, overrides=["verbose=0"])
    (copy,) = load_sweep(client, comparison["rerun_parent"]).trials
    assert copy.seed == original.seed
    assert load_config_artifact(client, copy.run_id)["algo"] == load_config_artifact(client, original.run_id)["algo"]
    # Same seed, same config, one CPU process: the same learning curve.
    assert metric_history(client, copy.run_id, names.RETURN_MEAN) == metric_history(
        client, original.run_id, names.RETURN_MEAN
    )
    assert client.get_run(comparison["rerun_parent"]).data.tags["qeu.rerun_of"] == original.run_id
    assert client.get_run(comparison["rerun_parent"]).data.tags[tags.TAG_KIND] == "sweep"
