"""The journaled tracker: order, idempotent replay, offline -> sync, outages (sqlite, no server)."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter

import numpy as np
import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from qeu_tune.commands import sync as sync_command
from qeu_tune.core import tags
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.tags import TAG_RUN_KEY
from qeu_tune.tracking import journal, spool_state
from qeu_tune.tracking import tracker as tracking
from qeu_tune.tracking.sync import sync_spool

KEYS = [f"perf/m{i:02d}" for i in range(40)]


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def points(step, run_index, ts):
    """40 metric points of one reported result (values differ per run and step)."""
    return [Metric(k, float(run_index * 1000 + step + i / 100), ts, step) for i, k in enumerate(KEYS)]


def record(tracker, *, trials=3, iterations=5, artifacts_dir=None):
    """A sweep through the Tracker API: parent, children, params, tags, artifacts, metrics.

    Returns what was reported: {trial name: {metric key: [(step, value, ts), ...]}}.
    """
    parent = tracker.create_run(run_name="sweep", tags={tags.TAG_KIND: "sweep"})
    tracker.log_params(parent, {"search.num_samples": "3"})
    tracker.log_dict_yaml(parent, {"a": {"b": 1}}, tags.SWEEP_CONFIG_ARTIFACT)
    reported = {}
    children = {}
    for t in range(trials):
        name = f"trial{t}"
        children[name] = tracker.create_run(
            run_name=name, tags={tags.TAG_PARENT: parent, tags.TAG_KIND: "trial", tags.TAG_TRIAL_ID: name}
        )
        tracker.log_params(children[name], {"algo.params.lr": str(0.001 * (t + 1)), "seed": str(t)})
        tracker.log_text(children[name], f"seed: {t}\n", tags.RESOLVED_CONFIG_ARTIFACT)
        reported[name] = {}
    for step in range(iterations):  # trials interleave, as Tune reports them
        for t, (name, run) in enumerate(children.items()):
            batch = points(step, t, 1_700_000_000_000 + step * 10 + t)
            tracker.log_metrics(run, batch)
            for m in batch:
                reported[name].setdefault(m.key, []).append((m.step, m.value, m.timestamp))
    for t, run in enumerate(children.values()):
        tracker.set_tags(run, {tags.TAG_SEED: str(t)})
        tracker.end_run(run, tags.FAILED if t == 0 else tags.FINISHED)
    tracker.set_tags(parent, {"qeu.best_run_id": children["trial1"]})
    if artifacts_dir is not None:
        tracker.log_artifacts(parent, str(artifacts_dir), "report")
    tracker.end_run(parent, tags.FINISHED)
    return reported


def read_back(uri, experiment="qeu-tune"):
    """{trial name: run} and the parent run, from MLflow."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], run_view_type=3)
    parents = [r for r in runs if r.data.tags.get(tags.TAG_KIND) == "sweep"]
    children = {r.data.tags[tags.TAG_TRIAL_ID]: r for r in runs if r.data.tags.get(tags.TAG_KIND) == "trial"}
    return client, parents, children


def histories(client, run_id):
    return {k: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, k)) for k in KEYS}


def assert_recorded(uri, reported, tmp_path):
    client, parents, children = read_back(uri)
    assert len(parents) == 1 and set(children) == set(reported)
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params == {"search.num_samples": "3"}
    assert parent.data.tags["qeu.best_run_id"] == children["trial1"].info.run_id  # key translated
    for t, (name, run) in enumerate(sorted(children.items())):
        assert run.data.tags[tags.TAG_PARENT] == parent.info.run_id
        assert run.data.tags[tags.TAG_SEED] == str(t)
        assert run.data.params == {"algo.params.lr": str(0.001 * (t + 1)), "seed": str(t)}
        assert run.info.status == ("FAILED" if t == 0 else "FINISHED")
        assert histories(client, run.info.run_id) == {k: sorted(v) for k, v in reported[name].items()}
        path = client.download_artifacts(run.info.run_id, tags.RESOLVED_CONFIG_ARTIFACT, str(tmp_path / name))
        assert yaml.safe_load(open(path)) == {"seed": t}
    path = client.download_artifacts(parent.info.run_id, tags.SWEEP_CONFIG_ARTIFACT, str(tmp_path / "p"))
    assert yaml.safe_load(open(path)) == {"a": {"b": 1}}


