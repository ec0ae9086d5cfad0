"""``qeu-tune report SWEEP``: the ranked table of a sweep, with tables and plots written to disk."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from qeu_tune.analysis.render import format_report, log_report, write_report
from qeu_tune.analysis.runs import client_for, find_run, load_sweep
from qeu_tune.analysis.study_report import format_summary, is_study, load_summary
from qeu_tune.analysis.tables import SweepReport, build_report


def add_ranking_options(p: argparse.ArgumentParser) -> None:
    """``--by`` and ``--baseline``: how ``report`` and ``best`` rank configurations."""
    p.add_argument("--by", default=None, help="statistic to rank by (default: IQM of final return over seeds)")
    p.add_argument(
        "--baseline", default=None, help="configuration (reward name or config key) for probability of improvement"
    )


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common], help="ranked table and plots of a sweep, or a study's verdicts")
    p.add_argument("sweep", help="parent run id or sweep name, or a study run id or name")
    add_ranking_options(p)
    p.add_argument("--out", default=None, help="directory for the tables and plots")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="return threshold for steps_to_threshold (default: env.return_threshold)",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="curve the statistics use, e.g. eval/return_env/mean or return_env/mean "
        "(default: each trial's convergence.metric)",
    )
    p.add_argument("--log", action="store_true", help="also replace the report/ artifacts of the sweep's parent run")


def run(args: argparse.Namespace, uri: str) -> int:
    client = client_for(uri)
    run_ = find_run(client, args.sweep)
    if is_study(run_):  # a study: its verdict table (summary.json on the study run)
        print(format_summary(load_summary(client, run_.info.run_id)))
        return 0
    report_command(
        uri,
        args.sweep,
        by=args.by,
        baseline=args.baseline,
        threshold=args.threshold,
        metric=args.metric,
        out=args.out,
        log=args.log,
    )
    return 0


def report_command(
    uri: str,
    ref: str,
    *,
    by: Optional[str] = None,
    baseline: Optional[str] = None,
    threshold: Optional[float] = None,
    metric: Optional[str] = None,
    out: Optional[str] = None,
    log: bool = False,
) -> SweepReport:
    """``qeu-tune report SWEEP``: print the ranked table and write tables and plots.

    With ``log`` the files also replace the ``report/`` artifacts of the parent run (the
    sweep logs its default report there itself).
    """
    client = client_for(uri)
    report = build_report(client, load_sweep(client, ref), by=by, baseline=baseline, threshold=threshold, metric=metric)
    print(format_report(report))
    out_dir = Path(out or Path.cwd() / f"report-{report.sweep.name}").resolve()
    paths = write_report(report, out_dir)
    if log:
        try:
            log_report(client, report, out_dir)
        except Exception as err:  # noqa: BLE001 - the local files are the deliverable here
            print(f"(could not log the report to the parent run: {err})", file=sys.stderr)
    print(f"Wrote {len(paths)} files to {out_dir}")
    return report
