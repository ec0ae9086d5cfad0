"""The sweep's progress on the console: one line above Tune's trial table.

``SweepProgressReporter`` shows trials done/total, env steps done/total, time elapsed and an
estimate of the time left.
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


def make_progress_reporter(*, total: int, steps_per_trial: int, steps_key: str, **kwargs: Any) -> Any:
    """A Tune ``CLIReporter`` whose status block starts with ``progress_line``."""
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
            return super()._progress_str(trials, done, line, *sys_info, **kw)

    return SweepProgressReporter(**kwargs)
