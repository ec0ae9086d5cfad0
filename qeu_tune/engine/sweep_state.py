"""What ``qeu-tune resume`` re-plans from: the validated config, next to Tune's own state.

Plain YAML in Tune's experiment directory (trusted storage), never unpickled; MLflow's copy of
the config is redacted, so it cannot serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import yaml
from pyarrow import fs

from qeu_tune.core.errors import ConfigError
from qeu_tune.engine.plan import SweepPlan


SWEEP_STATE_FILE = "qeu_sweep.yaml"  # in Tune's experiment directory: what `resume` re-plans from


def write_sweep_state(tune_path: str, plan: SweepPlan, spool_dir: Path) -> None:
    """The validated config and overrides, next to Tune's own state (trusted storage).

    ``resume`` re-plans from this file rather than from MLflow, whose copy is redacted.
    """

    filesystem, path = fs.FileSystem.from_uri(tune_path if "://" in tune_path else Path(tune_path).as_uri())
    filesystem.create_dir(path, recursive=True)
    body = yaml.safe_dump({"config": plan.config, "overrides": plan.overrides, "spool_dir": str(spool_dir)},
                          sort_keys=False)
    with filesystem.open_output_stream(f"{path}/{SWEEP_STATE_FILE}") as out:
        out.write(body.encode())


def read_sweep_state(tune_path: str) -> Dict[str, Any]:
    """Reads what ``write_sweep_state`` wrote (plain YAML, never unpickled)."""

    filesystem, path = fs.FileSystem.from_uri(tune_path if "://" in tune_path else Path(tune_path).as_uri())
    try:
        with filesystem.open_input_stream(f"{path}/{SWEEP_STATE_FILE}") as stream:
            return yaml.safe_load(stream.read().decode())
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(
            f"the sweep's Tune state is not at {tune_path} ({err}); resume needs the "
            "cluster.storage_path the sweep ran with, reachable from this machine."
        ) from None
