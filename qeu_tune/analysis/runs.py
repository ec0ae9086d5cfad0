"""Reading sweeps and trials back from MLflow (the tracker is the source of truth).

Nothing read back is unpickled: configs are YAML artifacts loaded with ``yaml.safe_load``,
and an artifact carrying a Python object tag is refused.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import yaml

from qeu_tune.analysis.convergence import latest_attempt
from qeu_tune.core import tags
from qeu_tune.core.errors import ConfigError


@dataclass
class TrialRun:
    """One trial's MLflow run, as reports need it."""

    run_id: str
    status: str
    config_key: str
    seed: Optional[int]
    params: Dict[str, str]
    tags: Dict[str, str]
    metrics: Dict[str, float]  # latest values


@dataclass
class SweepRuns:
    """A sweep's parent run and its child trial runs."""

    parent: Any  # mlflow.entities.Run
    trials: List[TrialRun]

    @property
    def run_id(self) -> str:
        return self.parent.info.run_id

    @property
    def name(self) -> str:
        return self.parent.data.tags.get(tags.TAG_SWEEP, self.parent.info.run_name)


def client_for(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_ids(client: Any) -> List[str]:
    return [e.experiment_id for e in client.search_experiments()]


def find_run(client: Any, ref: str) -> Any:
    """A run by id, or the newest sweep (else study) whose name or run name is ``ref``.

    Raises:
        ConfigError: No such run, with the sweeps that do exist.
    """
    try:
        return client.get_run(ref)
    except Exception:  # noqa: BLE001 - not an id: look it up by name
        pass
    ids = _experiment_ids(client)
    for kind, field in (
        ("sweep", tags.TAG_SWEEP),
        ("sweep", "run_name"),
        ("study", tags.TAG_STUDY),
        ("study", "run_name"),
    ):
        name = "attributes.run_name" if field == "run_name" else f"tags.`{field}`"
        runs = (
            client.search_runs(
                ids,
                filter_string=f"{name} = '{ref}' and tags.`{tags.TAG_KIND}` = '{kind}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if ids
            else []
        )
        if runs:
            return runs[0]
    recent = (
        client.search_runs(
            ids,
            filter_string=f"tags.`{tags.TAG_KIND}` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=5,
        )
        if ids
        else []
    )
    listing = ", ".join(f"{r.info.run_id} ({r.info.run_name})" for r in recent) or "none recorded"
    raise ConfigError(
        f"no run or sweep named {ref!r} in {client.tracking_uri}; recent sweeps: {listing}. "
        "Pass a parent run id or a sweep name, and check tracking.uri / $MLFLOW_TRACKING_URI."
    )


def load_sweep(client: Any, ref: str) -> SweepRuns:
    """The sweep ``ref`` (parent run id or sweep name) with all its trial runs."""
    parent = find_run(client, ref)
    if parent.data.tags.get(tags.TAG_KIND) != "sweep":
        raise ConfigError(
            f"run {parent.info.run_id} is a trial, not a sweep; pass its parent "
            f"{parent.data.tags.get(tags.TAG_PARENT, '?')} or use it with `rerun`."
        )
    runs = child_runs(client, parent.info.experiment_id, parent.info.run_id)
    trials = [
        TrialRun(
            run_id=r.info.run_id,
            status=r.info.status,
            config_key=r.data.tags.get(tags.TAG_CONFIG_KEY, "{}"),
            seed=_int(r.data.tags.get(tags.TAG_SEED)),
            params=dict(r.data.params),
            tags=dict(r.data.tags),
            metrics=dict(r.data.metrics),
        )
        for r in runs
        if r.data.tags.get(tags.TAG_KIND) == "trial"
    ]
    return SweepRuns(parent=parent, trials=trials)


def child_runs(client: Any, experiment_id: str, parent_id: str) -> Iterator[Any]:
    """Every child run of ``parent_id`` (any kind), page by page: a sweep may have more runs
    than one MLflow search returns."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{tags.TAG_PARENT}` = '{parent_id}'",
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def safe_load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with a clear error for anything that is not plain data."""
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as err:
        raise ConfigError(
            f"refusing to load {source}: it contains a non-plain YAML tag ({err.problem}). "
            "Config artifacts hold plain data only; a Python object tag means the artifact "
            "was tampered with or not written by qeu-tune."
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML ({err}).") from None


def load_config_artifact(client: Any, run_id: str, artifact: str = tags.RESOLVED_CONFIG_ARTIFACT) -> Dict[str, Any]:
    """A run's config artifact, safely loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, artifact, tmp)
        except Exception as err:  # noqa: BLE001 - MLflow's store raises many types for a missing file
            raise ConfigError(f"run {run_id} has no artifact {artifact} ({err}).") from None
        text = Path(path).read_text()
    data = safe_load_yaml(text, f"{artifact} of run {run_id}")
    if not isinstance(data, dict):
        raise ConfigError(f"{artifact} of run {run_id} is not a mapping.")
    return data


def metric_history(client: Any, run_id: str, key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one metric: its latest attempt, in step order.

    Points are taken in the order they were logged, so a trial restored from a checkpoint
    contributes only the curve it finished with (``convergence.latest_attempt``).
    """

    logged = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))
    points = latest_attempt([(float(m.step), float(m.value)) for m in logged])
    return [s for s, _ in points], [v for _, v in points]


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text not in (None, "None") else None
    except ValueError:
        return None
