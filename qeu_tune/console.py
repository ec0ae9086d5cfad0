"""A quiet console: known noise filtered from the log, and a sweep progress line.

At the default verbosity (``verbose=1``) ``qeu-tune`` drops three kinds of lines that say
nothing about the sweep:

* Ray's "Token authentication is enabled for this Ray cluster" warning (printed by every
  ``ray.init``; authentication stays on, only the message is filtered);
* MLflow's "Creating initial MLflow database tables..." / "Updating database tables"
  (a new SQLite store) and Alembic's migration chatter;
* Matplotlib's "building the font cache" notice.

``SweepProgressReporter`` adds one line above Tune's trial table: trials done/total, env
steps done/total, time elapsed and an estimate of the time left.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any, Iterable, List, Mapping, Optional

# logger name -> message prefixes dropped at the default verbosity
NOISE: Mapping[str, tuple] = {
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled",),
    "mlflow.store.db.utils": ("Creating initial MLflow database tables", "Updating database tables"),
    "alembic.runtime.migration": ("Context impl", "Will assume", "Running upgrade"),
    "matplotlib.font_manager": ("Matplotlib is building the font cache",),
}


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: Iterable[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: let it through
            return True
        return not message.lstrip().startswith(self.prefixes)


_INSTALLED: List[tuple] = []


def quiet_console() -> None:
    """Installs the filters (idempotent)."""
    if _INSTALLED:
        return
    for name, prefixes in NOISE.items():
        logger = logging.getLogger(name)
        flt = _DropPrefixes(prefixes)
        logger.addFilter(flt)
        _INSTALLED.append((logger, flt))


def loud_console() -> None:
    """Removes the filters again (``verbose=2``; tests)."""
    while _INSTALLED:
        logger, flt = _INSTALLED.pop()
        logger.removeFilter(flt)


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def progress_line(trials: Iterable[Any], *, total_trials: Optional[int], steps_per_trial: int,
                  elapsed_s: float, steps_key: str) -> str:
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
    left = f"~{_clock(elapsed_s * (1 - share) / share)} left" if 0 < share < 1 else ("done" if share >= 1 else "time left: n/a")
    return (f"Progress: {done_trials}/{total} trials done | {done_steps:,}/{total_steps:,} env steps "
            f"({share:.0%}) | elapsed {_clock(elapsed_s)} | {left}")


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
            line = progress_line(trials, total_trials=total, steps_per_trial=steps_per_trial,
                                 elapsed_s=time.time() - self._qeu_start, steps_key=steps_key)
            return super()._progress_str(trials, done, line, *sys_info, **kw)

    return SweepProgressReporter(**kwargs)
