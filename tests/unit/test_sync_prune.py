"""`qeu-tune sync --prune`: spools the store has confirmed go, every other one stays, with its reason."""

from __future__ import annotations

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from qeu_tune.commands import sync as sync_command
from qeu_tune.commands.main import main
from qeu_tune.core import tags
from qeu_tune.tracking import journal
from qeu_tune.tracking import tracker as tracking
from qeu_tune.tracking.sync import prune_spools


def offline_sweep(uri, *, run_key=None, close=True):
    """An offline tracker's spool: one run with three points (or a tag for ``run_key``, never created)."""
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune", mode="offline")
    if run_key is None:
        run = tracker.create_run(run_name="r", tags={tags.TAG_KIND: "trial"})
        tracker.log_metrics(run, [Metric("x", float(i), 1000 + i, i) for i in range(3)])
        tracker.end_run(run, tags.FINISHED)
    else:  # MLflow cannot take it: set aside in rejected.jsonl on sync
        tracker.set_tags(run_key, {"qeu.note": "orphan"})
    if close:
        tracker.close(timeout_s=1)
    return tracker


def test_prune_removes_only_spools_the_store_confirmed(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = offline_sweep(uri)
    rejected = offline_sweep(uri, run_key="qk-" + "0" * 32)
    running = offline_sweep(uri, close=False)  # a live sweep holds its spool's lock
    try:
        before = prune_spools(None, uri)  # nothing uploaded yet: nothing confirmed
        assert before["pruned"] == [] and "not yet acknowledged" in before["kept"][str(done.spool_dir)]
        assert "in use" in before["kept"][str(running.spool_dir)]
        capsys.readouterr()

        assert sync_command.sync(None, uri, prune=True) == 0  # upload, then prune
        out = capsys.readouterr().out
        assert "Pruned 1 spool directory confirmed in the store" in out and "kept 2" in out
        assert not done.spool_dir.exists()
        assert rejected.spool_dir.exists() and (rejected.spool_dir / journal.REJECTED_FILE).exists()
        assert f"kept {rejected.spool_dir}: MLflow rejected entries" in out
        assert f"kept {running.spool_dir}: in use" in out
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("qeu-tune").experiment_id])
        assert [m.value for m in client.get_metric_history(run.info.run_id, "x")] == [0.0, 1.0, 2.0]
    finally:
        running.close(timeout_s=1)
    assert journal.unconfirmed(running.spool_dir) is not None  # closed, but never uploaded
    # The command line: `qeu-tune sync --prune` uploads the last spool and removes it.
    try:
        main(["--tracking-uri", uri, "sync", "--prune"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    assert "Pruned 1 spool directory" in out and not running.spool_dir.exists() and rejected.spool_dir.exists()


def test_a_torn_or_unacknowledged_journal_is_not_confirmed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = offline_sweep(uri).spool_dir
    assert journal.unconfirmed(spool, uri).endswith(f"not yet acknowledged by {uri}")
    sync_command.sync(str(spool), uri)
    assert journal.unconfirmed(spool, uri) is None and journal.unconfirmed(spool, "sqlite:////other.db") is not None
    with open(spool / journal.JOURNAL_FILE, "ab") as f:
        f.write(b'{"s": 9, "op": "tags"')  # a torn last line (a crash mid-write)
    assert "not yet acknowledged" in journal.unconfirmed(spool, uri)
    assert prune_spools(spool, uri)["pruned"] == [] and spool.exists()
