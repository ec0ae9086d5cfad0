"""How qeu-tune talks to the user: one-paragraph errors (exit 2) and a console without known noise.

At the default verbosity (``verbose=1``) ``qeu-tune`` drops three kinds of lines that say
nothing about the sweep:

* Ray's "Token authentication is enabled for this Ray cluster" warning (printed by every
  ``ray.init``; authentication stays on, only the message is filtered);
* MLflow's "Creating initial MLflow database tables..." / "Updating database tables"
  (a new SQLite store) and Alembic's migration chatter;
* Matplotlib's "building the font cache" notice.
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
