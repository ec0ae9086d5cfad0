"""Sweep comparison: ranked tables with cross-seed CIs, plots, the best configuration, reruns.

By job:

* ``tables``: statistics per trial and ranked configurations (``build_report``), the best
  configuration (``best_configuration``, ``best_configuration_row``, ``experiment_yaml``);
* ``plots``: learning curves, weight vs performance, RT-metric trajectories;
* ``render``: the printed table, report files, the parent run's ``report/`` artifacts,
  ``report_sweep_end`` (called by every sweep);
"""

from __future__ import annotations

from qeu_tune.analysis.plots import GRID_POINTS, write_plots
from qeu_tune.analysis.render import REPORT_DIR, format_report, log_report, report_sweep_end, write_report
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

__all__ = [
    "DEFAULT_AGG",
    "DEFAULT_BY",
    "GRID_POINTS",
    "REPORT_DIR",
    "BestConfig",
    "SweepReport",
    "best_configuration",
    "best_configuration_row",
    "build_report",
    "experiment_yaml",
    "log_report",
    "format_report",
    "report_sweep_end",
    "summary_table",
    "write_plots",
    "write_report",
]
