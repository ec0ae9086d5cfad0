"""Sweep comparison: ranked tables with cross-seed CIs, plots, the best configuration, reruns.

By job:

* ``tables``: statistics per trial and ranked configurations (``build_report``), the best
  configuration (``best_configuration``, ``best_configuration_row``, ``experiment_yaml``);
* ``plots``: learning curves, weight vs performance, RT-metric trajectories;
* ``render``: the printed table, report files, the parent run's ``report/`` artifacts,
  ``report_sweep_end`` (called by every sweep);
* ``commands``: ``qeu-tune report | best | rerun``.

``from qeu_tune.analysis import X`` keeps working for every name. ``commands`` is loaded
on first use (``__getattr__``): it runs sweeps, and ``qeu_tune.sweep`` imports this package
for the end-of-sweep report, so an eager import would be an import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

from qeu_tune.analysis.plots import GRID_POINTS, write_plots
from qeu_tune.analysis.render import REPORT_DIR, log_report, print_report, report_sweep_end, write_report
from qeu_tune.analysis.tables import (
    DEFAULT_AGG,
    DEFAULT_BY,
    BestConfig,
    SweepReport,
    best_configuration,
    best_configuration_row,
    build_report,
    experiment_yaml,
    summary_table,
)

_COMMANDS = ("report_command", "best_command", "rerun_command", "fresh_seeds", "_validated",
             "_apply_overrides", "_user_experiment_dir")

__all__ = ["DEFAULT_AGG", "DEFAULT_BY", "GRID_POINTS", "REPORT_DIR", "BestConfig", "SweepReport",
           "best_configuration", "best_configuration_row", "build_report", "experiment_yaml",
           "log_report", "print_report", "report_sweep_end", "summary_table", "write_plots",
           "write_report", "report_command", "best_command", "rerun_command", "fresh_seeds"]


def __getattr__(name: str) -> Any:
    if name in _COMMANDS:
        return getattr(importlib.import_module("qeu_tune.analysis.commands"), name)
    raise AttributeError(f"module 'qeu_tune.analysis' has no attribute {name!r}")