def test_online_tracker_writes_everything_and_removes_its_spool(uri, tmp_path):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")
    assert tracker.spool_dir.parent == journal.spool_root()  # under $QEU_TUNE_HOME/spool
    reported = record(tracker)
    assert tracker.flush(timeout_s=60) and tracker.pending_count() == 0
    assert tracker.close(timeout_s=10) and not tracker.spool_dir.exists()
    assert_recorded(uri, reported, tmp_path)


def test_journal_keeps_call_order_and_replay_applies_it_in_order(uri, tmp_path):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="offline")
    run = tracker.create_run(run_name="r", tags={tags.TAG_KIND: "trial", tags.TAG_TRIAL_ID: "r"})
    for value in ("first", "second", "third"):  # the last write of a tag wins only if replayed in order
        tracker.set_tags(run, {"qeu.note": value})
    tracker.log_metrics(run, [Metric("x", float(i), 1000 + i, i) for i in range(5)])
    tracker.end_run(run, tags.KILLED)
    assert tracker.flush(timeout_s=1) is False  # offline: nothing reaches MLflow
    assert not tracker.close(timeout_s=1) and tracker.spool_dir.exists()
    entries = [e for _, _, _, e in journal.read_journal(tracker.spool_dir / journal.JOURNAL_FILE)]
    assert [e["s"] for e in entries] == list(range(6))
    assert [e["op"] for e in entries] == ["create_run", "tags", "tags", "tags", "metrics", "end_run"]
    summary = sync_spool(tracker.spool_dir, uri)
    assert summary["entries"] == 6 and summary["runs_created"] == 1 and summary["points"] == 5
    client = MlflowClient(uri)
    (got,) = client.search_runs([client.get_experiment_by_name("qeu-tune").experiment_id])
    assert got.data.tags["qeu.note"] == "third" and got.info.status == "KILLED"
    assert got.data.tags[TAG_RUN_KEY] == run


def test_offline_then_sync_gives_the_same_sweep_and_a_second_sync_adds_nothing(uri, tmp_path, capsys):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "table.csv").write_text("a,b\n1,2\n")
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="offline")
    assert tracker.client is None and tracker.experiment_id is None
    reported = record(tracker, artifacts_dir=report_dir)
    (report_dir / "table.csv").write_text("changed after logging")  # the spool kept a copy
    assert tracker.resolve(tracker.create_run(run_name="late", tags={})) is None  # never created offline
    tracker.close(timeout_s=1)
    # Nothing was written to MLflow while offline (not even the database file).
    assert not (tmp_path / "mlflow.db").exists()
    # `qeu-tune sync` without a directory: every spool under $QEU_TUNE_HOME/spool.
    assert sync_command.sync(None, uri) == 0
    assert "runs created" in capsys.readouterr().out
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("qeu-tune")
    all_runs = client.search_runs([exp.experiment_id])
    assert len(all_runs) == 1 + 3 + 1  # parent, 3 trials, the "late" run
    parent = next(r for r in all_runs if r.data.tags.get(tags.TAG_KIND) == "sweep")
    table = client.download_artifacts(parent.info.run_id, "report/table.csv", str(tmp_path / "dl"))
    assert open(table).read() == "a,b\n1,2\n"
    before = {r.info.run_id: histories(client, r.info.run_id) for r in all_runs}
    second = sync_spool(tracker.spool_dir, uri)
    assert second["entries"] == 0 and second["runs_created"] == 0 and second["points"] == 0
    # Even with the acknowledged offset lost, a full replay adds nothing (idempotent writes).
    (tracker.spool_dir / spool_state.STATE_FILE).unlink()
    third = sync_spool(tracker.spool_dir, uri)
    assert third["entries"] > 0 and third["runs_created"] == 0 and third["errors"] == 0
    after_runs = client.search_runs([exp.experiment_id])
    assert len(after_runs) == len(all_runs)
    assert {r.info.run_id: histories(client, r.info.run_id) for r in after_runs} == before
    assert_recorded(uri, reported, tmp_path)


