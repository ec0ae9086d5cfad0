"""Hydra's run directory without secrets: ``.hydra/config.yaml``, ``hydra.yaml`` and
``overrides.yaml`` written redacted.

Hydra writes these files before the task starts, with the command line as typed (a password
in ``tracking.uri=...`` included). qeu-tune's root config sets ``hydra.output_subdir: null``,
so Hydra writes none of them, and each job writes them here instead, redacted
(``qeu_tune.core.redact``), before Ray starts. In a multirun Hydra also writes
``multirun.yaml`` into the sweep directory before any job starts; the first job rewrites it
redacted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Set

from qeu_tune.core.redact import known_secrets, redact_data

OUTPUT_SUBDIR = ".hydra"  # Hydra's default hydra.output_subdir
# A multirun job's overrides hold each value escaped by Hydra's sweeper (``http\://u\:pw@h``).
_HYDRA_SPECIAL = re.compile(r"([\\()\[\]{}:=, \t])")


def write_run_files(cfg: Any, subdir: Optional[str] = OUTPUT_SUBDIR) -> Optional[Path]:
    """Writes the job's config, Hydra config and overrides, redacted, into ``output_dir/subdir``.

    Args:
        cfg: The job's (unresolved) config, as ``hydra.main`` passes it to the task.
        subdir: Where under the job's output directory (None: nowhere).

    Returns:
        The directory written, or None.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        redact_file(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    if subdir is None:
        return None
    out = Path(hydra_cfg.runtime.output_dir) / subdir
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "config.yaml": OmegaConf.to_container(cfg, resolve=False),
        "hydra.yaml": {"hydra": OmegaConf.to_container(hydra_cfg, resolve=False)},
        "overrides.yaml": OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False),  # as typed
    }
    for name, data in files.items():
        (out / name).write_text(OmegaConf.to_yaml(OmegaConf.create(_redact(data))), encoding="utf-8")
    return out


def redact_file(path: Path) -> None:
    """Rewrites a YAML file Hydra wrote with its secrets masked (no change: not rewritten)."""
    from omegaconf import OmegaConf

    if not path.is_file():
        return
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    cleaned = _redact(data)
    if cleaned != data:
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(cleaned)), encoding="utf-8")


def hydra_escaped(text: str) -> str:
    """``text`` as Hydra's sweeper escapes an override value (``a:b`` -> ``a\\:b``)."""
    return _HYDRA_SPECIAL.sub(r"\\\1", text)


def _redact(data: Any) -> Any:
    secrets: Set[str] = known_secrets()
    return redact_data(data, secrets | {hydra_escaped(s) for s in secrets})
