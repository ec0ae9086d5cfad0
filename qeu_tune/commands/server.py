"""``qeu-tune server``: an MLflow tracking server on a local PostgreSQL database.

SQLite serialises writers; a tracking server on PostgreSQL takes many concurrent sweeps and
UI readers. This command

1. creates a PostgreSQL cluster in ``DATA_DIR/pgdata`` on first use (Debian's
   ``postgresql`` package: ``initdb``/``pg_ctl`` from ``/usr/lib/postgresql/*/bin``), with a
   random password for the database user ``mlflow`` (kept in ``DATA_DIR/db_password``,
   mode 600) and password authentication on 127.0.0.1 only;
2. starts it on ``--db-port`` (TCP on 127.0.0.1, no Unix socket) and creates the database
   ``mlflow`` on first use;
3. runs ``mlflow server`` on it with artifacts in ``DATA_DIR/artifacts``, bound to 127.0.0.1
   unless ``--host`` says otherwise;
4. stops both on Ctrl-C / SIGTERM.

``DATA_DIR`` defaults to ``$QEU_TUNE_HOME/server``. PostgreSQL refuses to run as root: as
root, the cluster runs as the ``postgres`` user (created by the Debian package); when that
user cannot reach ``DATA_DIR`` (e.g. under ``/root``), the cluster lives in
``/var/lib/postgresql/qeu-tune/<id>`` and ``DATA_DIR/pgdata`` is a symlink to it.
The password never appears on a command line or in printed output (``PGPASSWORD`` is
passed in the environment of the MLflow server only).

The module stays whole: the PostgreSQL cluster, the MLflow server in front of it and the
helper that starts one for tests are one service's start and stop.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from qeu_tune.core import processes

DB_USER = "mlflow"
DB_NAME = "mlflow"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_DB_PORT = 5433  # not 5432: leaves the system's own PostgreSQL alone
SERVICE_USER = "postgres"
INSTALL_HINT = "apt-get install postgresql"


class ServerError(RuntimeError):
    """A clear, one-paragraph reason the server could not start."""


def postgres_bindir() -> Optional[Path]:
    """The directory with ``initdb`` and ``pg_ctl`` (the newest installed version), or None."""
    found = shutil.which("pg_ctl")
    if found and Path(found).with_name("initdb").exists():
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
    )
    return Path(candidates[-1]).parent if candidates else None


def default_data_dir() -> Path:
    from qeu_tune.core.paths import qeu_home

    return qeu_home() / "server"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _service_ids() -> Optional[tuple]:
    """(uid, gid) to run PostgreSQL as when we are root; None when we are not root."""
    if not _is_root():
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ServerError(
            f"running as root, but there is no '{SERVICE_USER}' user to run PostgreSQL as "
            f"(initdb refuses root). Install Debian's package ({INSTALL_HINT}), which creates it, "
            "or run qeu-tune server as a normal user."
        ) from None
    return entry.pw_uid, entry.pw_gid


def _as_service(ids: Optional[tuple]) -> Dict[str, object]:
    """subprocess kwargs that drop root to the service user."""
    if ids is None:
        return {}
    return {"user": ids[0], "group": ids[1], "extra_groups": []}


def _reachable_by(ids: tuple, path: Path) -> bool:
    """Whether the service user can search every directory above ``path``."""
    probe = subprocess.run(["test", "-x", str(path)], **_as_service(ids), capture_output=True)  # type: ignore[arg-type]
    return probe.returncode == 0


class LocalPostgres:
    """A PostgreSQL cluster in a data directory, managed with initdb / pg_ctl."""

    def __init__(self, data_dir: Path, port: int, bindir: Path) -> None:
        self.data_dir = data_dir
        self.port = port
        self.bindir = bindir
        self.ids = _service_ids()
        self.password_file = data_dir / "db_password"
        self.started_here = False
        link = data_dir / "pgdata"
        if self.ids is not None and not link.exists() and not _reachable_by(self.ids, data_dir):
            # e.g. /root/.qeu-tune: keep the cluster where the postgres user can reach it.
            digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
            target = Path("/var/lib/postgresql/qeu-tune") / digest
            target.mkdir(parents=True, exist_ok=True)
            os.chown(target.parent, *self.ids)
            os.chown(target, *self.ids)
            link.symlink_to(target)
        self.pgdata = link.resolve() if link.is_symlink() else link

    # -- helpers -------------------------------------------------------------------
    def _run(self, args: List[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(args, **_as_service(self.ids), capture_output=True, text=True, **kwargs)  # type: ignore[arg-type]

    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    # -- lifecycle -----------------------------------------------------------------
    def init(self) -> bool:
        """Creates the cluster on first use; returns True when it was created now."""
        if (self.pgdata / "PG_VERSION").exists():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        if self.ids is not None:
            os.chown(self.pgdata, *self.ids)
        if not self.password_file.exists():
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        # initdb reads the password from a file the service user can read; removed at once.
        pwfile = self.pgdata.parent / f".{self.pgdata.name}.initdb_pw"  # not inside: initdb wants it empty
        pwfile.write_text(self.password() + "\n")
        os.chmod(pwfile, 0o600)
        if self.ids is not None:
            os.chown(pwfile, *self.ids)
        try:
            out = self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    DB_USER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise ServerError(f"initdb failed in {self.pgdata}:\n{out.stderr.strip() or out.stdout.strip()}")
        return True

    def running(self) -> bool:
        return self._run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "status"]).returncode == 0

    def start(self) -> None:
        if self.running():
            print(f"PostgreSQL in {self.pgdata} is already running; using it.", flush=True)
            return
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        out = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if out.returncode != 0:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise ServerError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} ({out.stderr.strip() or out.stdout.strip()}). "
                f"Is the port free? Choose another with --db-port.\n{tail}"
            )
        self.started_here = True

    def stop(self) -> None:
        if self.started_here:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])
            self.started_here = False

    def ensure_database(self, name: str = DB_NAME) -> bool:
        """Creates database ``name`` on first use; returns True when it was created now."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=DB_USER,
            password=self.password(),
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists:
                return False
            conn.execute(f'CREATE DATABASE "{name}"')
            return True

    def uri(self, *, with_password: bool = False) -> str:
        """The SQLAlchemy URI of the database (password only when asked for)."""
        user = f"{DB_USER}:{self.password()}" if with_password else DB_USER
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{DB_NAME}"


