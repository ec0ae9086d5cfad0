"""Run a small sweep in-process (the session's Ray) and read its trial runs back."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import tags
from qeu_tune.engine.plan import plan_sweep
from qeu_tune.engine.run import run_sweep


def run(overrides, tmp_path):
    """Plans and runs a sweep recorded in ``tmp_path``; returns its result and an MLflow client."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [*overrides, f"tracking.uri={uri}", f"cluster.storage_path={tmp_path / 'ray'}", "verbose=0"]
    result = run_sweep(plan_sweep(to_plain(compose(overrides)), overrides))
    return result, MlflowClient(tracking_uri=uri)


def children(client, result):
    """The sweep's child runs."""
    return client.search_runs(
        [result.experiment_id], filter_string=f"tags.`{tags.TAG_PARENT}` = '{result.parent_run_id}'"
    )
