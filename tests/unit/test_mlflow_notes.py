"""What the MLflow UI shows: experiments tagged as model training, sweep and study summaries as run notes."""

from __future__ import annotations

import numpy as np
import pytest
from fake_sweep import record_sweep
from mlflow.tracking import MlflowClient

from qeu_tune.analysis import notes, report_sweep_end
from qeu_tune.analysis.study_report import format_summary
from qeu_tune.core import tags
from qeu_tune.tracking import tracker as tracking
from qeu_tune.tracking.sync import sync_spool

CONFIGS = {"good": {"algo.params.lr": 0.002}, "bad": {"algo.params.lr": 0.0005}}


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def kind(client, name="qeu-tune"):
    return client.get_experiment_by_name(name).tags.get(tags.TAG_EXPERIMENT_KIND)


def test_every_experiment_qeu_tune_writes_to_is_a_model_training_experiment(uri, tmp_path):
    client = MlflowClient(uri)
    tracking.Tracker(tracking_uri=uri, experiment="qeu-tune").close(timeout_s=5)  # created by a sweep
    assert kind(client) == "custom_model_development"
    client.create_experiment("by-hand")  # created before, elsewhere: MLflow 3's UI would open it as GenAI
    assert kind(client, "by-hand") is None
    tracking.Tracker(tracking_uri=uri, experiment="by-hand").close(timeout_s=5)
    assert kind(client, "by-hand") == "custom_model_development"
    offline = tracking.Tracker(tracking_uri=uri, experiment="synced-later", mode="offline")
    offline.create_run(run_name="r", tags={})
    offline.close(timeout_s=1)
    assert sync_spool(offline.spool_dir, uri)["errors"] == 0  # `qeu-tune sync` creates it
    assert kind(client, "synced-later") == "custom_model_development"


def test_the_end_of_sweep_report_is_the_parent_runs_note(uri, monkeypatch):
    rec = record_sweep(uri, CONFIGS, lambda v, seed, steps: np.minimum(v["algo.params.lr"] * 1e5, steps / 100) - seed)
    report = report_sweep_end(uri, rec.parent_run_id)  # what every sweep calls at its end
    run = MlflowClient(uri).get_run(rec.parent_run_id)
    note = run.data.tags[tags.TAG_NOTE]
    lines = note.splitlines()
    assert lines[0] == "## Sweep fake-sweep"
    assert "**Best configuration:** `lr=0.002`" in note and "`algo.params.lr=0.002`" in note
    assert run.data.tags[tags.TAG_BEST_CONFIG] == "lr=0.002"  # the same winner as the tag
    header = next(i for i, line in enumerate(lines) if line.startswith("| rank | config | seeds |"))
    assert lines[header + 1].startswith("|---|")
    assert lines[header + 2].startswith("| 1 | lr=0.002 | 3 |") and lines[header + 3].startswith(
        "| 2 | lr=0.0005 | 3 |"
    )
    assert f"{run.info.artifact_uri}/report" in note and "`ranking.html`" in note and "`learning_curves.png`" in note
    assert f"qeu-tune report {rec.parent_run_id}" in note
    # A ranking too long for MLflow's tag limit loses rows, not its Markdown.
    args = {"report_dir": "report", "artifact_uri": run.info.artifact_uri, "files": ["ranking.html"]}
    full = notes.sweep_note(report, **args)
    monkeypatch.setattr(notes, "NOTE_LIMIT", len(full) - 10)
    short = notes.sweep_note(report, **args)
    assert len(short) <= len(full) - 10 and "| 1 | lr=0.002 |" in short and "| 2 | lr=0.0005" not in short
    assert "1 more configuration: see `report/ranking.html`." in short and short.endswith("`.")


def design(iqm, p, verdict):
    seeds = [1000, 1001, 1002]
    return {
        "overrides": [],
        "config": {},
        "tune_seeds": [0, 1],
        "test_seeds": seeds,
        "tune_sweep": "t",
        "test_sweep": "s",
        "test": [{"seed": s, "final_return": iqm, "steps_to_threshold": None, "reached": False} for s in seeds],
        "iqm": iqm,
        "ci": [iqm - 5, iqm + 5],
        "reached_fraction": 0.0,
        "steps_iqm": 20000.0,
        "steps_ci": [20000.0, 20000.0],
        "p_improvement": p,
        "p_ci": None if p is None else [p - 0.1, 1.0],
        "verdict": verdict,
        "seeds_needed": None,
    }


def test_a_study_runs_note_is_its_verdict_table(uri):
    summary = {
        "study": "demo",
        "baseline": "none",
        "min_effect": 50.0,
        "confidence": 0.95,
        "designs": {"none": design(100.0, None, ""), "rt": design(300.0, 0.95, "better")},
    }
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("studies")).info.run_id
    notes.log_note(client, run, notes.study_note(summary, run_id=run))  # as engine.study.continue_study does
    note = client.get_run(run).data.tags[tags.TAG_NOTE]
    assert note.startswith("## Study demo\n\n```text\n")
    assert f"```text\n{format_summary(summary)}\n```" in note  # the table as printed, in a code block
    assert "better" in note and f"qeu-tune report {run}" in note


def test_markdown_table_escapes_pipes():
    assert notes.markdown_table([{"a|b": "x|y"}]).splitlines() == ["| a\\|b |", "|---|", "| x\\|y |"]
