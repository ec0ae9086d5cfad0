"""``qeu-tune sync [SPOOL_DIR] [--tracking-uri URI] [--prune]``: upload spooled tracking data to MLflow.

``--prune`` then removes every spool directory the store has confirmed entirely.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

from qeu_tune.tracking.journal import META_FILE, spool_root
from qeu_tune.tracking.sync import prune_spools, sync_spool


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
    sync.add_argument(
        "--prune",
        action="store_true",
        help="then remove the spool directories whose every entry the store has acknowledged (keeps those "
        "with rejected entries or in use) and say how many",
    )


def run(args: argparse.Namespace) -> int:
    """Prints one line per spool; returns the exit code (1 if any failed).

    Without ``--tracking-uri`` each spool goes to the URI it was recorded for.
    """
    uri = getattr(args, "tracking_uri", None)
    return sync(args.spool_dir, uri, prune=args.prune)


def sync(spool_dir: Any, tracking_uri: Any, *, prune: bool = False) -> int:
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
    if prune:
        _print_pruned(prune_spools(spool_dir, tracking_uri))
    return 1 if summary["errors"] else 0


def _print_pruned(pruned: Dict[str, Any]) -> None:
    count = len(pruned["pruned"])
    print(
        f"Pruned {count} spool director{'y' if count == 1 else 'ies'} confirmed in the store "
        f"({pruned['bytes'] / 1e6:.1f} MB freed); kept {len(pruned['kept'])}."
    )
    for path, reason in pruned["kept"].items():
        print(f"  kept {path}: {reason}")