class FlakyClient:
    """Wraps a real MlflowClient: fails a share of calls, half of them AFTER the write went
    through (a lost response), so replays must be idempotent. The first two calls of each
    kind fail for sure (after, then before): a sweep's writes are few once batched."""

    def __init__(self, client, rate=0.3, seed=0):
        self._client = client
        self._rng = random.Random(seed)
        self.rate = rate
        self.failures = Counter()
        self.calls = Counter()

    def __getattr__(self, name):
        target = getattr(self._client, name)
        if name not in ("log_batch", "create_run", "set_terminated", "log_artifact", "search_runs"):
            return target

        def call(*args, **kwargs):
            self.calls[name] += 1
            roll = {1: self.rate * 0.75, 2: 0.0}.get(self.calls[name], self._rng.random())
            if roll < self.rate / 2:
                self.failures[name, "before"] += 1
                raise ConnectionError("injected: request never arrived")
            result = target(*args, **kwargs)
            if roll < self.rate:
                self.failures[name, "after"] += 1
                raise ConnectionError("injected: response lost")
            return result

        return call


def test_injected_failures_keep_every_point_and_replay_it_exactly_once(uri, tmp_path, caplog):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", writer="thread")
    flaky = FlakyClient(tracker.client)
    tracker._spool.writer.applier.client = flaky
    tracker._spool.writer.loop.min_backoff_s = tracker._spool.writer.loop.max_backoff_s = 0.01
    reported = record(tracker, trials=4, iterations=20)
    assert tracker.flush(timeout_s=120)
    # Both kinds of failure happened (which calls they hit depends on the call sequence).
    assert flaky.failures[("log_batch", "after")] + flaky.failures[("log_batch", "before")] > 0
    assert all(sum(n for (_, when), n in flaky.failures.items() if when == w) > 0 for w in ("before", "after"))
    assert any("kept" in r.getMessage() for r in caplog.records)
    tracker.close(timeout_s=5)
    client, parents, children = read_back(uri)
    assert len(parents) == 1 and len(children) == 4  # no duplicate runs from replayed creates
    for name, run in children.items():
        got = histories(client, run.info.run_id)
        assert got == {k: sorted(v) for k, v in reported[name].items()}  # all points, none twice


def test_lost_create_run_response_does_not_duplicate_the_run(uri):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", writer="thread")
    real_create = tracker.client.create_run
    calls = []

    def create_then_fail(*args, **kwargs):
        run = real_create(*args, **kwargs)
        calls.append(run.info.run_id)
        if len(calls) == 1:
            raise ConnectionError("injected: response lost")
        return run

    tracker.client.create_run = create_then_fail
    tracker._spool.writer.loop.min_backoff_s = 0.01
    key = tracker.create_run(run_name="r", tags={})
    tracker.log_metrics(key, [Metric("x", 1.0, 5, 0)])
    assert tracker.flush(timeout_s=30)
    assert calls and len(calls) == 1 and tracker.resolve(key) == calls[0]
    client = MlflowClient(uri)
    assert len(client.search_runs([tracker.experiment_id])) == 1
    tracker.close(timeout_s=5)


def test_log_metrics_stays_fast_during_an_outage_and_loses_nothing(uri):
    tracker = tracking.Tracker(
        tracking_uri=uri, experiment="qeu-tune", queue_size=50, writer="thread"
    )  # small: forces re-reads
    tracker._spool.writer.loop.min_backoff_s = 0.1
    tracker._spool.writer.loop.max_backoff_s = 0.5
    runs = [tracker.create_run(run_name=f"t{i}", tags={}) for i in range(16)]
    assert tracker.flush(timeout_s=30)
    real_log_batch = tracker.client.log_batch
    down = threading.Event()
    down.set()

    def outage(*args, **kwargs):
        if down.is_set():
            time.sleep(0.05)  # a slow, failing server holds only the writer thread
            raise ConnectionError("injected outage")
        return real_log_batch(*args, **kwargs)

    tracker.client.log_batch = outage
    times = []
    iterations = 60
    for step in range(iterations):
        for i, run in enumerate(runs):
            batch = points(step, i, 1_700_000_000_000 + step)
            t0 = time.perf_counter()
            tracker.log_metrics(run, batch)
            times.append(time.perf_counter() - t0)
    assert tracker.pending_count() == 16 * iterations and tracker._spool.writer.dropped > 0
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    print(f"log_metrics during outage: p50 {p50:.3f} ms, p99 {p99:.3f} ms over {len(times)} calls")
    assert p99 < 5.0
    down.clear()  # the server is back: the journal (re-read past the full queue) is replayed
    assert tracker.flush(timeout_s=120)
    client = MlflowClient(uri)
    for run in runs:
        history = client.get_metric_history(tracker.resolve(run), KEYS[0])
        assert sorted(m.step for m in history) == list(range(iterations))
    tracker.close(timeout_s=5)


