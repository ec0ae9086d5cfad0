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
    # Two workers: the UI is for one person; MLflow's default of 4 starts slowly on 2 cores.
    return [*base, "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port), "--workers", "2"]


def start_ui(*, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> subprocess.Popen:
    """Starts the MLflow UI as a child process (the caller waits on or stops it)."""
    return subprocess.Popen(ui_command(tracking_uri=tracking_uri, host=host, port=port))


def experiment_url(base: str, tracking_uri: str, experiment: str = "qeu-tune") -> str:
    """The runs table of the project's experiment (MLflow 3 otherwise opens a GenAI page)."""
    try:
        from mlflow.tracking import MlflowClient

        found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - an empty or unreachable store still gets the UI
        found = None
    return f"{base}/#/experiments/{found.experiment_id}/runs" if found else base


def run_ui(*, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, out: Optional[object] = None) -> int:
    """Starts the UI, prints its URL and serves until interrupted; returns the exit code."""
    url = experiment_url(f"http://{host}:{port}", tracking_uri)
    print(f"MLflow UI for {tracking_uri}\n  open {url}  (Ctrl-C to stop)", file=out or sys.stdout, flush=True)
    process = start_ui(tracking_uri=tracking_uri, host=host, port=port)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait(timeout=30)
