"""``qeu-tune sync [SPOOL_DIR] [--tracking-uri URI]``: upload spooled tracking data to MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qeu_tune.tracking.journal import META_FILE, spool_root
from qeu_tune.tracking.sync import sync_spool


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    sync = sub.add_parser(
        "sync",
        parents=[common],
        help="upload spooled tracking data (offline sweep or MLflow outage)",
        description="Upload tracking data kept in a spool (offline sweep, or MLflow was unreachable) "
        "to MLflow. Replays only what was not yet acknowledged; running it twice adds nothing.",
    )
    sync.add_argument(
        "spool_dir",
        nargs="?",
        default=None,
        help="a sweep's spool directory (default: every spool under $QEU_TUNE_HOME/spool)",
    )


def run(args: argparse.Namespace) -> int:
    """Prints one line per spool; returns the exit code (1 if any failed).

    Without ``--tracking-uri`` each spool goes to the URI it was recorded for.
    """
    uri = getattr(args, "tracking_uri", None)
    return sync(args.spool_dir, uri)


def sync(spool_dir: Any, tracking_uri: Any) -> int:
    if spool_dir is not None and not (Path(spool_dir) / META_FILE).exists():
        print(
            f"{spool_dir} is not a qeu-tune spool directory (it has no {META_FILE}); spools are under {spool_root()}."
        )
        return 2
    summary = sync_spool(spool_dir, tracking_uri)
    if not summary["spools"]:
        print(f"No spools under {spool_root()}: nothing to sync.")
    for s in summary["spools"]:
        status = (
            f"FAILED ({s['error']}); run sync again when MLflow is reachable"
            if s["error"]
            else (f"skipped ({s['skipped']})" if s.get("skipped") else "ok")
        )
        print(
            f"{s['spool']} -> {s['tracking_uri']}: {s['entries']} entries, {s['points']} metric points, "
            f"{s['runs_created']} runs created, {s['rejected']} rejected; {status}"
        )
    return 1 if summary["errors"] else 0
