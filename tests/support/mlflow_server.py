"""A real ``mlflow server`` subprocess on 127.0.0.1 that tests can stop and restart on the same
port and database, to simulate a tracking outage.

``MlflowServer`` is the package's ``qeu_tune.commands.server.LocalMlflowServer`` (which
scripts/bench_tracking.py uses too), kept under its old name and with its ``proc`` attribute
so the tests that use it read as before.
"""

from __future__ import annotations

import subprocess
from typing import Optional

from qeu_tune.commands.server import LocalMlflowServer
from qeu_tune.core.processes import free_port

__all__ = ["MlflowServer", "free_port"]


class MlflowServer(LocalMlflowServer):
    """``mlflow server`` backed by SQLite in ``root``; ``stop`` kills its whole process group.

    Args:
        root: Directory for the database, artifacts and the server's log.
        port: Port on 127.0.0.1 (default: a free one; kept across restarts).
    """

    @property
    def proc(self) -> Optional[subprocess.Popen]:
        """The server process while it is started, else None."""
        return self.process