def mlflow_server_command(backend_uri: str, artifacts: Path, host: str, port: int, workers: int) -> List[str]:
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    base = [mlflow] if Path(mlflow).exists() else [sys.executable, "-m", "mlflow"]
    return [
        *base,
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def wait_http(url: str, timeout: float, process: Optional[subprocess.Popen] = None) -> None:
    """``processes.wait_http`` with this module's error type."""
    try:
        processes.wait_http(url, timeout, process)
    except (RuntimeError, TimeoutError) as err:
        raise ServerError(str(err).replace("the server", "mlflow server")) from None


class LocalMlflowServer:
    """A throwaway ``mlflow server`` on 127.0.0.1 backed by SQLite in ``root``, for tests,
    benchmarks and quick experiments (``qeu-tune server`` is the one for real use).

    ``root`` holds ``mlflow.db``, ``artifacts/`` (proxied) and ``server.log``. ``stop`` ends
    the server's whole process group (its workers too) and waits until the port is free, so
    ``start`` can bring it back on the same port and database, e.g. to simulate an outage::

        with LocalMlflowServer(tmp / "mlflow") as server:
            Tracker(tracking_uri=server.uri, experiment="x") ...

    Args:
        root: Directory for the database, artifacts and the server's log (created).
        port: Port on 127.0.0.1; default a free one, kept across restarts.
        workers: ``mlflow server --workers``.
    """

    host = DEFAULT_HOST

    def __init__(self, root: Path, port: Optional[int] = None, *, workers: int = 1) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or processes.free_port(self.host)
        self.workers = workers
        self.process: Optional[subprocess.Popen] = None

    @property
    def uri(self) -> str:
        """The tracking URI clients use: ``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"

    @property
    def database(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 60.0) -> "LocalMlflowServer":
        """Starts the server and waits until it answers ``/health``; returns ``self``.

        Raises:
            ServerError: It exited first, or did not answer within ``timeout_s`` (then it is
                stopped); the message names its log.
        """
        if self.running:
            return self
        cmd = mlflow_server_command(
            f"sqlite:///{self.database}", self.root / "artifacts", self.host, self.port, self.workers
        )
        # The caller's client-side HTTP retry settings (tests shorten them) are not the server's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_http(f"{self.uri}/health", timeout_s, self.process)
        except ServerError as err:
            self.stop()
            raise ServerError(f"{err} See {self.log_file}.") from None
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stops the server's process group (SIGTERM, then SIGKILL after ``timeout_s``) and
        waits up to 10 s for its port to be free again. Does nothing when it is not started."""
        if self.process is None:
            return
        processes.stop_process_group(self.process, timeout=timeout_s)
        self.process = None
        processes.wait_port_closed(self.port, self.host, timeout=10.0)

    def __enter__(self) -> "LocalMlflowServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(*, data_dir: Path, host: str, port: int, db_port: int, workers: int = 2) -> int:
    """Starts PostgreSQL and the MLflow server, serves until Ctrl-C/SIGTERM, stops both."""
    from qeu_tune.core.redact import redact_uri

    bindir = postgres_bindir()
    if bindir is None:
        raise ServerError(f"PostgreSQL's initdb/pg_ctl were not found; install them: {INSTALL_HINT}")
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    artifacts = data_dir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    db = LocalPostgres(data_dir, db_port, bindir)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # same clean-up as Ctrl-C

    previous = signal.signal(signal.SIGTERM, on_term)
    process: Optional[subprocess.Popen] = None
    try:
        if db.init():
            print(f"Created a PostgreSQL cluster in {db.pgdata}", flush=True)
        db.start()
        if db.ensure_database():
            print(f"Created database '{DB_NAME}'", flush=True)
        env = {
            **os.environ,
            "PGPASSWORD": db.password(),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
        }
        process = subprocess.Popen(
            mlflow_server_command(db.uri(), artifacts, host, port, workers), env=env, start_new_session=True
        )
        url = f"http://{host}:{port}"
        wait_http(f"{url}/health", timeout=180, process=process)
        print(
            f"MLflow tracking server: {url}  (Ctrl-C to stop)\n"
            f"  backend:   {redact_uri(db.uri(with_password=True))}\n"
            f"  artifacts: {artifacts}\n"
            f"  use it:    qeu-tune tracking=server tracking.uri={url}",
            flush=True,
        )
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if process is not None:
            processes.stop_process_group(process)
        db.stop()
        signal.signal(signal.SIGTERM, previous)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qeu-tune server",
        description="An MLflow tracking server on a local PostgreSQL database (created on first use).",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="PostgreSQL cluster, password and artifacts (default: $QEU_TUNE_HOME/server)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="bind address of the MLflow server (default 127.0.0.1: reach it through an SSH tunnel)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="MLflow server port (default 5000)")
    parser.add_argument(
        "--db-port", type=int, default=DEFAULT_DB_PORT, help="PostgreSQL port, on 127.0.0.1 only (default 5433)"
    )
    parser.add_argument("--workers", type=int, default=2, help="MLflow server workers (default 2)")
    return parser


def main(argv: Sequence[str]) -> int:
    """``qeu-tune server ...``; returns the exit code."""
    args = _parser().parse_args(list(argv))
    try:
        return serve(
            data_dir=args.data_dir or default_data_dir(),
            host=args.host,
            port=args.port,
            db_port=args.db_port,
            workers=args.workers,
        )
    except ServerError as err:
        print(f"qeu-tune server: error: {err}", file=sys.stderr)
        return 2
