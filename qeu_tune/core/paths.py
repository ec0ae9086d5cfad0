"""Default locations, resolved once on the driver to absolute paths.

Everything qeu-tune writes by default lives under one directory, ``QEU_TUNE_HOME``
(default ``~/.qeu-tune``): the MLflow SQLite database, Ray Tune's results and Hydra's
run directories. Nothing depends on the working directory, which Hydra or Ray may change,
except the default *user config directory* (``./conf``; see ``user_config_dir``).

Configs: ``CONF_DIR`` holds the shipped Hydra configs. In a wheel they are package data
(``qeu_tune/conf/``); in a source checkout ``qeu_tune/conf`` is a symlink to the
repository's top-level ``conf/``, so an editable install reads that directory in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

HOME_ENV_VAR = "QEU_TUNE_HOME"
CONFIG_DIR_ENV_VAR = "QEU_TUNE_CONFIG_DIR"  # the user's own config directory


def _packaged_conf_dir() -> Path:
    here = Path(__file__).resolve().parent
    inside = here / "conf"
    if (inside / "config.yaml").is_file():
        return inside.resolve()  # wheel: package data; checkout: the symlink's target
    return (here.parent / "conf").resolve()  # a checkout without the symlink


CONF_DIR = _packaged_conf_dir()


def user_config_dir(*, create: bool = False) -> Optional[Path]:
    """The user's own config directory, whose files join the shipped config groups.

    ``$QEU_TUNE_CONFIG_DIR`` (set by ``qeu-tune --config-dir DIR`` too), else ``./conf``
    of the current directory. Without ``create``, ``None`` when that directory does not
    exist or is the shipped ``CONF_DIR`` itself (a source checkout's working directory).
    With ``create`` (``qeu-tune best`` writes there) it is created and always returned.
    """
    configured = os.environ.get(CONFIG_DIR_ENV_VAR)
    path = Path(configured).expanduser().resolve() if configured else (Path.cwd() / "conf").resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
        return path
    if not path.is_dir() or path == CONF_DIR:
        return None
    return path


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


def artifact_location_for(tracking_uri: str) -> Optional[str]:
    """Artifacts next to a SQLite/file store (MLflow's default is ./mlruns: cwd-dependent)."""
    if urlparse(tracking_uri).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        return (qeu_home() / "mlartifacts").as_uri()
    if urlparse(tracking_uri).scheme != "sqlite":
        return None  # a file store keeps artifacts in its own tree; a server decides
    db_path = Path(unquote(tracking_uri[len("sqlite:///") :]))
    return (db_path.parent / "mlartifacts").resolve().as_uri()
