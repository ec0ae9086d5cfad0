"""A spool's progress on disk: the acknowledged journal offset and the run key -> run id map.

``state.json`` holds, per tracking URI, the offset of the first journal entry not yet applied
(rewritten after every write, so it stays small); ``runs.jsonl`` the run id of each created run
(appended). The journal's writer thread updates both through ``SpoolState``; ``qeu_tune.tracking.sync`` too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

from qeu_tune.core.redact import redact_uri

STATE_FILE = "state.json"
RUNS_FILE = "runs.jsonl"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


class SpoolState:
    """``state.json`` and ``runs.jsonl``: per tracking URI (keyed by its redacted form: no
    password on disk), the acknowledged offset and the run id map."""

    def __init__(self, spool_dir: Path, tracking_uri: str) -> None:
        self.path = spool_dir / STATE_FILE
        self.runs_path = spool_dir / RUNS_FILE
        self.tracking_uri = redact_uri(tracking_uri)
        self._old_key = tracking_uri  # older spools were keyed by the URI as given
        data = read_json(self.path, {})
        self._acked = data.get("acked", {})
        acked = self._acked.get(self.tracking_uri) or self._acked.get(tracking_uri) or {}
        self.next_seq = int(acked.get("next_seq", 0))
        self.offset = int(acked.get("offset", 0))
        self.runs: Dict[str, str] = {}
        for line in self.runs_path.read_text().splitlines() if self.runs_path.exists() else ():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a crash: that run is found by its tag instead
                continue
            if entry.get("uri") == self.tracking_uri:
                self.runs[entry["key"]] = entry["id"]
        # Spools before runs.jsonl kept the map in state.json: carried over once, then dropped.
        old = {**data.get("runs", {}).get(tracking_uri, {}), **data.get("runs", {}).get(self.tracking_uri, {})}
        self._runs_elsewhere = {
            u: r for u, r in data.get("runs", {}).items() if u not in (tracking_uri, self.tracking_uri)
        }
        for key, run_id in old.items():
            if key not in self.runs:
                self.add_run(key, run_id)

    def add_run(self, key: str, run_id: str) -> None:
        """Records a created run: one appended line (the map never grows a rewrite)."""
        self.runs[key] = run_id
        try:
            with open(self.runs_path, "a") as out:
                out.write(json.dumps({"uri": self.tracking_uri, "key": key, "id": run_id}) + "\n")
        except OSError:  # the run is found by its qeu.run_key tag instead
            pass

    def ack(self, next_seq: int, offset: int) -> None:
        """Records that every entry before ``next_seq`` (byte ``offset``) was applied, on disk."""
        self.next_seq, self.offset = next_seq, offset
        self._acked[self.tracking_uri] = {"next_seq": next_seq, "offset": offset}
        if self._old_key != self.tracking_uri:
            self._acked.pop(self._old_key, None)
        data: Dict[str, Any] = {"acked": self._acked}
        if self._runs_elsewhere:  # another tracking URI's map in an old spool: kept as it was
            data["runs"] = self._runs_elsewhere
        write_json_atomic(self.path, data)
