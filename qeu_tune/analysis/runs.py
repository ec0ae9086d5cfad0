"""Reading sweeps and trials back from MLflow (the tracker is the source of truth).

Nothing read back is unpickled: configs are YAML artifacts loaded with ``yaml.safe_load``,
and an artifact carrying a Python object tag is refused.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

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
        with cyclic_gc_paused():
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


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector while MLflow builds many objects: a page of
    1,000 runs is ~125,000 ORM objects, and the collector rescanning them again and again
    was more than half of the search. Nothing read here leaves cycles worth collecting early."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


Curve = Tuple[List[float], List[float]]  # (steps, values)

# Bulk history reads: run ids and points per request (500 keeps SQL ``IN`` lists short); a
# longer answer is read on in further requests. An ``mlflow server`` answers at most 100 runs
# and 25,000 points a request.
BULK_RUNS, BULK_POINTS = 500, 100_000
SERVER_BULK_RUNS, SERVER_BULK_POINTS = 100, 25_000
SERVER_BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"  # MLflow's UI reads its charts here
HISTORY_THREADS = 8  # concurrent requests where the store has no bulk read


def metric_history(client: Any, run_id: str, key: str) -> Curve:
    """``(steps, values)`` of one metric: its latest attempt, in step order.

    Points are taken in the order they were logged, so a trial restored from a checkpoint
    contributes only the curve it finished with (``convergence.latest_attempt``).
    """
    return _latest_curve(client.get_metric_history(run_id, key))


def metric_histories(client: Any, wanted: Iterable[Tuple[str, str]]) -> Dict[Tuple[str, str], Curve]:
    """``metric_history`` of each ``(run_id, key)``, read a key at a time for many runs.

    A sweep's report needs a few histories of each of its trials: one request per history
    was most of the time of a 1,000-trial report. SQL stores answer ``get_metric_history_bulk``,
    an ``mlflow server`` the same through its ``get-history-bulk`` endpoint; other stores (or
    a server without it) one request per history, a few at a time.
    """
    runs_by_key: Dict[str, Dict[str, None]] = {}  # ordered sets
    for run_id, key in wanted:
        runs_by_key.setdefault(key, {})[run_id] = None
    curves = {}
    for key, runs in runs_by_key.items():
        run_ids = list(runs)
        with cyclic_gc_paused():
            logged = _logged_points(client, run_ids, key)
        curves.update({(run_id, key): _latest_curve(logged.get(run_id, [])) for run_id in run_ids})
    return curves


def _latest_curve(logged: Sequence[Any]) -> Curve:
    ordered = sorted(logged, key=lambda m: (m.timestamp, m.step))
    points = latest_attempt([(float(m.step), float(m.value)) for m in ordered])
    return [s for s, _ in points], [v for _, v in points]


def _logged_points(client: Any, run_ids: List[str], key: str) -> Dict[str, List[Any]]:
    """Every logged point of ``key`` per run, each run's in its store's order (time, step, value)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.rest_store import RestStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if hasattr(store, "get_metric_history_bulk"):

        def sql_page(ids: List[str], points: int) -> List[Any]:
            return store.get_metric_history_bulk(run_ids=ids, metric_key=key, max_results=points)

        return _bulk_points(client, sql_page, run_ids, key, BULK_RUNS, BULK_POINTS)
    if isinstance(store, RestStore):
        try:
            server_page = functools.partial(_server_bulk_page, store, key)
            return _bulk_points(client, server_page, run_ids, key, SERVER_BULK_RUNS, SERVER_BULK_POINTS)
        except (MlflowException, ValueError):  # no such endpoint (or not JSON): one request per run
            pass
    with ThreadPoolExecutor(HISTORY_THREADS) as pool:
        return dict(zip(run_ids, pool.map(lambda run_id: client.get_metric_history(run_id, key), run_ids)))


def _bulk_points(
    client: Any, read: Callable[[List[str], int], List[Any]], run_ids: List[str], key: str, runs: int, points: int
) -> Dict[str, List[Any]]:
    """Pages of ``read(run_ids, points)``: at most ``points`` rows ordered by run, so a full page
    holds all the points of each of its runs but the last, which the next request reads again."""
    found: Dict[str, List[Any]] = {}
    for start in range(0, len(run_ids), runs):
        pending = run_ids[start : start + runs]
        while pending:
            rows = read(pending, points)
            page: Dict[str, List[Any]] = {}
            for row in rows:
                page.setdefault(row.run_id, []).append(row)
            if len(rows) < points:
                found.update(page)
                break
            cut = rows[-1].run_id
            del page[cut]
            if not page:  # one run has more points than a page holds
                page[cut] = client.get_metric_history(cut, key)
            found.update(page)
            pending = [run_id for run_id in pending if run_id not in page]
    return found


def _server_bulk_page(store: Any, key: str, run_ids: List[str], points: int) -> List[Any]:
    """One page of an ``mlflow server``'s ``get-history-bulk`` (its answer is ordered by run)."""
    from mlflow.entities import Metric
    from mlflow.entities.metric import MetricWithRunId
    from mlflow.utils.rest_utils import http_request_safe

    params = {"run_id": run_ids, "metric_key": key, "max_results": points}
    response = http_request_safe(store.get_host_creds(), SERVER_BULK_ENDPOINT, "GET", params=params)
    return [
        MetricWithRunId(Metric(m["key"], m["value"], m["timestamp"], m["step"]), m["run_id"])
        for m in response.json().get("metrics", [])
    ]


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text not in (None, "None") else None
    except ValueError:
        return None
