"""The README's table of config groups lists exactly the options shipped in ``conf/``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.core.paths import CONF_DIR

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_options(group: str) -> set:
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{group}` |"))
    cell = row.split("|")[2]
    cell = re.sub(r"\[[^\]]*\]\([^)]*\)", "", cell)  # markdown links
    cell = re.sub(r"\([^)]*\)", "", cell).split("; or any")[0]  # prose; the env group's free-form ids
    return set(re.findall(r"`([a-z0-9_]+)`", cell))


@pytest.mark.parametrize("group", [*GROUP_NAMES, "experiment", "debug"])
def test_every_shipped_option_is_in_the_readme_and_no_other(group):
    shipped = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    assert _readme_options(group) == shipped
