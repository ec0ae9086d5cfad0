"""``qeu-tune ui``: the MLflow UI on the project's tracking backend, bound to 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import List, Optional

DEFAULT_HOST = "127.0.0.1"  # never expose runs to the network unless asked to
DEFAULT_PORT = 5000


def ui_command(*, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> List[str]:
    """The ``mlflow ui`` command line for a tracking URI."""
    mlflow = shutil.which("mlflow")
    base = [mlflow] if mlflow else [sys.executable, "-m", "mlflow"]
    return [*base, "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]


def start_ui(*, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> subprocess.Popen:
    """Starts the MLflow UI as a child process (the caller waits on or stops it)."""
    return subprocess.Popen(ui_command(tracking_uri=tracking_uri, host=host, port=port))


def run_ui(*, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, out: Optional[object] = None) -> int:
    """Starts the UI, prints its URL and serves until interrupted; returns the exit code."""
    print(f"MLflow UI for {tracking_uri}\n  open http://{host}:{port}  (Ctrl-C to stop)", file=out or sys.stdout, flush=True)
    process = start_ui(tracking_uri=tracking_uri, host=host, port=port)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait(timeout=30)
