"""Tune's process-wide knobs: environment variables Tune reads when ``fit()`` starts, set
around one ``fit()`` (a new sweep's or ``qeu-tune resume``'s) and restored after it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

from qeu_tune.engine.plan import SweepPlan
from qeu_tune.engine.trainable import trial_resources

PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"  # Tune's own knob, read when fit() starts


@contextmanager
def pending_trials_limit(plan: SweepPlan, cluster_cpus: float) -> Iterator[Optional[int]]:
    """Lets Tune start as many trials at once as the cluster has room for.

    With a searcher (random, TPE) Tune keeps only one trial pending, so the first wave's
    actors start one after another, each once the previous one has started (~1.5 s each,
    measured on 2 cores; by that rate a 32-CPU cluster's last slot would fill ~45 s late). Allowing
    as many pending trials as there are trial slots starts them together; the searcher
    then suggests at most that many configurations ahead of the results. Grid and PBT use
    Tune's variant generator, which already allows many; a value the user set in the
    environment is kept.
    """
    if plan.search.search_alg is None or PENDING_TRIALS_ENV in os.environ:
        yield None
        return

    per_trial = trial_resources(plan.config).required_resources.get("CPU", 1) or 1
    slots = max(1, int(cluster_cpus // per_trial))
    cap = plan.config["search"].get("max_concurrent_trials")
    limit = min(slots, int(cap)) if cap else slots
    os.environ[PENDING_TRIALS_ENV] = str(limit)
    try:
        yield limit
    finally:
        os.environ.pop(PENDING_TRIALS_ENV, None)


AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"  # Tune's own knob, read when fit() starts


def file_loggers() -> List[Any]:
    """The per-trial files Tune writes by default, less TensorBoard's (see ``no_tensorboard_files``)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [CSVLoggerCallback(), JsonLoggerCallback()]


@contextmanager
def no_tensorboard_files() -> Iterator[None]:
    """Keeps Tune from adding its TensorBoard logger (the sweep passes ``file_loggers``).

    MLflow already records every result. TensorBoard's writer costs the driver a process
    queue and a file flush per result: ~15% of the driver's samples in a 1,000-trial sweep
    (docs/benchmarks.md, scale). ``result.json`` and ``progress.csv`` stay. A value the user
    set in the environment is kept.
    """
    if AUTO_LOGGERS_ENV in os.environ:
        yield
        return
    os.environ[AUTO_LOGGERS_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(AUTO_LOGGERS_ENV, None)
