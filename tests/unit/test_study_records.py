"""A study run never stays RUNNING: an error in a stage ends it FAILED with the error recorded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from qeu_tune.core import tags
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine import study


def test_an_error_between_sweeps_ends_the_study_failed(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("x"), tags={tags.TAG_KIND: "study"})

    def broken(plan, study_id, notify):
        raise ConfigError("the tuning sweep has no trial with results")

    monkeypatch.setattr(study, "_continue", broken)
    with pytest.raises(ConfigError, match="no trial with results"):
        study.continue_study(SimpleNamespace(tracking_uri=uri), run.info.run_id)
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "FAILED"
    assert "no trial with results" in ended.data.tags[tags.TAG_ERROR]
