"""A sweep's start-up: Ray, the MLflow tracker and the imports that can overlap ``ray.init``.

``ray.init`` waits seconds for Ray's daemons with the driver idle, so the tracker opens (MLflow's
import and store) and Tune's and the report's imports load in background threads meanwhile.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Mapping

from qeu_tune.core.errors import ConfigError
from qeu_tune.engine.plan import SweepPlan
from qeu_tune.tracking.tracker import Tracker


def init_ray(cluster: Mapping[str, Any], verbose: int) -> None:
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": verbose >= 2, "logging_level": logging.INFO if verbose >= 2 else logging.WARNING}
    if verbose < 2:
        quiet_node_deaths()
    if cluster.get("runtime_env"):  # code, files, env vars for every worker (README: Run on a cluster)
        quiet["runtime_env"] = dict(cluster["runtime_env"])
    if not cluster.get("address") and os.environ.get("RAY_ADDRESS"):  # e.g. under `ray job submit`
        cluster = {**cluster, "address": os.environ["RAY_ADDRESS"]}
    if cluster.get("address"):
        _use_ray_token_for_client(str(cluster["address"]))
        try:
            ray.init(address=cluster["address"], **quiet)
        except Exception as err:  # noqa: BLE001 - Ray raises several types for this
            raise ConfigError(
                f"cluster.address={cluster['address']!r}: could not connect to Ray "
                f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}). "
                "Use 'auto' on a node of a running cluster (`ray start --head`), "
                "ray://HOST:10001 for a Ray Client server, or cluster=local."
            ) from None
    else:
        ray.init(
            num_cpus=cluster.get("num_cpus") or os.cpu_count(),
            include_dashboard=False,
            # Ray prestarts one idle worker per CPU for the first driver, but Tune gives
            # its trial actors their own runtime_env (which their env runners inherit), so
            # those never run a trial: they only take CPU while the sweep starts (measured:
            # 4 worker processes started, 2 used).
            _system_config={"prestart_worker_first_driver": False},
            **quiet,
        )


# What Ray's GCS sends every driver when a node dies, printed by the driver's error listener
# whatever log_to_driver says: the raylet's last 20 log lines ([state-dump] ...) and the health
# checker's verdict. The trial callback says which trial lost its node, and what Tune does
# about it, in one line (qeu_tune/engine/failures.py); verbose=2 shows Ray's text as well.
NODE_DEATH_MESSAGES = ("Raylet is terminated", "The node with node id")


def quiet_node_deaths() -> None:
    """Drops Ray's node-death messages (``NODE_DEATH_MESSAGES``) from this driver's console."""
    try:  # private in Ray 2.60: the function the error listener thread prints with
        from ray._private import worker
    except ImportError:
        return
    printer = worker.print_to_stdstream
    if getattr(printer, "qeu_quiet", False):
        return

    def print_to_stdstream(data: Dict[str, Any], ignore_prefix: bool) -> None:
        first = str((data.get("lines") or [""])[0]).lstrip()
        if data.get("pid") == "raylet" and first.startswith(NODE_DEATH_MESSAGES):
            return
        printer(data, ignore_prefix)

    print_to_stdstream.qeu_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


def _use_ray_token_for_client(address: str) -> None:
    """Ray Client sends the cluster's auth token only when token mode is on in this process.

    Ray 2.60 clusters require a token by default; a local ``ray.init()`` finds it in
    ``~/.ray/auth_token`` by itself, a ``ray://`` client does not. This does what Ray
    does for local clusters (an explicit ``RAY_AUTH_MODE`` is respected).
    """
    if not address.startswith("ray://"):
        return
    try:  # private in Ray 2.60; without it the connection fails with a clear error below
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def start_in_background(fn: Callable[[], Any], *, name: str) -> Future:
    """``fn()`` in one daemon-like worker thread; the caller joins it with ``.result()``."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        return executor.submit(fn)
    finally:
        executor.shutdown(wait=False)  # the thread ends with fn; nothing else is submitted


def discard_tracker(opening: Future) -> None:
    """The sweep gave up before using the tracker: close it now or when it arrives."""
    opening.add_done_callback(lambda done: done.exception() is None and _close_quietly(done.result()))


def open_tracker(plan: SweepPlan) -> Any:

    tracking_cfg = plan.config["tracking"]
    return Tracker(
        tracking_uri=plan.tracking_uri,
        experiment=tracking_cfg["experiment"],
        mode=tracking_cfg.get("mode", "online"),
        writer=tracking_cfg.get("writer", "process"),
    )


def open_tracker_warm_tune(plan: SweepPlan) -> Any:
    """``open_tracker(plan)``, then the modules Tune imports only when ``fit()`` starts (its
    CSV/JSON loggers: ~0.2 s), so they load while ray.init waits; then starts the report's
    imports (``warm_report_imports``)."""
    tracker = open_tracker(plan)
    try:
        import ray.tune.logger  # noqa: F401 - loaded for later, while ray.init waits
        import ray.tune.utils.callback  # noqa: F401 - loaded for later, while ray.init waits
    except Exception:  # noqa: BLE001 - only a head start; Tune imports them again
        pass
    warm_report_imports()  # ray.init is usually still waiting: the cores are idle now
    return tracker


def _close_quietly(tracker: Any) -> None:
    """A tracker opened for a sweep that did not start (no run in it): close it, never raise."""
    try:
        tracker.close(timeout_s=5)
    except Exception:  # noqa: BLE001 - the sweep's own error is the one to report
        pass


@functools.cache  # once per process: a resumed sweep may call it again
def warm_report_imports() -> None:
    """Imports the end-of-sweep report's modules (pandas, scipy, matplotlib) in the background.

    A daemon thread, started once per process: the ~1 s of imports overlaps ``ray.init``
    (a new sweep) or the trials (``resume``) instead of delaying the sweep's end.
    """

    def _import() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")  # what analysis.write_plots uses; no display needed
            import matplotlib.pyplot  # noqa: F401 - a head start for the report's plots

            import qeu_tune.analysis  # noqa: F401 - a head start for the report
        except Exception:  # noqa: BLE001 - only a head start; the report imports again
            pass

    threading.Thread(target=_import, name="qeu-warm-report-imports", daemon=True).start()


def quiet_tune() -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table shows our columns
    # Frequent trial checkpoints (PBT, checkpoint_every=1) are intended, not a bottleneck.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))
