"""Reports, best configuration and safe read-back, on sweeps recorded through the real callback."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fake_sweep import record_sweep
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient

from qeu_tune import analysis
from qeu_tune.analysis import runs
from qeu_tune.analysis.plots import plotted_configurations
from qeu_tune.analysis.runs import load_config_artifact, load_sweep, safe_load_yaml
from qeu_tune.commands.best import best_command
from qeu_tune.commands.report import report_command
from qeu_tune.commands.rerun import _validated, fresh_seeds
from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import names, tags
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


# ------------------------------------------------------------------ reading many histories


def test_bulk_history_reader_pages_and_matches_one_request_per_run(sweep):
    uri, rec = sweep
    client = MlflowClient(uri)
    ids = [t.run_id for t in load_sweep(client, rec.parent_run_id).trials]
    # A restored trial: steps 6k-10k logged again later, with other values (latest attempt wins).
    restored = [Metric(names.RETURN_ENV_MEAN, -float(s), 2**41 + s, s) for s in range(6000, 10001, 1000)]
    client.log_batch(ids[0], metrics=restored)
    keys = [names.RETURN_ENV_MEAN, "rt/route/mean", "no/such/metric"]
    one_by_one = {(r, k): runs.metric_history(client, r, k) for r in ids for k in keys}
    assert one_by_one[(ids[0], names.RETURN_ENV_MEAN)][1][-5:] == [-6000.0, -7000.0, -8000.0, -9000.0, -10000.0]
    assert runs.metric_histories(client, [(r, k) for r in ids for k in keys]) == one_by_one

    store = client._tracking_client.store
    requests = []

    def read(run_ids, points):
        requests.append(list(run_ids))
        return store.get_metric_history_bulk(run_ids=run_ids, metric_key=names.RETURN_ENV_MEAN, max_results=points)

    # Pages smaller than one run's history (15 points for the restored run, 10 for the others),
    # a page holding two runs and a cut one, and one page for everything.
    for per_request, points in [(2, 7), (4, 25), (6, 10_000)]:
        requests.clear()
        found = runs._bulk_points(client, read, ids, names.RETURN_ENV_MEAN, per_request, points)
        curves = {r: runs._latest_curve(found.get(r, [])) for r in ids}
        assert curves == {r: one_by_one[(r, names.RETURN_ENV_MEAN)] for r in ids}
        assert requests and all(len(page) <= per_request for page in requests)


def test_histories_without_a_bulk_read_are_read_one_run_at_a_time(sweep):
    uri, rec = sweep
    client = MlflowClient(uri)
    ids = [t.run_id for t in load_sweep(client, rec.parent_run_id).trials]
    per_run_only = SimpleNamespace(get_metric_history=client.get_metric_history)  # e.g. MLflow's file store
    wanted = [(r, k) for r in ids for k in (names.RETURN_ENV_MEAN, "rt/route/mean")]
    assert runs.metric_histories(per_run_only, wanted) == runs.metric_histories(client, wanted)


class _FakeServer:
    """``mlflow server``'s ``get-history-bulk``: up to ``max_results`` points, ordered by run."""

    def __init__(self, points, available=True):
        self.points, self.available, self.requests = points, available, []

    def __call__(self, host_creds, endpoint, method, params):
        assert (endpoint, method) == (runs.SERVER_BULK_ENDPOINT, "GET")
        if not self.available:
            raise MlflowException("ENDPOINT_NOT_FOUND")
        self.requests.append(params["run_id"])
        rows = [
            {"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step, "run_id": run_id}
            for run_id in sorted(params["run_id"])
            for m in self.points.get(run_id, [])
        ]
        return SimpleNamespace(json=lambda: {"metrics": rows[: params["max_results"]]})


def test_server_bulk_reader_asks_100_runs_at_a_time_and_reads_on_after_a_cut(monkeypatch):
    key = names.RETURN_ENV_MEAN
    points = {f"run{i:03d}": [Metric(key, float(i + s), 1000 + s, s) for s in range(30)] for i in range(250)}
    points["run007"] = [Metric(key, float(s), 1000 + s, s) for s in range(70)]  # more than a page
    reread = []

    def get_metric_history(run_id, metric_key):
        reread.append(run_id)
        return points.get(run_id, [])

    server = _FakeServer(points)
    monkeypatch.setattr("mlflow.utils.rest_utils.http_request_safe", server)
    monkeypatch.setattr(runs, "SERVER_BULK_POINTS", 64)  # two runs and a cut one a page
    store = RestStore(lambda: None)
    client = SimpleNamespace(_tracking_client=SimpleNamespace(store=store), get_metric_history=get_metric_history)
    wanted = [(run_id, key) for run_id in [*points, "run-without-points"]]
    expected = {(r, key): runs._latest_curve(points.get(r, [])) for r, _ in wanted}
    assert runs.metric_histories(client, wanted) == expected
    assert max(len(r) for r in server.requests) == 100 and reread == ["run007"]
    server.available = False  # a server without the endpoint: one request per run
    reread.clear()
    assert runs.metric_histories(client, wanted) == expected and len(reread) == len(wanted)


def test_reads_pause_the_cyclic_gc_and_restore_it():
    assert gc.isenabled()
    with runs.cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with runs.cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # paused by someone else: left so
    finally:
        gc.enable()


# ------------------------------------------------------------------ plots of large sweeps


def test_large_sweeps_plot_the_best_configurations_and_the_baseline():
    ranked = pd.DataFrame(index=[f"c{i:02d}" for i in range(30)])
    shown, legend, note = plotted_configurations(SimpleNamespace(ranked=ranked, baseline="c25"))
    assert shown == [f"c{i:02d}" for i in range(10)] + ["c25"]
    assert legend["c25"] == "c25 (baseline)" and legend["c00"] == "c00"
    assert note == "best 10 of 30 configurations and the baseline"
    shown, _, note = plotted_configurations(SimpleNamespace(ranked=ranked, baseline="c03"))
    assert shown == [f"c{i:02d}" for i in range(10)] and note == "best 10 of 30 configurations"
    shown, legend, note = plotted_configurations(SimpleNamespace(ranked=ranked.iloc[:20], baseline="c15"))
    assert shown == list(ranked.index[:20]) and legend["c15"] == "c15" and note == ""  # small: every curve


def test_the_printed_ranking_shows_the_best_rows_and_the_baseline_and_says_where_the_rest_is(sweep):
    from qeu_tune.analysis.render import format_report

    uri, rec = sweep
    client = MlflowClient(uri)
    report = analysis.build_report(client, load_sweep(client, rec.parent_run_id), baseline="lr=0.0005", reps=100)
    whole = format_report(report)
    assert "lr=0.002" in whole and "lr=0.0005" in whole and "more configurations" not in whole
    best_only = format_report(report, max_rows=1)  # the baseline ranks second: still shown
    assert best_only == whole
    report.baseline = None
    cut = format_report(report, max_rows=1)
    assert "lr=0.002" in cut and "lr=0.0005" not in cut
    assert "\n... and 1 more configurations: every one is in ranking.csv and ranking.html.\n" in cut
