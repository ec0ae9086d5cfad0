"""``qeu-tune resume SWEEP``: continue an interrupted sweep into the same MLflow runs."""

from __future__ import annotations

import argparse
from typing import Any

from qeu_tune.commands.sweep import finish
from qeu_tune.engine.resume import resume_sweep


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("resume", parents=[common], help="continue an interrupted sweep into the same MLflow runs")
    p.add_argument("sweep", help="parent run id or sweep name")
    p.add_argument("--restart-errored", action="store_true",
                   help="also retry trials that had failed, from their last checkpoint")


def run(args: argparse.Namespace, uri: str) -> int:
    try:
        finish(resume_sweep(uri, args.sweep, restart_errored=args.restart_errored))
    except SystemExit as stop:  # finish() exits non-zero for an interrupted or failed sweep
        return int(stop.code or 0)
    return 0
