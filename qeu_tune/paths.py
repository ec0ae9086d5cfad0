"""Default locations, resolved once on the driver to absolute paths.

Everything qeu-tune writes by default lives under one directory, ``QEU_TUNE_HOME``
(default ``~/.qeu-tune``): the MLflow SQLite database, Ray Tune's results and Hydra's
run directories. Nothing depends on the working directory, which Hydra or Ray may change.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV_VAR = "QEU_TUNE_HOME"
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def qeu_home() -> Path:
    """The directory for qeu-tune's generated state ($QEU_TUNE_HOME or ~/.qeu-tune)."""
    return Path(os.environ.get(HOME_ENV_VAR) or Path.home() / ".qeu-tune").expanduser().resolve()


def default_tracking_uri() -> str:
    """``sqlite:///<QEU_TUNE_HOME>/mlflow.db``: MLflow's UI and API read it directly."""
    return f"sqlite:///{qeu_home() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None) -> str:
    """MLflow's convention, plus ours: config override > $MLFLOW_TRACKING_URI > local SQLite."""
    if configured:
        return configured
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def resolve_storage_path(configured: str | None) -> str:
    """Absolute Ray Tune storage path (a ``scheme://`` URI is passed through)."""
    if configured and "://" in configured:
        return configured
    path = Path(configured).expanduser().resolve() if configured else qeu_home() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
