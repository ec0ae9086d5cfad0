"""The command line explains itself: help pages, mistyped commands, shell completion."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qeu_tune.commands.completion import suggestions
from qeu_tune.commands.main import main
from qeu_tune.commands.usage import COMMANDS, unknown_command
from qeu_tune.config.compose import group_options
from qeu_tune.config.groups import GROUP_NAMES

QEU_TUNE = Path(sys.executable).parent / "qeu-tune"  # the console script, as users run it


def run_main(capsys, *argv):
    """``qeu-tune ARGV`` in this process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def test_help_says_what_it_does_every_command_the_groups_examples_and_where_results_go(capsys, isolated_home):
    code, page, _ = run_main(capsys, "--help")
    assert code == 0
    lines = page.splitlines()
    assert lines[0].startswith("usage: qeu-tune") and "reinforcement-learning" in page and "MLflow" in page
    for name in COMMANDS:  # every command, one line each
        assert sum(line.startswith(f"  {name} ") for line in lines) == 1, name
    for group in (*GROUP_NAMES, "experiment", "debug"):  # every group with the options in conf/
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {group} "))
        text = " ".join(line.strip() for line in lines[start : start + 4])
        assert all(option in text for option in group_options(group)), group
    assert "base_" not in page  # schemas are not options
    examples = lines[lines.index("examples:") + 1 :]
    assert sum(line.startswith("  qeu-tune ") for line in examples[:8]) >= 3
    assert "$QEU_TUNE_HOME" in page and str(isolated_home) in page and "mlflow.db" in page
    assert run_main(capsys, "help") == (0, page, "")  # `qeu-tune help` is the same page


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_its_help(command, capsys):
    code, page, _ = run_main(capsys, command, "--help")
    assert code == 0
    usage = "usage: qeu-tune [sweep]" if command == "sweep" else f"usage: qeu-tune {command}"
    assert page.startswith(usage), page[:200]
    assert len(page.splitlines()) > 3  # more than a usage line: what it does, its arguments
    assert run_main(capsys, "help", command) == (0, page, "")


def test_a_mistyped_command_is_one_line_naming_the_closest_command(capsys):
    for argv in (["reprot", "x"], ["help", "reprot"], ["--tracking-uri", "sqlite:////tmp/x.db", "reprot", "x"]):
        assert run_main(capsys, *argv) == (2, "", "qeu-tune: error: unknown command 'reprot'; did you mean 'report'?\n")
    code, _, err = run_main(capsys, "xyzzy")
    assert code == 2 and len(err.splitlines()) == 1 and "commands: sweep, study, report" in err
    for word in ("algo=dqn", "+x=1", "++y=2", "~reward.metrics.route", "-m", "--cfg", "report", "help"):
        assert unknown_command(word) is None, word  # overrides, flags and commands are fine


@pytest.mark.slow  # three `qeu-tune` processes that import Ray (~30 s on 2 busy cores)
def test_hydras_flags_still_work_through_the_entry_point(tmp_path):
    env = {**os.environ, "QEU_TUNE_HOME": str(tmp_path / "home")}

    def qeu(*argv):
        return subprocess.run(
            [str(QEU_TUNE), *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
        )

    cfg = qeu("algo=dqn", "algo.params.lr=choice(0.01)", "--cfg", "job")  # one value: a plain override
    assert cfg.returncode == 0 and "name: dqn" in cfg.stdout and "lr: 0.01" in cfg.stdout
    assert "Hydra (" in qeu("--hydra-help").stdout
    script = qeu("--shell-completion", "install=bash")
    assert (
        script.returncode == 0 and "complete -o nospace -o default -F hydra_bash_completion qeu-tune" in script.stdout
    )
    bash = shutil.which("bash")
    if bash is None:
        return
    # The installed script asks `qeu-tune -sc query=bash` on Tab: commands and config options both complete.
    tab = (
        'eval "$(qeu-tune -sc install=bash)"; complete_line() { COMP_LINE="$1"; COMP_POINT=${#1}; '
        'COMP_CWORD=$2; hydra_bash_completion; echo "${COMPREPLY[*]}"; }; '
        'complete_line "qeu-tune rep" 1; complete_line "qeu-tune study algo=d" 2'
    )
    done = subprocess.run(
        [bash, "-c", tab], capture_output=True, text=True, env={**env, "PATH": f"{QEU_TUNE.parent}:{env['PATH']}"}
    )
    assert done.stdout.splitlines() == ["report", "algo=dqn"], done.stderr


@pytest.mark.parametrize(
    "line, wanted, unwanted",
    [
        ("qeu-tune re", {"report", "rerun", "resume", "reward="}, set()),
        ("qeu-tune algo=", {"algo=ppo", "algo=dqn"}, {"algo=base_algo"}),  # schemas are not options
        ("qeu-tune study al", {"algo="}, {"study"}),
        ("qeu-tune sweep algo=ppo env=", {"env=cartpole", "env=qeu_cliff"}, {"env=base_env"}),
        ("qeu-tune help r", {"report", "rerun", "resume"}, {"reward="}),
        ("qeu-tune report ", set(), {"algo="}),  # arguments of argparse commands: the shell's file names
        ("qeu-tune -m algo=ppo,dqn s", {"search=", "stop."}, {"sweep"}),  # commands only come first
    ],
)
def test_completion_offers_commands_first_then_hydras_overrides(line, wanted, unwanted):
    got = set(suggestions(line))
    assert wanted <= got and not (unwanted & got), sorted(got)


def test_completion_knows_the_user_config_directory(tmp_path):
    (tmp_path / "conf" / "reward").mkdir(parents=True)
    (tmp_path / "conf" / "reward" / "mine.yaml").write_text("defaults: [base_reward]\nname: mine\n")
    assert "reward=mine" in suggestions(f"qeu-tune --config-dir {tmp_path / 'conf'} reward=mi")
    assert "reward=mine" not in suggestions("qeu-tune reward=mi")
