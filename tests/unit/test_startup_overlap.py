"""The sweep's start: MLflow's tracker opens in a thread while ray.init runs (qeu_tune/engine/run.py, startup.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from qeu_tune.core.errors import ConfigError
from qeu_tune.engine import run, startup, tune_env
from qeu_tune.engine.plan import SweepPlan


def test_the_background_job_runs_in_its_own_thread_and_reraises_in_the_caller():
    seen = {}

    def work():
        seen["thread"] = threading.current_thread().name
        return 42

    assert startup.start_in_background(work, name="qeu-test-bg").result(timeout=5) == 42
    assert seen["thread"].startswith("qeu-test-bg")

    def fail():
        raise ValueError("MLflow down")

    with pytest.raises(ValueError, match="MLflow down"):
        startup.start_in_background(fail, name="qeu-test-bg").result(timeout=5)


def test_a_discarded_tracker_is_closed_once_whenever_it_arrives():
    release = threading.Event()
    late, early = _FakeTracker(), _FakeTracker()
    pending = startup.start_in_background(lambda: release.wait(5) and late, name="qeu-test-bg")
    done = startup.start_in_background(lambda: early, name="qeu-test-bg")
    done.result(timeout=5)
    startup.discard_tracker(done)  # already there: closed at once
    startup.discard_tracker(pending)  # not yet: closed when it comes
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

    job = startup.start_in_background(fail, name="qeu-test-bg")
    with pytest.raises(RuntimeError):
        job.result(timeout=5)
    startup.discard_tracker(job)  # nothing to close, and no error


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
    return SweepPlan(
        config={"cluster": {"num_cpus": 1}, "verbose": 0, "tracking": {"experiment": "x"}},
        template=None,
        search=None,
        tracking_uri="sqlite:///unused.db",
        storage_path="/tmp/unused",
    )


def test_ray_init_failure_closes_the_tracker_and_opens_no_run(monkeypatch):
    """A failing ray.init still stops the sweep before any MLflow run; the tracker opened
    meanwhile is closed (its empty journal removed)."""
    tracker = _FakeTracker()
    calls = []
    monkeypatch.setattr(startup, "open_tracker_warm_tune", lambda plan: tracker)

    def failing_init(cluster, verbose):
        calls.append("init")
        raise ConfigError("cluster.address='x': could not connect to Ray")

    monkeypatch.setattr(startup, "init_ray", failing_init)
    with pytest.raises(ConfigError, match="could not connect"):
        run.run_sweep(_plan())
    deadline = time.monotonic() + 5
    while not tracker.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == ["init"] and tracker.closed


def test_tracker_failure_restores_signal_handlers(monkeypatch):
    import signal

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    def failing_tracker(plan):
        raise ConfigError("Cannot reach MLflow")

    monkeypatch.setattr(startup, "open_tracker_warm_tune", failing_tracker)
    monkeypatch.setattr(startup, "init_ray", lambda cluster, verbose: None)
    with pytest.raises(ConfigError, match="Cannot reach MLflow"):
        run.run_sweep(_plan())
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_ray_init_runs_in_the_main_thread(monkeypatch):
    """ray.init installs its SIGTERM handler only from the main thread (InterruptGuard goes after it)."""
    threads = []
    monkeypatch.setattr(startup, "open_tracker_warm_tune", lambda plan: (_ for _ in ()).throw(ConfigError("stop here")))
    monkeypatch.setattr(startup, "init_ray", lambda cluster, verbose: threads.append(threading.current_thread()))
    with pytest.raises(ConfigError):
        run.run_sweep(_plan())
    assert threads == [threading.main_thread()]


def _search_plan(*, searcher, num_env_runners=0, max_concurrent=None):
    from types import SimpleNamespace

    return SweepPlan(
        config={"algo": {"num_env_runners": num_env_runners}, "search": {"max_concurrent_trials": max_concurrent}},
        template=None,
        search=SimpleNamespace(search_alg=object() if searcher else None),
        tracking_uri="sqlite:///unused.db",
        storage_path="/tmp/unused",
    )


@pytest.mark.parametrize(
    "cpus, runners, cap, expected",
    [(2, 0, None, 2), (32, 0, None, 32), (32, 3, None, 8), (2, 3, None, 1), (32, 0, 4, 4), (2.5, 0, None, 2)],
)
def test_a_searcher_sweep_may_start_a_trial_per_free_slot_at_once(monkeypatch, cpus, runners, cap, expected):
    """Tune keeps one trial pending for a searcher (its first wave then starts one actor at a
    time); the limit becomes the trial slots of the cluster, or max_concurrent_trials."""
    monkeypatch.delenv(tune_env.PENDING_TRIALS_ENV, raising=False)
    with tune_env.pending_trials_limit(
        _search_plan(searcher=True, num_env_runners=runners, max_concurrent=cap), cpus
    ) as limit:
        assert limit == expected
        assert os.environ[tune_env.PENDING_TRIALS_ENV] == str(expected)
    assert tune_env.PENDING_TRIALS_ENV not in os.environ  # scoped to the one fit()


def test_the_pending_limit_is_restored_when_fit_fails(monkeypatch):
    monkeypatch.delenv(tune_env.PENDING_TRIALS_ENV, raising=False)
    with pytest.raises(RuntimeError):
        with tune_env.pending_trials_limit(_search_plan(searcher=True), 2):
            raise RuntimeError("fit failed")
    assert tune_env.PENDING_TRIALS_ENV not in os.environ


def test_grid_sweeps_and_a_users_own_setting_keep_tunes_limit(monkeypatch):
    monkeypatch.delenv(tune_env.PENDING_TRIALS_ENV, raising=False)
    with tune_env.pending_trials_limit(_search_plan(searcher=False), 2) as limit:  # variant generator: Tune's many
        assert limit is None and tune_env.PENDING_TRIALS_ENV not in os.environ
    monkeypatch.setenv(tune_env.PENDING_TRIALS_ENV, "7")
    with tune_env.pending_trials_limit(_search_plan(searcher=True), 2) as limit:
        assert limit is None and os.environ[tune_env.PENDING_TRIALS_ENV] == "7"
    assert os.environ[tune_env.PENDING_TRIALS_ENV] == "7"


def test_tune_reads_the_limit_for_a_searcher():
    """The knob is Tune's own: its controller takes the value for a (non-grid) search algorithm."""
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search import SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    searcher = SearchGenerator(OptunaSearch(metric="m", mode="max"))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(tune_env.PENDING_TRIALS_ENV, raising=False)
        assert _get_max_pending_trials(searcher) == 1  # Tune's default: the first wave starts one by one
        with tune_env.pending_trials_limit(_search_plan(searcher=True), 2):
            assert _get_max_pending_trials(searcher) == 2


def test_sweeps_write_no_tensorboard_files_but_keep_a_users_setting(monkeypatch):
    monkeypatch.delenv(tune_env.AUTO_LOGGERS_ENV, raising=False)
    with tune_env.no_tensorboard_files():
        assert os.environ[tune_env.AUTO_LOGGERS_ENV] == "1"  # Tune adds none of its loggers...
    assert tune_env.AUTO_LOGGERS_ENV not in os.environ  # scoped to the one fit()
    assert [type(c).__name__ for c in tune_env.file_loggers()] == ["CSVLoggerCallback", "JsonLoggerCallback"]
    monkeypatch.setenv(tune_env.AUTO_LOGGERS_ENV, "0")  # ...unless the user said otherwise
    with tune_env.no_tensorboard_files():
        assert os.environ[tune_env.AUTO_LOGGERS_ENV] == "0"
    assert os.environ[tune_env.AUTO_LOGGERS_ENV] == "0"
