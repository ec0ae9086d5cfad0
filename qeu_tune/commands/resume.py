"""``qeu-tune resume SWEEP``: continue an interrupted sweep into the same MLflow runs."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "resume", parents=[common], help="continue an interrupted sweep or study into the same MLflow runs"
    )
    p.add_argument("sweep", help="parent run id or sweep name, or a study run id or name")
    p.add_argument(
        "--restart-errored", action="store_true", help="also retry trials that had failed, from their last checkpoint"
    )


def run(args: argparse.Namespace, uri: str) -> int:
    # The engine (Ray, RLlib) loads only when a sweep resumes: the CLI imports every command's parser.
    from qeu_tune.analysis.runs import client_for, find_run
    from qeu_tune.commands import study
    from qeu_tune.commands.sweep import finish
    from qeu_tune.core import tags
    from qeu_tune.engine.resume import resume_sweep

    if find_run(client_for(uri), args.sweep).data.tags.get(tags.TAG_KIND) == "study":
        return study.resume(uri, args.sweep)
    try:
        finish(resume_sweep(uri, args.sweep, restart_errored=args.restart_errored))
    except SystemExit as stop:  # finish() exits non-zero for an interrupted or failed sweep
        return int(stop.code or 0)
    return 0
