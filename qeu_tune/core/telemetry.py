"""Third-party usage telemetry stays off unless the user turns it on.

MLflow 3 sends usage records (and fetches a config from its telemetry host) from every
process that calls it, and wraps each client call to build the record; Ray reports usage
stats from the clusters it starts. A sweep's driver, its workers, ``qeu-tune server`` and
the tests should talk only to the tracking store and the Ray cluster they were given. A
value the user set (``MLFLOW_DISABLE_TELEMETRY=false``, ``RAY_USAGE_STATS_ENABLED=1``,
``DO_NOT_TRACK``) is kept.
"""

from __future__ import annotations

import os

OFF_BY_DEFAULT = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}


def keep_usage_telemetry_off() -> None:
    """Sets the opt-out variables this process and its children read, unless already set."""
    for name, value in OFF_BY_DEFAULT.items():
        os.environ.setdefault(name, value)
