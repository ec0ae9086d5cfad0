"""What ``qeu-tune resume`` re-plans from: the validated config, next to Tune's own state.

Plain YAML in Tune's experiment directory, never unpickled. Like everything recorded it holds
no secret (``qeu_tune.core.secrets.recorded_config``): a value taken from the environment is
recorded as its ``${oc.env:NAME}``, anything else secret as ``***``; ``resume`` gets them back
from the environment and the tracking URI the user gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import yaml
from pyarrow import fs

from qeu_tune.core.errors import ConfigError
from qeu_tune.core.redact import redact
from qeu_tune.core.secrets import recorded_config
from qeu_tune.engine.plan import SweepPlan

SWEEP_STATE_FILE = "qeu_sweep.yaml"  # in Tune's experiment directory: what `resume` re-plans from


def write_state(directory: str, filename: str, data: Mapping[str, Any]) -> None:
    """Writes ``data`` as YAML to ``directory/filename`` (a local path or a pyarrow URI)."""
    filesystem, path = fs.FileSystem.from_uri(directory if "://" in directory else Path(directory).as_uri())
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{filename}") as out:
        out.write(yaml.safe_dump(dict(data), sort_keys=False).encode())


def read_state(directory: str, filename: str, *, what: str) -> Dict[str, Any]:
    """Reads what ``write_state`` wrote (plain YAML, never unpickled)."""
    filesystem, path = fs.FileSystem.from_uri(directory if "://" in directory else Path(directory).as_uri())
    try:
        with filesystem.open_input_stream(f"{path}/{filename}") as stream:
            return yaml.safe_load(stream.read().decode())
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(
            f"the {what} is not at {directory} ({err}); resume needs the "
            "cluster.storage_path it ran with, reachable from this machine."
        ) from None


def write_sweep_state(tune_path: str, plan: SweepPlan, spool_dir: Path) -> None:
    """The validated config and overrides, recorded without secrets, next to Tune's own state.

    ``resume`` re-plans from this file: MLflow's copy has no ``${oc.env:NAME}`` forms. It also
    holds the options of the searched config groups as composed at the start (``group_options``),
    from the user config directory and the shipped configs as they were then: ``resume`` builds
    the remaining trials from them, not from whatever those directories hold by then.
    """
    state = {
        "config": recorded_config(plan.config),
        "overrides": redact(plan.overrides),
        "spool_dir": str(spool_dir),
        "group_options": {
            group: {name: recorded_config({group: subtree})[group] for name, subtree in options.items()}
            for group, options in plan.template.group_options.items()
        },
    }
    write_state(tune_path, SWEEP_STATE_FILE, state)


def read_sweep_state(tune_path: str) -> Dict[str, Any]:
    """Reads what ``write_sweep_state`` wrote."""
    return read_state(tune_path, SWEEP_STATE_FILE, what="sweep's Tune state")
