"""MLflow tracking through the real callback, driven by simulated trials (no Ray)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from fake_sweep import make_template, record_sweep
from mlflow.tracking import MlflowClient

from qeu_tune.core import names, tags
from qeu_tune.core.paths import artifact_location_for
from qeu_tune.engine.callback import MLflowTrialCallback
from qeu_tune.tracking import tracker as tracking


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def ramp(values, seed, steps):
    return np.linspace(0, 500 * values["algo.params.lr"] * 1000, steps.size) + seed


def test_children_are_nested_with_params_tags_config_and_env_step_metrics(uri, tmp_path):
    rec = record_sweep(uri, {"a": {"algo.params.lr": 0.001}}, ramp, seeds=(0, 1))
    client = MlflowClient(uri)
    children = client.search_runs([rec.tracker.experiment_id], f"tags.`{tags.TAG_PARENT}` = '{rec.parent_run_id}'")
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.params["algo.params.lr"] == "0.001"
        assert run.data.tags[tags.TAG_SEED] == run.data.params["seed"]
        history = client.get_metric_history(run.info.run_id, names.RETURN_ENV_MEAN)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1000, 10001, 1000))
        # Convergence statistics are logged live, on the same step axis.
        conv = client.get_metric_history(run.info.run_id, "conv/final_mean")
        assert len(conv) == 10
        path = client.download_artifacts(run.info.run_id, tags.RESOLVED_CONFIG_ARTIFACT, str(tmp_path))
        config = yaml.safe_load(open(path))
        assert config["algo"]["params"]["lr"] == 0.001 and config["seed"] == int(run.data.params["seed"])


def test_the_callbacks_own_time_per_result_is_logged_on_the_parent_run(uri):
    rec = record_sweep(uri, {"a": {"algo.params.lr": 0.001}}, ramp, seeds=(0, 1))
    rec.callback.on_experiment_end([])
    assert rec.tracker.flush(timeout_s=60)
    metrics = MlflowClient(uri).get_run(rec.parent_run_id).data.metrics
    assert metrics[names.DRIVER_RESULTS] == 20  # 2 trials x 10 results
    p50, p99, top = (
        metrics[k] for k in (names.DRIVER_CALLBACK_MS_P50, names.DRIVER_CALLBACK_MS_P99, names.DRIVER_CALLBACK_MS_MAX)
    )
    assert 0 < p50 <= p99 <= top < 10_000
    # Timings describe one driver process: Tuner.restore's pickle does not carry them.
    assert len(rec.callback.__getstate__()["result_s"]) == 0


class _MetricsTracker:
    """Keeps the metric points a callback logs; every other tracker call is taken and dropped."""

    def __init__(self):
        self.points = []

    def create_run(self, **kwargs):
        return "run-1"

    def log_metrics(self, run_id, metrics):
        self.points += metrics

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("end", ["complete", "interrupted"])
def test_live_convergence_statistics_are_thinned_in_time_and_exact_at_the_trials_end(end):
    tracker = _MetricsTracker()
    callback = MLflowTrialCallback(
        tracker=tracker,
        parent_run_id=None,
        template=make_template(),
        sweep_name="s",
        flush_every_s=0.0,
        conv_every_s=3600.0,
    )
    trial = SimpleNamespace(trial_id="t1", config={"seed": 0}, error_file=None)
    callback.on_trial_start(0, [], trial)
    steps = np.arange(1000, 10001, 1000)
    returns = ramp({"algo.params.lr": 0.001}, 0, steps)
    for i, (step, value) in enumerate(zip(steps, returns)):
        result = {names.ENV_STEPS: float(step), names.RETURN_ENV_MEAN: float(value), names.ITERATION: float(i + 1)}
        callback.on_trial_result(0, [], trial, result)
    if end == "complete":
        callback.on_trial_complete(0, [], trial)
    else:
        callback.close_open_runs()
    conv = [m for m in tracker.points if m.key == "conv/final_mean"]
    assert [m.step for m in conv] == [1000, 10000]  # the first result and the trial's last one
    assert conv[-1].value == pytest.approx(np.mean(returns[-5:]))  # the last 5 points (convergence.last_k)
    assert len([m for m in tracker.points if m.key == names.RETURN_ENV_MEAN]) == 10  # curves: every result


def test_a_finished_trials_record_keeps_only_its_last_values_in_tunes_snapshots(uri):
    rec = record_sweep(uri, {"a": {"algo.params.lr": 0.001}}, ramp, seeds=(0,), fail=())
    (state,) = rec.callback.get_state()["records"].values()
    assert state["status"] == "FINISHED" and len(state["history"]) == 1
    assert state["history"][0][names.RETURN_ENV_MEAN] == pytest.approx(
        ramp({"algo.params.lr": 0.001}, 0, np.arange(10))[-1]
    )


def test_failed_trial_is_failed_with_error_and_open_runs_end_killed(uri, tmp_path):
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback ...\nRuntimeError: boom")
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")
    callback = MLflowTrialCallback(tracker=tracker, parent_run_id=None, template=make_template(), sweep_name="s")
    crashed = SimpleNamespace(trial_id="t1", config={"seed": 0}, error_file=str(error_file))
    running = SimpleNamespace(trial_id="t2", config={"seed": 1}, error_file=None)
    for trial in (crashed, running):
        callback.on_trial_start(0, [], trial)
    callback.on_trial_error(0, [], crashed)
    callback.on_experiment_end([])  # e.g. Ctrl-C: the sweep ends with a trial still running
    assert tracker.close(timeout_s=30)
    client = MlflowClient(uri)
    runs = {r.data.tags[tags.TAG_TRIAL_ID]: r for r in client.search_runs([tracker.experiment_id])}
    assert runs["t1"].info.status == "FAILED"
    assert "RuntimeError: boom" in runs["t1"].data.tags[tags.TAG_ERROR]
    assert runs["t2"].info.status == "KILLED"


def test_tracker_errors_become_one_warning_never_raise_and_are_kept(uri, monkeypatch, caplog):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", writer="thread")  # its client is replaced
    callback = MLflowTrialCallback(
        tracker=tracker, parent_run_id=None, template=make_template(), sweep_name="s", flush_every_s=0.0
    )
    trial = SimpleNamespace(trial_id="t1", config={"seed": 0}, error_file=None)
    callback.on_trial_start(0, [], trial)
    assert tracker.flush(timeout_s=30)

    def down(*args, **kwargs):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(tracker.client, "log_batch", down)
    monkeypatch.setattr(tracker.client, "set_terminated", down)
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            callback.on_trial_result(0, [], trial, {names.ENV_STEPS: 100.0 * step, names.RETURN_ENV_MEAN: 1.0})
        callback.on_trial_complete(0, [], trial)
        assert not tracker.flush(timeout_s=1.5)  # retried with backoff, never dropped
    warnings = [r for r in caplog.records if "log_metrics" in r.getMessage()]
    assert len(warnings) == 1 and "training continues" in warnings[0].getMessage()
    assert tracker.pending_count() >= 4  # 3 metric batches and the end of the run, kept
    assert not tracker.close(timeout_s=0.1) and tracker.spool_dir.exists()


def test_params_are_flat_and_length_safe():
    flat = tracking.flatten_params({"a": {"b": 1, "c": [1, 2], "d": {}}, "long": "x" * 10_000})
    assert flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and flat["a.d"] == "{}"
    assert len(flat["long"]) == tracking.MAX_PARAM_VALUE and flat["long"].endswith("[truncated]")


def test_sqlite_artifacts_live_next_to_the_database(tmp_path):
    location = artifact_location_for(f"sqlite:///{tmp_path}/x/mlflow.db")
    assert location == (tmp_path / "x" / "mlartifacts").as_uri()
    assert artifact_location_for("http://127.0.0.1:5000") is None


def test_child_runs_reads_every_page_of_a_large_sweep():
    from qeu_tune.analysis.runs import child_runs

    class PagedList(list):
        def __init__(self, items, token):
            super().__init__(items)
            self.token = token

    pages = {None: PagedList(["a", "b"], "p2"), "p2": PagedList(["c"], "p3"), "p3": PagedList([], None)}
    calls = []

    class Client:
        def search_runs(self, experiments, filter_string, max_results, page_token=None):
            calls.append((experiments, filter_string, page_token))
            return pages[page_token]

    assert list(child_runs(Client(), "7", "parent")) == ["a", "b", "c"]
    assert [c[2] for c in calls] == [None, "p2", "p3"]
    assert all(c[0] == ["7"] and "'parent'" in c[1] for c in calls)


def test_a_sweep_that_loses_the_race_to_create_or_tag_the_experiment_reads_it_back(uri):
    # Sweeps started together: another one creates the experiment, or tags it, between this
    # sweep's read and its write (on PostgreSQL the loser's write breaks a unique key).
    from mlflow.exceptions import MlflowException

    from qeu_tune.tracking import store

    rival = MlflowClient(uri)

    class LosesTheRace(MlflowClient):
        def create_experiment(self, name, **kwargs):
            rival.create_experiment(name, tags=kwargs.get("tags"))
            raise MlflowException("RESOURCE_ALREADY_EXISTS")

        def set_experiment_tag(self, experiment_id, key, value):
            rival.set_experiment_tag(experiment_id, key, value)
            raise MlflowException("BAD_REQUEST: duplicate key value violates unique constraint")

    loser = LosesTheRace(uri)
    created = store.ensure_experiment(loser, "raced", uri)
    assert created == rival.get_experiment_by_name("raced").experiment_id
    untagged = rival.create_experiment("untagged")
    assert store.ensure_experiment(loser, "untagged", uri) == untagged
    assert rival.get_experiment(untagged).tags[tags.TAG_EXPERIMENT_KIND] == tags.EXPERIMENT_KIND_TRAINING

    class Broken(MlflowClient):  # a failure that is not a race still surfaces
        def set_experiment_tag(self, experiment_id, key, value):
            raise MlflowException("permission denied")

    rival.create_experiment("untagged-too")
    with pytest.raises(MlflowException, match="permission denied"):
        store.ensure_experiment(Broken(uri), "untagged-too", uri)


def test_a_trials_config_yaml_is_the_text_yaml_safe_dump_writes():
    # The tracker dumps each trial's config with libyaml's emitter: byte for byte the same text.
    configs = [make_template([]).base, make_template(["experiment=single", "algo=synthetic"]).base]
    tricky = {
        "unicode": "Wegpunkt Ü → 目標",
        "long": "word " * 40,
        "floats": [0.1, 1e-300, float("inf"), float("-inf"), -0.0, 3.0],
        "strings_like_values": ["yes", "null", "1e3", "0x10", "", " padded ", "a: b", "#x", "multi\nline"],
        "nested": {"empty_list": [], "empty_map": {}, "none": None, "flag": True, 7: "int key"},
    }
    for data in [*configs, tricky]:
        assert tracking.yaml_text(data) == yaml.safe_dump(data, sort_keys=False)
