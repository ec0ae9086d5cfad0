"""The sweep's start: MLflow's tracker opens in a thread while ray.init runs (qeu_tune/sweep.py)."""

from __future__ import annotations

import threading
import time

import pytest

from qeu_tune import sweep


def test_the_background_job_runs_in_its_own_thread_and_reraises_in_the_caller():
    seen = {}

    def work():
        seen["thread"] = threading.current_thread().name
        return 42

    assert sweep._start_in_background(work, name="qeu-test-bg").result(timeout=5) == 42
    assert seen["thread"].startswith("qeu-test-bg")

    def fail():
        raise ValueError("MLflow down")

    with pytest.raises(ValueError, match="MLflow down"):
        sweep._start_in_background(fail, name="qeu-test-bg").result(timeout=5)


def test_a_discarded_tracker_is_closed_once_whenever_it_arrives():
    release = threading.Event()
    late, early = _FakeTracker(), _FakeTracker()
    pending = sweep._start_in_background(lambda: release.wait(5) and late, name="qeu-test-bg")
    done = sweep._start_in_background(lambda: early, name="qeu-test-bg")
    done.result(timeout=5)
    sweep._discard_tracker(done)  # already there: closed at once
    sweep._discard_tracker(pending)  # not yet: closed when it comes
    assert early.closes == 1 and late.closes == 0
    release.set()
    pending.result(timeout=5)
    deadline = time.monotonic() + 5
    while late.closes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late.closes == 1


def test_a_failed_tracker_is_not_closed():
    def fail():
        raise RuntimeError("boom")

    job = sweep._start_in_background(fail, name="qeu-test-bg")
    with pytest.raises(RuntimeError):
        job.result(timeout=5)
    sweep._discard_tracker(job)  # nothing to close, and no error


class _FakeTracker:
    def __init__(self):
        self.closes = 0

    @property
    def closed(self):
        return self.closes > 0

    def close(self, timeout_s=30.0):
        self.closes += 1
        return True


def _plan():
    return sweep.SweepPlan(
        config={"cluster": {"num_cpus": 1}, "verbose": 0, "tracking": {"experiment": "x"}},
        template=None, search=None, tracking_uri="sqlite:///unused.db", storage_path="/tmp/unused",
    )


def test_ray_init_failure_closes_the_tracker_and_opens_no_run(monkeypatch):
    """A failing ray.init still stops the sweep before any MLflow run; the tracker opened
    meanwhile is closed (its empty journal removed)."""
    tracker = _FakeTracker()
    calls = []
    monkeypatch.setattr(sweep, "_open_tracker_warm_tune", lambda plan: tracker)

    def failing_init(cluster, verbose):
        calls.append("init")
        raise sweep.ConfigError("cluster.address='x': could not connect to Ray")

    monkeypatch.setattr(sweep, "_init_ray", failing_init)
    with pytest.raises(sweep.ConfigError, match="could not connect"):
        sweep.run_sweep(_plan())
    deadline = time.monotonic() + 5
    while not tracker.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == ["init"] and tracker.closed


def test_tracker_failure_restores_signal_handlers(monkeypatch):
    import signal

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    def failing_tracker(plan):
        raise sweep.ConfigError("Cannot reach MLflow")

    monkeypatch.setattr(sweep, "_open_tracker_warm_tune", failing_tracker)
    monkeypatch.setattr(sweep, "_init_ray", lambda cluster, verbose: None)
    with pytest.raises(sweep.ConfigError, match="Cannot reach MLflow"):
        sweep.run_sweep(_plan())
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_ray_init_runs_in_the_main_thread(monkeypatch):
    """ray.init installs its SIGTERM handler only from the main thread (InterruptGuard goes after it)."""
    threads = []
    monkeypatch.setattr(sweep, "_open_tracker_warm_tune",
                        lambda plan: (_ for _ in ()).throw(sweep.ConfigError("stop here")))
    monkeypatch.setattr(sweep, "_init_ray", lambda cluster, verbose: threads.append(threading.current_thread()))
    with pytest.raises(sweep.ConfigError):
        sweep.run_sweep(_plan())
    assert threads == [threading.main_thread()]
