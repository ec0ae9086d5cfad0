"""Report output: the printed table, the files (CSV/HTML/plots), the parent run's artifacts."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from qeu_tune.analysis import stats
from qeu_tune.analysis.notes import log_note, sweep_note
from qeu_tune.analysis.plots import write_plots
from qeu_tune.analysis.runs import client_for, load_sweep
from qeu_tune.analysis.tables import SweepReport, build_report, summary_table

REPORT_DIR = "report"  # artifact folder on the parent run


CONSOLE_ROWS = 20  # a sweep of 1,000 configurations prints its best, not 1,000 lines


def format_report(report: SweepReport, max_rows: Optional[int] = CONSOLE_ROWS) -> str:
    """The ranked table with a heading that says what was ranked and how (the commands print it).

    At most ``max_rows`` configurations (the best, and the baseline wherever it ranks); the
    files (``write_report``) hold them all.
    """
    sweep = report.sweep
    table = summary_table(report)
    shown = table
    if max_rows is not None and len(table) > max_rows:
        keep = (table.index < max_rows) | (table["config"] == report.baseline)
        shown = table[keep]
    lines = [
        f"Sweep {sweep.name} (parent run {sweep.run_id}): {len(report.trials)} trials with data, "
        f"{len(report.ranked)} configurations, {report.failed} failed trials.",
        f"Ranked by IQM over seeds of per-trial {report.by} of {report.metric} "
        f"({'higher' if stats.STAT_DIRECTIONS[report.by] else 'lower'} is better); 95% stratified-bootstrap CIs.",
        shown.to_string(index=False),
    ]
    if len(shown) < len(table):
        lines.append(
            f"... and {len(table) - len(shown)} more configurations: every one is in ranking.csv and ranking.html."
        )
    if len(report.ranked) and report.ranked["n_seeds"].min() < 5:
        lines.append("Note: fewer than 5 seeds per configuration; CIs are crude (docs/statistics.md).")
    return "\n".join(lines)


def write_report(report: SweepReport, out_dir: Path) -> List[Path]:
    """Writes ranking.csv/.html, trials.csv and the plots; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ranking = report.ranked.copy()
    ranking.to_csv(out_dir / "ranking.csv")
    report.trials.to_csv(out_dir / "trials.csv", index=False)
    html = (
        f"<h2>Sweep {report.sweep.name}</h2><p>Ranked by IQM over seeds of {report.by} "
        f"of {report.metric}, 95% stratified-bootstrap CIs.</p>"
        + summary_table(report).to_html(index=False)
        + "<h3>All aggregates</h3>"
        + ranking.to_html(float_format=lambda x: f"{x:.4g}")
    )
    (out_dir / "ranking.html").write_text(html)
    return [out_dir / "ranking.csv", out_dir / "ranking.html", out_dir / "trials.csv", *write_plots(report, out_dir)]


def log_report(client: Any, report: SweepReport, out_dir: Path) -> None:
    """Logs the report files, the aggregates of the best configuration and the run's description
    (``notes.sweep_note``: best configuration, ranking, where the files are) to the parent run."""
    from mlflow.entities import Metric

    client.log_artifacts(report.sweep.run_id, str(out_dir), REPORT_DIR)
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file())
    artifact_uri = client.get_run(report.sweep.run_id).info.artifact_uri
    log_note(
        client, report.sweep.run_id, sweep_note(report, report_dir=REPORT_DIR, artifact_uri=artifact_uri, files=files)
    )
    best_label, best = next(iter(report.ranked.iterrows()))
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"best_config/{col}", float(val), now, 0)
        for col, val in best.items()
        if isinstance(val, (int, float, np.floating)) and math.isfinite(float(val))
    ]
    client.log_batch(report.sweep.run_id, metrics=metrics[:1000])
    client.set_tag(report.sweep.run_id, "qeu.best_config", best_label)


def report_sweep_end(tracking_uri: str, parent_run_id: str) -> Optional[SweepReport]:
    """Called at the end of every sweep: the report, as artifacts of the parent run."""
    client = client_for(tracking_uri)
    report = build_report(client, load_sweep(client, parent_run_id))
    with tempfile.TemporaryDirectory() as tmp:
        write_report(report, Path(tmp))
        log_report(client, report, Path(tmp))
    return report
