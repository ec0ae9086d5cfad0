"""The sweep's progress on the console: one line above Tune's trial table.

``SweepProgressReporter`` shows trials done/total, env steps done/total, time elapsed and an
estimate of the time left. Below verbose=2 it leaves out Tune's errored-trials table, which
every status report would repeat after a single retry: each retry and failure has its own
line instead (``qeu_tune.engine.failures``).
"""

from __future__ import annotations

import datetime
import time
from typing import Any, Iterable, Mapping, Optional


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def progress_line(
    trials: Iterable[Any], *, total_trials: Optional[int], steps_per_trial: int, elapsed_s: float, steps_key: str
) -> str:
    """``Progress: 1/4 trials done | 2,500/8,000 env steps (31%) | elapsed 0:00:40 | ~0:01:28 left``.

    A finished trial (terminated or errored) counts with its whole budget, a running one
    with the env steps of its last result.
    """
    trials = list(trials)
    total = max(int(total_trials or 0), len(trials))
    done_trials = sum(1 for t in trials if getattr(t, "status", "") in ("TERMINATED", "ERROR"))
    done_steps = 0
    for t in trials:
        if getattr(t, "status", "") in ("TERMINATED", "ERROR"):
            done_steps += steps_per_trial
        else:
            result = getattr(t, "last_result", None) or {}
            done_steps += min(int(result.get(steps_key) or 0), steps_per_trial)
    total_steps = total * steps_per_trial
    share = done_steps / total_steps if total_steps else 0.0
    left = (
        f"~{_clock(elapsed_s * (1 - share) / share)} left"
        if 0 < share < 1
        else ("done" if share >= 1 else "time left: n/a")
    )
    return (
        f"Progress: {done_trials}/{total} trials done | {done_steps:,}/{total_steps:,} env steps "
        f"({share:.0%}) | elapsed {_clock(elapsed_s)} | {left}"
    )


def total_trials(param_space: Mapping[str, Any], num_samples: int) -> int:
    """Trials Tune will run: ``num_samples`` times every grid_search combination."""
    total = max(int(num_samples), 1)
    for value in param_space.values():
        if isinstance(value, Mapping) and "grid_search" in value:
            total *= max(len(value["grid_search"]), 1)
    return total


# Tune's last status table lists every trial (10,000 lines for a 10,000-trial sweep); past this
# many it is cut like the live tables: the sweep's summary ranks the configurations below it.
FULL_FINAL_TABLE = 100

ERROR_TABLE = "Number of errored trials:"  # how Tune's errored-trials table starts (Ray 2.60)


def without_error_table(status: str) -> str:
    """Tune's status block without its errored-trials table (always the block's last part)."""
    cut = status.find(ERROR_TABLE)
    return status if cut < 0 else status[:cut]


def make_progress_reporter(
    *, total: int, steps_per_trial: int, steps_key: str, error_table: bool = True, **kwargs: Any
) -> Any:
    """A Tune ``CLIReporter`` whose status block starts with ``progress_line``, whose last table
    lists every trial only up to ``FULL_FINAL_TABLE`` trials, and which (with
    ``error_table=False``) leaves out Tune's errored-trials table: ``without_error_table``."""
    from ray.tune import CLIReporter

    class SweepProgressReporter(CLIReporter):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self._qeu_start = time.time()

        def _progress_str(self, trials: Any, done: bool, *sys_info: str, **kw: Any) -> str:
            line = progress_line(
                trials,
                total_trials=total,
                steps_per_trial=steps_per_trial,
                elapsed_s=time.time() - self._qeu_start,
                steps_key=steps_key,
            )
            full = done and len(trials) <= FULL_FINAL_TABLE
            status = super()._progress_str(trials, full, line, *sys_info, **kw)
            return status if error_table else without_error_table(status)

    return SweepProgressReporter(**kwargs)
