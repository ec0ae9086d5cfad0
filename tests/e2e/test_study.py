"""`qeu-tune study` end to end on the synthetic learner: stages, records, verdicts, report, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from qeu_tune.analysis.study_report import format_summary, load_summary
from qeu_tune.commands.argv import prepare_argv
from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import tags
from qeu_tune.engine import study_plan
from qeu_tune.engine.study import plan_study, resume_study, run_study

pytestmark = pytest.mark.slow

# A positive control on the synthetic learner: "fast" adds weight 20 x design_effect 1 to the rate
# of the curve (qeu_tune/engine/synthetic.py), so it ends near the ceiling while the baseline
# (base rate 0.5) is still far below it.
OVERRIDES = [
    "experiment=single",
    "algo=synthetic",
    "algo.params.base_rate=0.5",
    "stop.env_steps=20000",
    "algo.params.lr=tag(log,interval(3e-4,3e-3))",
    'study.designs.none=["reward=none"]',
    'study.designs.fast=["reward=cartpole_rt","reward.metrics.balance.weight=20.0"]',
    "study.baseline=none",
    "study.tune.num_samples=3",
    "study.test.seeds=5",
    "study.min_effect=25",
    "verbose=0",
]


def _plan(uri):
    overrides = prepare_argv([*OVERRIDES, f"tracking.uri={uri}"]).argv
    return plan_study(to_plain(compose(overrides)), overrides)


def _sweeps(client, study_id):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=f"tags.`{tags.TAG_PARENT}` = '{study_id}'"
    )
    return {(r.data.tags[tags.TAG_STAGE], r.data.tags[tags.TAG_DESIGN]): r for r in runs}


def _trial_seeds(client, sweep_id):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=f"tags.`{tags.TAG_PARENT}` = '{sweep_id}'"
    )
    return sorted(int(r.data.tags[tags.TAG_SEED]) for r in runs)


def test_study_tunes_tests_on_held_out_seeds_and_finds_the_positive_control(ray_session, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(_plan(uri), command="pytest")
    assert result.status == "FINISHED", result
    summary = result.summary
    assert set(summary) >= {"study", "baseline", "designs"} and summary["baseline"] == "none"
    fast, none = summary["designs"]["fast"], summary["designs"]["none"]
    assert fast["verdict"] == "better" and fast["p_ci"][0] > 0.5, fast
    assert none["p_improvement"] is None and none["verdict"] is None
    for design in (fast, none):
        assert set(design) >= {
            "overrides",
            "config",
            "tune_seeds",
            "test_seeds",
            "test",
            "iqm",
            "ci",
            "p_improvement",
            "p_ci",
            "verdict",
            "seeds_needed",
        }
        assert [t["seed"] for t in design["test"]] == design["test_seeds"] == [1000, 1001, 1002, 1003, 1004]
        assert all((t["steps_to_threshold"] is None) != t["reached"] for t in design["test"])

    client = MlflowClient(uri)
    study_run = client.get_run(result.study_run_id)
    assert study_run.info.status == "FINISHED" and study_run.data.tags[tags.TAG_KIND] == "study"
    assert load_summary(client, result.study_run_id) == json.loads(json.dumps(summary))
    assert f"```text\n{format_summary(summary)}\n```" in study_run.data.tags[tags.TAG_NOTE]  # its MLflow description
    assert all(tags.TAG_NOTE in r.data.tags for r in _sweeps(client, result.study_run_id).values())  # each sweep's
    sweeps = _sweeps(client, result.study_run_id)
    assert set(sweeps) == {(s, d) for s in ("tune", "test") for d in ("none", "fast")}
    assert all(r.info.status == "FINISHED" and r.data.tags[tags.TAG_KIND] == "sweep" for r in sweeps.values())
    tune_seeds = {d: _trial_seeds(client, sweeps[("tune", d)].info.run_id) for d in ("none", "fast")}
    assert tune_seeds["none"] == tune_seeds["fast"] == [0, 0, 0]  # the same budget: 3 configurations x 1 seed
    for d in ("none", "fast"):
        assert not set(tune_seeds[d]) & set(_trial_seeds(client, sweeps[("test", d)].info.run_id))

    printed = subprocess.run(
        [sys.executable, "-m", "qeu_tune.commands.main", "--tracking-uri", uri, "report", result.study_run_id],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert printed.returncode == 0, printed.stderr
    assert "better" in printed.stdout and "(baseline)" in printed.stdout

    # Resume where it stopped: the study was cut short after its last test sweep vanished.
    lost = sweeps[("test", "fast")].info.run_id
    client.delete_run(lost)
    client.set_terminated(result.study_run_id, "KILLED")

    def no_composing(*args, **kwargs):  # the designs come from the study's recorded state
        raise AssertionError("a resumed study composed its designs from today's config directories")

    monkeypatch.setattr(study_plan, "compose", no_composing)
    resumed = resume_study(uri, result.study_run_id)
    assert resumed.status == "FINISHED" and resumed.summary["designs"]["fast"]["verdict"] == "better"
    after = _sweeps(client, result.study_run_id)
    kept = [k for k in sweeps if k != ("test", "fast")]
    assert all(after[k].info.run_id == sweeps[k].info.run_id for k in kept)  # finished sweeps are reused
    assert after[("test", "fast")].info.run_id != lost