def test_an_unreachable_server_fails_fast_with_a_pointer_to_offline_mode():
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConfigError, match="tracking.mode=offline") as err:
        tracking.Tracker(tracking_uri=f"http://127.0.0.1:{port}", experiment="qeu-tune")
    assert time.monotonic() - start < 10
    assert "API request" in str(err.value)  # the connection failed (not our retry settings)
    # The shortened retries were for that call only.
    import os

    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_torn_last_line_ends_the_journal(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps({"s": 0, "op": "end_run", "run": "x", "status": "FINISHED"}) + "\n" + '{"s": 1, "op')
    assert [e["s"] for _, _, _, e in journal.read_journal(path)] == [0]


def test_sync_of_a_missing_spool_is_a_clear_error(tmp_path, capsys):
    assert sync_command.sync(str(tmp_path / "nope"), None) == 2
    assert "not a qeu-tune spool" in capsys.readouterr().out


def test_bad_mode_is_a_config_error(uri):
    with pytest.raises(ConfigError, match="online, offline"):
        tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="sometimes")


def test_reopen_and_delete_are_replayed_in_order(uri):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="offline")
    kept = tracker.create_run(run_name="kept", tags={})
    gone = tracker.create_run(run_name="gone", tags={})
    tracker.end_run(kept, tags.KILLED)
    tracker.reopen_run(kept)  # a resumed trial
    tracker.end_run(gone, tags.KILLED)
    tracker.delete_run(gone)
    tracker.close(timeout_s=1)
    summary = sync_spool(tracker.spool_dir, uri)
    assert summary["errors"] == 0 and summary["spools"][0]["rejected"] == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("qeu-tune").experiment_id
    (active,) = client.search_runs([exp])
    assert active.info.run_name == "kept" and active.info.status == "RUNNING"
    assert [r.info.run_name for r in client.search_runs([exp], run_view_type=2)] == ["gone"]  # deleted only


def test_a_run_key_from_an_earlier_tracker_becomes_the_run_id_in_tags(uri):
    """A resumed sweep's new trial runs name the parent by the key the first process handed out."""
    first = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")
    parent = first.create_run(run_name="sweep", tags={tags.TAG_KIND: "sweep"})
    assert first.close(timeout_s=30)
    second = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")  # its spool has never seen the key
    child = second.create_run(run_name="trial", tags={tags.TAG_PARENT: parent, tags.TAG_KIND: "trial"})
    second.set_tags(child, {"qeu.best_run_id": parent})
    assert second.close(timeout_s=30)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("qeu-tune").experiment_id
    (parent_run,) = client.search_runs([exp], f"tags.`{tags.TAG_KIND}` = 'sweep'")
    (child_run,) = client.search_runs([exp], f"tags.`{tags.TAG_KIND}` = 'trial'")
    assert child_run.data.tags[tags.TAG_PARENT] == parent_run.info.run_id
    assert child_run.data.tags["qeu.best_run_id"] == parent_run.info.run_id


def test_a_live_spool_creates_runs_without_searching_and_never_rewrites_the_run_map(uri):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", writer="thread")
    searches = []
    real_search = tracker.client.search_runs
    tracker._spool.writer.applier.client.search_runs = lambda *a, **k: searches.append(a) or real_search(*a, **k)
    keys = [tracker.create_run(run_name=f"r{i}", tags={}) for i in range(30)]
    for key in keys:
        tracker.log_metrics(key, [Metric("x", 1.0, 5, 0)])
    assert tracker.flush(timeout_s=60)
    # Looking a run up by its tag scans the experiment: once per run would be quadratic.
    assert searches == []
    spool = tracker.spool_dir
    assert "runs" not in json.loads((spool / spool_state.STATE_FILE).read_text())  # small, whatever the size
    state = spool_state.SpoolState(spool, uri)  # what `qeu-tune sync` reads back
    assert state.runs == {k: tracker.resolve(k) for k in keys}
    tracker.close(timeout_s=5)


