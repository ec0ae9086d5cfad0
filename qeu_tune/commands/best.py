"""``qeu-tune best SWEEP``: the winner's overrides, written as an experiment file to rerun."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Optional

from qeu_tune.analysis.runs import client_for, load_sweep
from qeu_tune.analysis.tables import BestConfig, _ci, best_configuration, build_report, experiment_yaml
from qeu_tune.commands.report import add_ranking_options
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import CONF_DIR, user_config_dir


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("best", parents=[common], help="the best configuration of a sweep")
    p.add_argument("sweep", help="parent run id or sweep name")
    add_ranking_options(p)
    p.add_argument("--out", default=None, help="the experiment file to write")


def run(args: argparse.Namespace, uri: str) -> int:
    best_command(uri, args.sweep, by=args.by, out=args.out)
    return 0


def best_command(uri: str, ref: str, *, by: Optional[str] = None, out: Optional[str] = None) -> BestConfig:
    """``qeu-tune best SWEEP``: print the winner's overrides and write an experiment file."""
    client = client_for(uri)
    report = build_report(client, load_sweep(client, ref), by=by)
    best = best_configuration(client, report)
    name = "best_" + re.sub(r"[^A-Za-z0-9_]+", "_", report.sweep.name).strip("_")
    # Default: the user config directory (--config-dir, $QEU_TUNE_CONFIG_DIR or ./conf),
    # never the installed package's configs.
    path = Path(out) if out else _user_experiment_dir(CONF_DIR, user_config_dir) / f"{name}.yaml"
    if path.suffix != ".yaml":
        path = path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(experiment_yaml(best, report))
    print(f"Best configuration of {report.sweep.name}: {best.label}")
    print(f"  {report.by} IQM over {len(best.seeds)} seeds: {_ci(best.row, report.by)}")
    print(f"  overrides: {' '.join(best.overrides())}")
    print(f"  experiment file: {path}")
    group_dir = path.parent.resolve()
    if group_dir == (CONF_DIR / "experiment").resolve() or group_dir == (Path.cwd() / "conf" / "experiment").resolve():
        print(f"  rerun it: qeu-tune experiment={path.stem}")
    elif group_dir.name == "experiment":
        print(f"  rerun it: qeu-tune --config-dir {group_dir.parent} experiment={path.stem}")
    return best


def _user_experiment_dir(conf_dir: Path, user_config_dir: Any) -> Path:
    """``<user config dir>/experiment``, created; refuses the installed package's ``conf/``."""
    directory = user_config_dir(create=True)
    installed = any(part in ("site-packages", "dist-packages") for part in conf_dir.parts)
    if installed and directory.resolve() == conf_dir.resolve():
        raise ConfigError(
            f"qeu-tune best would write into the installed package ({conf_dir}); run it from "
            "another directory, or pass --config-dir DIR (or set QEU_TUNE_CONFIG_DIR)."
        )
    return directory / "experiment"
