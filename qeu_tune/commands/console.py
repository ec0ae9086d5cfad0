"""How qeu-tune talks to the user: one-paragraph errors (exit 2) and a console without known noise.

At the default verbosity (``verbose=1``) ``qeu-tune`` drops lines that say nothing about the
sweep, or nothing that qeu-tune does not say more briefly:

* Ray's "Token authentication is enabled for this Ray cluster" warning (printed by every
  ``ray.init``; authentication stays on, only the message is filtered);
* MLflow's "Creating initial MLflow database tables..." / "Updating database tables"
  (a new SQLite store) and Alembic's migration chatter;
* Matplotlib's "building the font cache" notice;
* Ray Tune's "Experiment has been interrupted ... Resume experiment with: Tuner.restore(...)"
  (``ray.tune.tune``): a Python API call that would bypass qeu-tune's tracking; the summary
  prints the command that resumes the sweep (``qeu-tune resume``) instead;
* Ray Tune's traceback of a failed trial ("Trial task failed for trial ..."): one line per
  retry or failure replaces it (``qeu_tune.engine.failures``; Ray's own node-death messages
  are dropped where Ray starts, ``qeu_tune.engine.startup.quiet_node_deaths``).
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, List, Mapping

from qeu_tune.core.redact import redact

EXIT_CONFIG_ERROR = 2


def fail(message: str) -> None:
    """Prints a one-paragraph error and exits with code 2."""
    print(f"qeu-tune: error: {redact(message)}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)


# logger name -> message prefixes dropped at the default verbosity
NOISE: Mapping[str, tuple] = {
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled",),
    "mlflow.store.db.utils": ("Creating initial MLflow database tables", "Updating database tables"),
    "alembic.runtime.migration": ("Context impl", "Will assume", "Running upgrade"),
    "matplotlib.font_manager": ("Matplotlib is building the font cache",),
    "ray.tune.tune": ("Experiment has been interrupted, but the most recent state was saved",),
    # A trial's traceback: the error file and the run's qeu.error tags keep it, and the tracking
    # callback logs one line per retry or failure (qeu_tune/engine/failures.py).
    "ray.tune.execution.tune_controller": ("Trial task failed for trial",),
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
