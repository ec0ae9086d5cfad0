"""Is the outside world a sweep needs there: the tracking store, the storage path, the Ray cluster.

Short timeouts, loopback-friendly, and nothing is created: a refused connection or one
unanswered for ``NETWORK_TIMEOUT_S`` means unreachable, and the error names the fix.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import qeu_home, resolve_tracking_uri
from qeu_tune.core.redact import redact_uri

# Connecting to a tracking server, database or Ray cluster: refused at once, or unanswered
# for this long, means unreachable.
NETWORK_TIMEOUT_S = 2.0
OFFLINE_HINT = "or record the sweep offline with tracking.mode=offline and upload it later"


# ----------------------------------------------------------------------------- outside world


def _tcp_error(host: str, port: int, timeout: float) -> Optional[str]:
    """None if a TCP connection to ``host:port`` opens within ``timeout``, else why not.

    Runs in a daemon thread so a slow DNS lookup cannot stretch the timeout either.
    """
    outcome: Dict[str, str] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["ok"] = ""
        except OSError as err:
            outcome["error"] = err.strerror or str(err) or type(err).__name__

    thread = threading.Thread(target=attempt, daemon=True, name="qeu-tune-reachability")
    thread.start()
    thread.join(timeout + 0.5)
    if "ok" in outcome:
        return None
    return outcome.get("error") or f"no answer within {timeout:g} s"


def _probe_writable(directory: Path) -> Optional[str]:
    """None if a new directory can be created in ``directory`` (removed again at once)."""
    try:
        probe = tempfile.mkdtemp(prefix=".qeu-tune-write-check-", dir=directory)
    except OSError as err:
        return err.strerror or str(err)
    try:
        os.rmdir(probe)
    except OSError:
        pass
    return None


def _writable_dir_error(path: Path) -> Optional[str]:
    """Why ``path`` cannot be used as (or created as) a directory, or None. Creates nothing."""
    path = path.expanduser()
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        error = _probe_writable(path)
        return None if error is None else f"cannot write in {path} ({error})"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory, so {path} cannot be created"
    error = _probe_writable(ancestor)
    return None if error is None else f"cannot create {path}: {ancestor} does not allow it ({error})"


def check_storage_path(configured: Optional[str]) -> None:
    """The Ray Tune storage path can be created or written to (nothing is left behind).

    Args:
        configured: ``cluster.storage_path`` (None: ``$QEU_TUNE_HOME/ray_results``).
            A ``scheme://`` URI other than ``file://`` (s3, gs, ...) is not checked.

    Raises:
        ConfigError: Not a directory, or not writable.
    """

    if configured and "://" in configured:
        parts = urlsplit(configured)
        if parts.scheme != "file":
            return
        path = Path(parts.path)
    else:
        path = Path(configured).expanduser() if configured else qeu_home() / "ray_results"
    error = _writable_dir_error(path.absolute())
    if error:
        shown = f"cluster.storage_path={configured!r}" if configured else f"the default storage path {path}"
        raise ConfigError(
            f"{shown}: Ray Tune cannot store results there: {error}. Use a writable "
            "directory, e.g. cluster.storage_path=~/ray_results, or leave it unset for "
            "$QEU_TUNE_HOME/ray_results (set QEU_TUNE_HOME to move it)."
        )


# SQLAlchemy driver name -> (module it imports, pip package). Which driver a URI means is
# SQLAlchemy's decision (plain postgresql:// is psycopg 3 with SQLAlchemy 2.1).
_DB_DRIVERS: Dict[str, Tuple[str, str]] = {
    "psycopg": ("psycopg", "psycopg[binary]"),
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "pg8000": ("pg8000", "pg8000"),
    "mysqldb": ("MySQLdb", "mysqlclient"),
    "pymysql": ("pymysql", "PyMySQL"),
    "pyodbc": ("pyodbc", "pyodbc"),
    "pymssql": ("pymssql", "pymssql"),
}
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_UNCHECKED_SCHEMES = ("databricks", "databricks-uc", "uc")


def check_tracking_uri(uri: str, *, timeout: float = NETWORK_TIMEOUT_S) -> None:
    """The MLflow tracking URI can be used: reachable, its driver installed, writable.

    * ``http(s)://``: a TCP connection to the server opens within ``timeout``.
    * ``postgresql://``, ``mysql://``, ``mssql://`` (``+driver`` too): the driver module
      imports (found, not imported) and the database port answers within ``timeout``.
    * ``sqlite:///path`` and plain paths / ``file://``: the file's directory can be
      created or written to (nothing is created).
    * ``databricks``/``uc`` are not checked; other schemes must be registered by an MLflow
      plugin (entry point ``mlflow.tracking_store``).

    Messages show the URI with its password replaced by ``***``.

    Raises:
        ConfigError: One paragraph naming the URI and the fix.
    """
    uri = str(uri).strip()
    shown = redact_uri(uri)
    if uri.split(":", 1)[0].lower() in _UNCHECKED_SCHEMES:
        return  # "databricks", "databricks://profile", "uc:...": not checked here
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ("file" if uri.startswith("file:") else "")
    if scheme in ("", "file"):
        path = Path(urlsplit(uri).path if scheme == "file" else uri)
        error = _writable_dir_error(path.absolute())
        if error:
            raise ConfigError(
                f"tracking.uri={shown}: MLflow cannot write its file store there: {error}. "
                "Use a writable directory, or leave tracking.uri unset for "
                "sqlite:///$QEU_TUNE_HOME/mlflow.db."
            )
        return
    if scheme == "sqlite":
        path_text = uri.split(":///", 1)[1] if ":///" in uri else ""
        if path_text in ("", ":memory:"):
            return
        path = Path(path_text).expanduser().absolute()
        if path.exists() and not path.is_file():
            error: Optional[str] = f"{path} exists and is not a file"
        elif path.exists():
            error = None if os.access(path, os.W_OK) else f"{path} is read-only"
        else:
            error = _writable_dir_error(path.parent)
        if error:
            raise ConfigError(
                f"tracking.uri={shown}: MLflow cannot create or write the SQLite database: "
                f"{error}. Point it at a writable location (sqlite:////absolute/path/mlflow.db) "
                "or leave tracking.uri unset for sqlite:///$QEU_TUNE_HOME/mlflow.db."
            )
        return
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            host, port = None, None
        if not host or port is None:
            raise ConfigError(f"tracking.uri={shown} is not a valid URL; e.g. http://127.0.0.1:5000.")
        error = _tcp_error(host, port, timeout)
        if error:
            raise ConfigError(
                f"tracking.uri={shown}: cannot reach the MLflow tracking server at "
                f"{host}:{port} ({error}). Start it (`qeu-tune ui`, or `mlflow server --host "
                f"{host} --port {port}`), fix the URI, use the local store (tracking=local, "
                f"no tracking.uri), {OFFLINE_HINT}."
            )
        return
    dialect = scheme.split("+", 1)[0]
    if dialect in _DB_PORTS:
        driver = _sqlalchemy_driver(scheme)
        module, package = _DB_DRIVERS.get(driver, (driver, driver))
        if module and importlib.util.find_spec(module) is None:
            default = "" if "+" in scheme else f" (SQLAlchemy's default driver for {scheme}://)"
            if dialect == "postgresql":
                fix = (
                    f"pip install 'qeu-tune[server]' (psycopg 3) and write the URI as "
                    f"{redact_uri('postgresql+psycopg://' + uri.split('://', 1)[1])}, or "
                    "pip install psycopg2-binary ('psycopg2') and write postgresql+psycopg2://"
                )
            else:
                fix = f"pip install {package}"
            raise ConfigError(
                f"tracking.uri={shown}: the database driver module {module!r}{default} is not "
                f"installed. Install it: {fix}; or use the local store (tracking=local, no "
                f"tracking.uri), {OFFLINE_HINT}."
            )
        parts = urlsplit(uri)
        try:
            host, port = parts.hostname, parts.port or _DB_PORTS[dialect]
        except ValueError:
            host, port = None, None
        if host:  # no host: a local socket, which the driver finds itself
            error = _tcp_error(host, port, timeout)
            if error:
                raise ConfigError(
                    f"tracking.uri={shown}: cannot reach the {dialect} database at {host}:{port} "
                    f"({error}). Start the database or fix the URI; or use the local store "
                    f"(tracking=local, no tracking.uri), {OFFLINE_HINT}."
                )
        return
    if scheme in _UNCHECKED_SCHEMES or scheme.startswith("databricks") or scheme in _plugin_schemes():
        return
    raise ConfigError(
        f"tracking.uri={shown}: MLflow has no tracking store for the scheme {scheme!r}. Use "
        "http(s)://HOST:PORT (a tracking server), sqlite:////path/mlflow.db, "
        "postgresql+psycopg://USER@HOST/DB, mysql+pymysql://..., a directory path, or "
        "leave tracking.uri unset for sqlite:///$QEU_TUNE_HOME/mlflow.db."
    )


def _sqlalchemy_driver(scheme: str) -> str:
    """The DBAPI driver SQLAlchemy uses for ``dialect[+driver]`` (without importing it)."""
    from sqlalchemy.engine import make_url

    try:
        return str(make_url(f"{scheme}://").get_dialect().driver)
    except Exception:  # noqa: BLE001 - unknown dialect or driver: SQLAlchemy names it at connect
        return scheme.split("+", 1)[-1]


def _plugin_schemes() -> List[str]:
    from importlib.metadata import entry_points

    try:
        return [ep.name for ep in entry_points(group="mlflow.tracking_store")]
    except Exception:  # noqa: BLE001 - broken metadata: no plugins
        return []


_RAY_GCS_PORT = 6379
_RAY_CLIENT_PORT = 10001


def check_ray_address(address: Optional[str], *, timeout: float = NETWORK_TIMEOUT_S) -> None:
    """A Ray address answers, checked with one TCP connection (``ray.init`` itself retries
    an unreachable GCS for minutes before it fails).

    ``None`` and ``local`` start a new local Ray: nothing to check. ``auto`` is checked
    only when ``$RAY_ADDRESS`` names the cluster (otherwise Ray's own lookup fails fast).

    Raises:
        ConfigError: The address does not parse or nothing listens there.
    """
    if address is None or str(address).strip() in ("", "local"):
        return
    text = str(address).strip()
    target = text
    if text == "auto":
        target = os.environ.get("RAY_ADDRESS", "").strip()
        if not target or target in ("auto", "local"):
            return
    if target.startswith("ray://"):
        hostport, default_port, kind = target[len("ray://") :], _RAY_CLIENT_PORT, "Ray Client server"
    elif "://" in target:
        raise ConfigError(
            f"cluster.address={text!r}: unknown address scheme; use 'auto' on a node of a "
            "running cluster, HOST:PORT of its GCS (default port 6379), ray://HOST:10001 for "
            "a Ray Client server, or cluster=local."
        )
    else:
        hostport, default_port, kind = target, _RAY_GCS_PORT, "Ray GCS"
    hostport = hostport.split("/", 1)[0]
    host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ConfigError(
            f"cluster.address={text!r} is not HOST:PORT; use e.g. 10.0.0.5:6379, "
            "ray://10.0.0.5:10001, 'auto', or cluster=local."
        )
    error = _tcp_error(host.strip("[]"), port, timeout)
    if error:
        via = f" (from $RAY_ADDRESS={target!r})" if text == "auto" else ""
        raise ConfigError(
            f"cluster.address={text!r}{via}: no {kind} answers at {host}:{port} ({error}). "
            "Start the cluster (`ray start --head`, then use its address or 'auto' on that "
            "node), use ray://HOST:10001 for a Ray Client server, or run locally with "
            "cluster=local."
        )


def check_outside_world(config: Mapping[str, Any]) -> None:
    """Tracking URI, storage path and Ray address of a composed config.

    ``tracking.mode=offline`` (when that setting exists) skips the tracking check: such a
    sweep does not talk to the tracking store while it runs.
    """

    tracking = config.get("tracking") or {}
    if tracking.get("mode", "online") not in ("online", "offline"):
        raise ConfigError(
            f"tracking.mode={tracking.get('mode')!r} is not a tracking mode; use tracking.mode=online "
            "(write to MLflow as the sweep runs) or tracking.mode=offline (journal only; `qeu-tune sync` later)."
        )
    if tracking.get("writer", "process") not in ("process", "thread"):
        raise ConfigError(
            f"tracking.writer={tracking.get('writer')!r} is not a writer; use tracking.writer=process "
            "(MLflow's writes run in a process of their own, the default) or tracking.writer=thread "
            "(in the sweep's driver process)."
        )
    if tracking.get("mode") != "offline":
        check_tracking_uri(resolve_tracking_uri(tracking.get("uri")))
    cluster = config.get("cluster") or {}
    check_storage_path(cluster.get("storage_path"))
    check_ray_address(cluster.get("address"))
