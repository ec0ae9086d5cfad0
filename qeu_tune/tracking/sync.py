"""``sync_spool``: replay what a spool has not yet acknowledged (after an outage or an offline sweep);
``prune_spools``: remove the spools the store has confirmed."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from qeu_tune.core.redact import MASK, redact, redact_uri, uri_secrets
from qeu_tune.tracking.journal import spool_root, unconfirmed
from qeu_tune.tracking.journal_file import JOURNAL_FILE, META_FILE, SpoolLock, read_journal
from qeu_tune.tracking.spool_state import SpoolState, read_json
from qeu_tune.tracking.store import (
    WRITER_HTTP,
    Applier,
    _Unresolved,
    ensure_experiment,
    is_permanent,
    short_http_retries,
)
from qeu_tune.tracking.writer import next_unit, reject_entry

log = logging.getLogger(__name__)


# -- sync ---------------------------------------------------------------------------------
def sync_spool(
    spool_dir: Optional[os.PathLike] = None,
    tracking_uri: Optional[str] = None,
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> Dict[str, Any]:
    """Replays what a spool has not yet acknowledged into MLflow; running it twice adds nothing.

    Args:
        spool_dir: One sweep's spool; None: every spool under ``$QEU_TUNE_HOME/spool``.
        tracking_uri: Where to write; None: the URI the sweep was recorded for.
        retries: Retries of a failing write before giving up (the spool stays as it is).
        backoff_s: First retry delay (doubles).

    Returns:
        A summary: ``{"spools": [per-spool summary], "entries": ..., "points": ..., "runs_created": ...}``;
        per spool also ``spool``, ``tracking_uri``, ``already_acknowledged``, ``rejected``, ``error``.
    """
    dirs = [Path(spool_dir)] if spool_dir is not None else _spool_dirs()
    summaries = [_sync_one(d, tracking_uri, retries, backoff_s) for d in dirs]
    return {
        "spools": summaries,
        "entries": sum(s["entries"] for s in summaries),
        "points": sum(s["points"] for s in summaries),
        "runs_created": sum(s["runs_created"] for s in summaries),
        "rejected": sum(s["rejected"] for s in summaries),
        "errors": sum(1 for s in summaries if s.get("error")),
    }


def _sync_one(spool_dir: Path, tracking_uri: Optional[str], retries: int, backoff_s: float) -> Dict[str, Any]:
    from mlflow.tracking import MlflowClient

    meta = read_json(spool_dir / META_FILE, None)
    if meta is None:
        raise FileNotFoundError(f"{spool_dir} is not a qeu-tune spool (no {META_FILE})")
    uri = tracking_uri or _with_password(meta["tracking_uri"])
    summary: Dict[str, Any] = {
        "spool": str(spool_dir),
        "tracking_uri": redact_uri(uri),
        "entries": 0,
        "points": 0,
        "runs_created": 0,
        "rejected": 0,
        "already_acknowledged": 0,
        "error": None,
    }
    if any(MASK in secret for secret in uri_secrets(uri)):
        summary["error"] = (
            f"it was recorded for {uri}, whose password qeu-tune does not store; give the URI with its "
            "password (--tracking-uri URI or MLFLOW_TRACKING_URI)"
        )
        return summary
    lock = SpoolLock(spool_dir)
    applier: Optional[Applier] = None
    if not lock.acquire():
        summary["skipped"] = "in use by a running sweep or another sync"
        return summary
    try:
        state = SpoolState(spool_dir, uri)
        summary["already_acknowledged"] = state.next_seq
        client = MlflowClient(tracking_uri=uri)
        with short_http_retries(**WRITER_HTTP):
            experiment_id = ensure_experiment(client, meta["experiment"], uri)
            applier = Applier(client, experiment_id, state, spool_dir)
            journal = spool_dir / JOURNAL_FILE
            while True:
                pending = list(read_journal(journal, state.offset, limit=2000)) if journal.exists() else []
                if not pending:
                    break
                careful_through = -1
                while pending:
                    n = next_unit(pending, careful_through)
                    err = _apply_with_retries(applier, [p[3] for p in pending[:n]], retries, backoff_s)
                    if err is not None and n > 1 and pending[0][0] > careful_through:
                        careful_through = pending[n - 1][0]  # again, one op at a time
                        continue
                    if err is not None and not (isinstance(err, _Unresolved) or is_permanent(err)):
                        summary["error"] = redact(f"{type(err).__name__}: {err}")
                        return summary
                    if err is not None:
                        summary["rejected"] += n
                        for p in pending[:n]:
                            reject_entry(spool_dir, p[3], err)
                    seq, _, end, _ = pending[n - 1]
                    state.ack(seq + 1, end)
                    summary["entries"] += n
                    del pending[:n]
    except Exception as err:  # noqa: BLE001 - one spool's failure is reported, the others go on
        summary["error"] = redact(f"{type(err).__name__}: {err}")
        return summary
    finally:
        lock.release()
        if applier is not None:
            summary["points"], summary["runs_created"] = applier.points, applier.runs_created
    return summary


def prune_spools(spool_dir: Optional[os.PathLike] = None, tracking_uri: Optional[str] = None) -> Dict[str, Any]:
    """Removes spool directories whose every entry the store has confirmed (``journal.unconfirmed``).

    A spool in use (a running sweep or sync holds its lock) is left alone.

    Args:
        spool_dir: One sweep's spool; None: every spool under ``$QEU_TUNE_HOME/spool``.
        tracking_uri: The store that must have confirmed it; None: each spool's recorded URI.

    Returns:
        ``{"pruned": [paths], "bytes": freed, "kept": {path: reason}}``.
    """
    dirs = [Path(spool_dir)] if spool_dir is not None else _spool_dirs()
    pruned: List[str] = []
    kept: Dict[str, str] = {}
    freed = 0
    for d in dirs:
        lock = SpoolLock(d)
        if not lock.acquire():
            kept[str(d)] = "in use by a running sweep or another sync"
            continue
        try:
            reason = unconfirmed(d, tracking_uri)
            if reason is None:
                freed += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                shutil.rmtree(d)
                pruned.append(str(d))
            else:
                kept[str(d)] = reason
        finally:
            lock.release()
    return {"pruned": pruned, "bytes": freed, "kept": kept}


def _with_password(recorded: str) -> str:
    """The recorded URI (password masked), or ``$MLFLOW_TRACKING_URI`` when it is that URI with its password."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    return given if given and given != recorded and redact_uri(given) == recorded else recorded


def _spool_dirs() -> List[Path]:
    return sorted(p for p in spool_root().glob("*") if (p / META_FILE).exists())


def _apply_with_retries(applier: Applier, unit: List[dict], retries: int, backoff_s: float) -> Optional[BaseException]:
    for attempt in range(retries + 1):
        try:
            applier.apply(unit)
            return None
        except Exception as err:  # noqa: BLE001 - classified by the caller
            if isinstance(err, _Unresolved) or is_permanent(err) or attempt == retries:
                return err
            time.sleep(backoff_s * 2**attempt)
    return None