class CountingClient:
    """Counts the calls a real MlflowClient gets."""

    def __init__(self, client):
        self._client = client
        self.calls = Counter()

    def __getattr__(self, name):
        target = getattr(self._client, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            self.calls[name] += 1
            return target(*args, **kwargs)

        return call


def test_a_stretch_of_entries_reaches_mlflow_in_one_log_batch_per_run(uri, tmp_path, monkeypatch):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="offline")
    reported = record(tracker, trials=3, iterations=5)
    tracker.close(timeout_s=1)
    entries = [e for _, _, _, e in journal.read_journal(tracker.spool_dir / journal.JOURNAL_FILE)]
    mergeable = sum(e["op"] in ("params", "tags", "metrics") for e in entries)
    counting = {}

    def client_for(tracking_uri):
        counting["client"] = CountingClient(MlflowClient(tracking_uri))
        return counting["client"]

    monkeypatch.setattr("mlflow.tracking.MlflowClient", client_for)
    summary = sync_spool(tracker.spool_dir, uri)
    assert summary["entries"] == len(entries) and summary["rejected"] == 0
    assert counting["client"].calls["log_batch"] == 1 + 3 < mergeable == 23  # one a run
    assert_recorded(uri, reported, tmp_path)


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_an_entry_mlflow_refuses_inside_a_merged_write_is_set_aside_alone(uri, tmp_path, mode):
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode=mode)
    run = tracker.create_run(run_name="r", tags={tags.TAG_KIND: "trial", tags.TAG_TRIAL_ID: "r"})
    tracker.log_params(run, {"lr": "0.1"})
    tracker.log_metrics(run, [Metric("x", float(i), 1000 + i, i) for i in range(3)])
    tracker.log_params(run, {"lr": "0.2"})  # MLflow refuses to change a param
    tracker.log_metrics(run, [Metric("x", float(i), 1000 + i, i) for i in range(3, 6)])
    tracker.set_tags(run, {"qeu.note": "after"})
    tracker.end_run(run, tags.FINISHED)
    if mode == "online":
        tracker.flush(timeout_s=30)
        rejected = tracker._spool.rejected
    else:
        tracker.close(timeout_s=1)
        rejected = sync_spool(tracker.spool_dir, uri)["rejected"]
    lines = [json.loads(line) for line in (tracker.spool_dir / journal.REJECTED_FILE).read_text().splitlines()]
    assert rejected == 1 and [line["entry"]["params"] for line in lines] == [{"lr": "0.2"}]
    tracker.close(timeout_s=5)
    client = MlflowClient(uri)
    (got,) = client.search_runs([client.get_experiment_by_name("qeu-tune").experiment_id])
    assert got.data.params == {"lr": "0.1"} and got.data.tags["qeu.note"] == "after"
    assert got.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(got.info.run_id, "x")) == list(range(6))


def test_flush_waits_for_a_slow_tracker_while_it_takes_writes(uri):
    # The end of a 1,000-trial sweep on a tracking server: the writer is behind but moving.
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="offline")
    run = tracker.create_run(run_name="t", tags={})
    for step in range(10000):  # 20 writes of MERGED_UNIT (500) entries, one log_batch each
        tracker.log_metrics(run, [Metric("x", float(step), 1000 + step, step)])
    tracker.close(timeout_s=1)
    live = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", writer="thread")
    real_log_batch = live.client.log_batch

    def slow_log_batch(*args, **kwargs):
        time.sleep(0.3)  # >= 6 s in all, a write every ~0.3-1.5 s (however loaded the machine)
        return real_log_batch(*args, **kwargs)

    live._spool.writer.applier.client.log_batch = slow_log_batch
    for _, _, _, entry in journal.read_journal(tracker.spool_dir / journal.JOURNAL_FILE):
        entry.pop("s")
        live._spool.append(entry)
    started = time.monotonic()
    assert live.flush(timeout_s=3)  # no progress for 3 s would be a timeout; this moves
    assert time.monotonic() - started > 3 and live.pending_count() == 0
    assert live.close(timeout_s=5)
