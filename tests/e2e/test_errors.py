"""Every row of docs/errors.md, through the real command line.

The table is the test's data, so the documentation and the behaviour cannot drift: each
row's input runs as ``qeu-tune <input>`` in a subprocess (from the repository root, with
``QEU_TUNE_HOME`` in a temporary directory) and must exit with code 2 within 15 s, print
one paragraph containing the row's message excerpt, no traceback, and create no MLflow
database or run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "errors.md"
TIME_LIMIT_S = 15.0

pytestmark = pytest.mark.slow


class Row(NamedTuple):
    number: str
    args: List[str]
    problem: str
    excerpt: str


def _code(cell: str) -> str:
    match = re.fullmatch(r"\s*`(.*)`\s*", cell)
    assert match, f"expected one `code` span in the cell {cell!r} of {DOC}"
    return match.group(1)


def catalogue_rows(text: str) -> List[Row]:
    """The rows of the table under '## The catalogue' (| # | input | what | message |)."""
    section = text.split("## The catalogue", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        rows.append(Row(cells[0], shlex.split(_code(cells[1])), cells[2], _code(cells[3])))
    return rows


ROWS = catalogue_rows(DOC.read_text(encoding="utf-8"))


def test_the_catalogue_has_at_least_25_distinct_inputs():
    assert len(ROWS) >= 25
    assert len({tuple(r.args) for r in ROWS}) == len(ROWS)
    assert [int(r.number) for r in ROWS] == list(range(1, len(ROWS) + 1))


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.number}-{' '.join(r.args)[:40]}" for r in ROWS])
def test_bad_input_fails_fast_with_one_paragraph(row, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "HYDRA_FULL_ERROR")}
    env["QEU_TUNE_HOME"] = str(home)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "qeu_tune.commands.main", *row.args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output, output
    assert "HYDRA_FULL_ERROR" not in output, output
    paragraphs = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(paragraphs) == 1 and paragraphs[0].startswith("qeu-tune: error: "), proc.stderr
    assert row.excerpt in paragraphs[0], f"expected {row.excerpt!r} in:\n{paragraphs[0]}"
    assert not list(tmp_path.rglob("mlflow.db")), "an MLflow database was created"
    assert not list(tmp_path.rglob("mlruns")), "an MLflow file store was created"
    assert not (home / "ray_results").exists() or not any((home / "ray_results").iterdir())
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.1f} s"
    print(f"row {row.number}: {elapsed:.1f} s")
