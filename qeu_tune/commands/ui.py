"""``qeu-tune ui``: the MLflow UI on the project's tracking backend, bound to 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from typing import Any, List, Optional

from qeu_tune.core.processes import stop_process_group

DEFAULT_HOST = "127.0.0.1"  # never expose runs to the network unless asked to
DEFAULT_PORT = 5000


def ui_command(*, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> List[str]:
    """The ``mlflow ui`` command line for a tracking URI."""
    mlflow = shutil.which("mlflow")
    base = [mlflow] if mlflow else [sys.executable, "-m", "mlflow"]
    # Two workers: the UI is for one person; MLflow's default of 4 starts slowly on 2 cores.
    return [*base, "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port), "--workers", "2"]


def start_ui(*, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> subprocess.Popen:
    """Starts the MLflow UI in its own process group (it forks server workers)."""
    # MLflow's server-side job runner (GenAI jobs; ~6 extra processes) is not needed to
    # browse sweeps, and costs a 2-core laptop dearly.
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    }
    return subprocess.Popen(
        ui_command(tracking_uri=tracking_uri, host=host, port=port), start_new_session=True, env=env
    )


def stop_ui(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """Stops the UI and every worker it started; returns its exit code."""
    return stop_process_group(process, timeout)


# MLflow 3's UI has two layouts, GenAI (its default: traces, judges, a sweep filed under
# "Evaluations") and Model training. Since 3.1x the browser's choice (the switch at the top
# left, remembered per browser) decides, not the experiment's mlflow.experimentKind tag; this
# query parameter selects the training layout for the page it opens.
TRAINING_LAYOUT = "workflowType=machine_learning"


def experiment_url(base: str, tracking_uri: str, experiment: str = "qeu-tune") -> str:
    """The runs table of the project's experiment, in MLflow's Model training layout."""
    try:
        from mlflow.tracking import MlflowClient

        found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - an empty or unreachable store still gets the UI
        found = None
    if found is None:
        return f"{base}/#/experiments?{TRAINING_LAYOUT}"
    return f"{base}/#/experiments/{found.experiment_id}/runs?{TRAINING_LAYOUT}"


def run_ui(
    *, tracking_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, out: Optional[object] = None
) -> int:
    """Starts the UI, prints its URL and serves until interrupted; returns the exit code."""
    url = experiment_url(f"http://{host}:{port}", tracking_uri)
    print(
        f"MLflow UI for {tracking_uri}\n  open {url}  (Ctrl-C to stop; a page in the GenAI layout: click "
        "'Model training' at the top left once, the browser keeps it)",
        file=out or sys.stdout,
        flush=True,
    )
    process = start_ui(tracking_uri=tracking_uri, host=host, port=port)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # same clean-up as Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_ui(process)
        return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ui", parents=[common], help="start the MLflow UI on this project's tracking backend")
    p.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)


def run(args: argparse.Namespace, uri: str) -> int:
    return run_ui(tracking_uri=uri, host=args.host, port=args.port)
