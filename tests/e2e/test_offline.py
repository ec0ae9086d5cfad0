"""An offline sweep (journal only, no MLflow) uploaded later with ``qeu-tune sync`` gives the
same parent/child structure, params, artifacts and metric histories as the same sweep online."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import names, tags
from qeu_tune.engine.plan import plan_sweep
from qeu_tune.engine.run import run_sweep

pytestmark = pytest.mark.slow

SWEEP = ["debug=smoke", "experiment=single", "search.num_seeds=2", "stop.env_steps=1500", "verbose=0"]
DIFFERENT = ("tracking.mode", "tracking.uri", "cluster.storage_path")  # differ on purpose


def sweep(tmp_path, name, mode):
    uri = f"sqlite:///{tmp_path / f'{name}.db'}"
    overrides = [*SWEEP, f"tracking.uri={uri}", f"tracking.mode={mode}", f"cluster.storage_path={tmp_path / name}"]
    return run_sweep(plan_sweep(to_plain(compose(overrides)), overrides)), uri


def snapshot(uri):
    """Everything a user compares in the MLflow UI, keyed by trial seed."""
    client = MlflowClient(uri)
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.`{tags.TAG_KIND}` = 'sweep'"
    )
    children = client.search_runs([parent.info.experiment_id], f"tags.`{tags.TAG_PARENT}` = '{parent.info.run_id}'")
    out = {
        "parent": (
            parent.info.status,
            {k: v for k, v in parent.data.params.items()},
            sorted(a.path for a in client.list_artifacts(parent.info.run_id, "config")),
        )
    }
    for run in children:
        seed = run.data.tags[tags.TAG_SEED]
        out[seed] = {
            "status": run.info.status,
            "params": {k: v for k, v in run.data.params.items() if k not in DIFFERENT},
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id, "config")),
            "keys": sorted(k for k in run.data.metrics),
            "steps": [m.step for m in client.get_metric_history(run.info.run_id, names.ENV_STEPS)],
        }
    return out


def test_offline_sweep_synced_later_matches_the_online_sweep(ray_session, tmp_path, isolated_home):
    online, online_uri = sweep(tmp_path, "online", "online")
    offline, offline_uri = sweep(tmp_path, "offline", "offline")
    assert online.spool is None and offline.spool is not None
    assert not (tmp_path / "offline.db").exists()  # offline: MLflow was never contacted

    env = {**os.environ, "QEU_TUNE_HOME": str(isolated_home)}
    sync = [sys.executable, "-m", "qeu_tune.commands.main", "sync", offline.spool, "--tracking-uri", offline_uri]
    first = subprocess.run(sync, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    again = subprocess.run(sync, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and "0 metric points, 0 runs created" in again.stdout, again.stdout

    a, b = snapshot(online_uri), snapshot(offline_uri)
    a_parent, b_parent = a.pop("parent"), b.pop("parent")
    assert a_parent[0] == b_parent[0] == "FINISHED" and a_parent[2] == b_parent[2]
    assert {k: v for k, v in a_parent[1].items()} == {k: v for k, v in b_parent[1].items()}
    assert sorted(a) == sorted(b) == ["0", "1"]
    for seed in a:
        assert a[seed]["status"] == b[seed]["status"] == "FINISHED"
        assert a[seed]["params"] == b[seed]["params"]
        assert a[seed]["artifacts"] == b[seed]["artifacts"]
        assert a[seed]["steps"] == b[seed]["steps"] and len(a[seed]["steps"]) == 3
        assert set(a[seed]["keys"]) - set(b[seed]["keys"]) <= {k for k in a[seed]["keys"] if k.startswith("conv/")}
