"""Every ``qeu-tune ...`` command quoted in a comment of conf/experiment/ composes."""

from __future__ import annotations

import re
import shlex

import pytest

from qeu_tune.commands.argv import prepare_argv
from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core.paths import CONF_DIR


def commented_commands():
    found = []
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        for line in path.read_text().splitlines():
            match = re.match(r"\s*#\s*(qeu-tune\b.*)$", line)
            if match:
                found.append(pytest.param(match.group(1).strip(), id=f"{path.stem}:{match.group(1).strip()}"))
    return found


COMMANDS = commented_commands()


def test_the_experiments_document_how_to_run_them():
    assert len(COMMANDS) >= 3


@pytest.mark.parametrize("command", COMMANDS)
def test_commented_command_composes(command):
    args = shlex.split(command, comments=True)[1:]
    if args and args[0] == "study":  # a study composes the same config, then plans each design
        args = args[1:]
    cfg = to_plain(compose(prepare_argv(args).argv))
    assert cfg["search"] is not None
