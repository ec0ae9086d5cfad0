"""Shared fixtures: one Ray instance for the whole session, isolated tracking and storage."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "support"
# Test-only envs (e.g. one that crashes) must import in Ray workers too: workers inherit
# PYTHONPATH from the process that starts Ray.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(SUPPORT))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test writes its MLflow DB, Ray results and Hydra dirs under tmp_path."""
    monkeypatch.setenv("QEU_TUNE_HOME", str(tmp_path / "qeu-home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("QEU_TUNE_CONFIG_DIR", raising=False)  # a user config dir of the developer's
    return tmp_path / "qeu-home"


@pytest.fixture(autouse=True)
def close_trackers(monkeypatch):
    """Stops the writer of every tracker a test opened and left open.

    Each writer process polls its journal every 0.1 s until it is closed: left running
    they stayed until pytest exited (13 after the unit tests), taking CPU from the
    end-to-end tests on a 2-core machine.
    """
    from qeu_tune.tracking.tracker import Tracker

    opened = []
    init = Tracker.__init__

    def tracked_init(self, *args, **kwargs):
        opened.append(self)  # before init: a tracker whose init fails may have a writer already
        init(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "__init__", tracked_init)
    yield
    for tracker in opened:
        if getattr(tracker, "_spool", None) is not None:
            tracker.close(timeout_s=0)  # the test is over: stop the writer, do not wait for MLflow


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every end-to-end test (starting Ray costs ~5 s)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
