"""Reports, best configuration and safe read-back, on sweeps recorded through the real callback."""

from __future__ import annotations

import numpy as np
import pytest
from fake_sweep import record_sweep
from mlflow.tracking import MlflowClient

from qeu_tune import analysis
from qeu_tune.analysis.runs import load_config_artifact, load_sweep, safe_load_yaml
from qeu_tune.commands.best import best_command
from qeu_tune.commands.report import report_command
from qeu_tune.commands.rerun import _validated, fresh_seeds
from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import tags
from qeu_tune.core.errors import ConfigError

CONFIGS = {"good": {"algo.params.lr": 0.002}, "bad": {"algo.params.lr": 0.0005}}


def curve(values, seed, steps):
    # "good" reaches CartPole's threshold (475) by 5k steps; "bad" plateaus at 250.
    top = 500.0 if values["algo.params.lr"] > 0.001 else 250.0
    return np.minimum(top, steps / 5000 * top) - seed


@pytest.fixture
def sweep(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = record_sweep(uri, CONFIGS, curve)
    return uri, rec


def test_report_ranks_configurations_with_cis_and_probability_of_improvement(sweep):
    uri, rec = sweep
    client = MlflowClient(uri)
    report = analysis.build_report(client, load_sweep(client, rec.parent_run_id), baseline="lr=0.0005", reps=300)
    assert list(report.ranked.index) == ["lr=0.002", "lr=0.0005"]
    best = report.ranked.iloc[0]
    assert best["n_seeds"] == 3
    assert best["final_mean/iqm_lo"] <= best["final_mean/iqm"] <= best["final_mean/iqm_hi"]
    assert best["reached/mean"] == 1.0 and report.ranked.iloc[1]["reached/mean"] == 0.0
    assert best["poi"] == 1.0  # every good seed beats every bad seed
    # Hand-computed: good seed 0 reaches 500 at 5k; MA(5) >= 475 from the 5k point on
    # (MA at 5k = mean(100..500) = 300 < 475; at 7k = mean(300,400,500,500,500) = 440; at 8k = 480).
    good0 = report.trials[(report.trials["config"] == "lr=0.002") & (report.trials["seed"] == 0)].iloc[0]
    assert good0["steps_to_threshold"] == 8000.0
    assert report.trials["rt_trend/route"].lt(0).all()  # the RT metric falls over training


def test_report_command_prints_writes_and_logs_to_the_parent(sweep, tmp_path, capsys):
    uri, rec = sweep
    report_command(uri, "fake-sweep", out=str(tmp_path / "rep"), log=True)
    printed = capsys.readouterr().out
    assert "lr=0.002" in printed.splitlines()[3] and "[" in printed  # ranked first, with CIs
    for name in (
        "ranking.csv",
        "ranking.html",
        "trials.csv",
        "learning_curves.png",
        "weight_vs_performance.png",
        "rt_metrics.png",
    ):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    logged = {a.path for a in MlflowClient(uri).list_artifacts(rec.parent_run_id, "report")}
    assert "report/ranking.html" in logged and "report/learning_curves.png" in logged


def test_best_writes_an_experiment_file_that_composes_and_reruns_on_fresh_seeds(sweep, tmp_path, capsys):
    uri, rec = sweep
    best = best_command(uri, rec.parent_run_id, out=str(tmp_path / "conf" / "experiment"))
    assert best.label == "lr=0.002" and best.seeds == [0, 1, 2]
    assert "algo.params.lr=0.002" in capsys.readouterr().out
    cfg = to_plain(compose([f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=best_fake_sweep"]))
    assert cfg["algo"]["params"]["lr"] == 0.002
    assert cfg["search"]["space"] == {} and cfg["search"]["num_seeds"] == 3
    assert cfg["search"]["seed"] == 3  # after the tuning seeds 0, 1, 2


def test_tampered_config_artifact_with_a_python_tag_is_refused(sweep):
    uri, rec = sweep
    client = MlflowClient(uri)
    run_id = load_sweep(client, rec.parent_run_id).trials[0].run_id
    client.log_text(run_id, "algo: !!python/object/apply:os.system ['echo pwned']\n", tags.RESOLVED_CONFIG_ARTIFACT)
    with pytest.raises(ConfigError, match="refusing to load .* non-plain YAML tag"):
        load_config_artifact(client, run_id)


def test_safe_load_accepts_plain_data_only():
    assert safe_load_yaml("a: [1, 2]\n", "x") == {"a": [1, 2]}
    with pytest.raises(ConfigError, match="refusing"):
        safe_load_yaml("!!python/name:os.system", "x")


def test_unknown_sweep_lists_recent_sweeps(sweep):
    uri, rec = sweep
    with pytest.raises(ConfigError, match="recent sweeps: .*fake-sweep"):
        load_sweep(MlflowClient(uri), "no-such-sweep")


def test_fresh_seeds_follow_every_tuning_seed():
    assert fresh_seeds([0, 1, 2], 3) == [3, 4, 5]
    assert fresh_seeds([7, 2], 1) == [8]
    assert fresh_seeds([], 2) == [0, 1]


def test_schema_rejects_a_stale_or_tampered_config():
    config = to_plain(compose([]))
    config["stop"]["env_steps"] = "lots"
    with pytest.raises(ConfigError, match="does not match the schema"):
        _validated(config)
