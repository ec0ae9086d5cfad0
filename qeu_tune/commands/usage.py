"""What ``qeu-tune --help`` and ``qeu-tune help`` print, and the answer to a mistyped command.

The page is built from what is installed: the config groups' options come from ``conf/`` and
the user config directory (``compose.group_options``; the ``base_*`` schemas are not options),
the result locations from ``qeu_tune.core.paths``. Hydra's own page stays at ``--hydra-help``.
"""

from __future__ import annotations

import difflib
import textwrap
from typing import List, Optional

from qeu_tune.config.compose import group_options
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.core.paths import CONFIG_DIR_ENV_VAR, HOME_ENV_VAR, qeu_home, resolve_tracking_uri
from qeu_tune.core.redact import redact

# Every command with its one line, in the order of a session (sweep: no command word needed).
COMMANDS = {
    "sweep": "(the default: no command word needed) compose the config with Hydra, run one Ray Tune sweep",
    "study": "does one reward design beat another? tune each, test on held-out seeds, compare",
    "report": "ranked table with CIs over seeds and plots of a sweep, or a study's verdicts",
    "best": "the best configuration of a sweep as overrides and an experiment file",
    "rerun": "rerun a sweep's best configuration (or one trial) on fresh seeds",
    "resume": "continue an interrupted sweep or study into the same MLflow runs",
    "sync": "upload spooled tracking data (offline sweep or MLflow outage); --prune removes confirmed spools",
    "ui": "the MLflow UI on this project's runs, on 127.0.0.1",
    "server": "an MLflow tracking server on PostgreSQL (for a cluster)",
    "knowhow": "fit and describe a reward design's know-how (unit spaces, reference sets), no training",
}
HYDRA_COMMANDS = ("sweep", "study")  # composed by Hydra: KEY=VALUE overrides
HELP_FLAGS = ("-h", "--help")
WIDTH = 100

_USAGE = {
    "sweep": "qeu-tune [sweep] [--config-dir DIR] [-m] [KEY=VALUE ...]",
    "study": "qeu-tune study [--config-dir DIR] [experiment=NAME] [KEY=VALUE ...]",
}
_EXAMPLES = {
    "sweep": [
        ("qeu-tune algo=dqn env=acrobot stop.env_steps=50000", "pick options of config groups, change values"),
        ("qeu-tune experiment=qeu_cliff_compare debug=smoke", "a prepared experiment, shrunk to seconds"),
        (
            "qeu-tune 'algo.params.lr=tag(log,interval(1e-4,1e-2))' search.num_samples=8",
            "a sweep dimension: 8 log-uniform learning rates",
        ),
    ],
    "study": [
        ("qeu-tune study debug=smoke", "the default study (PPO on CartPole, none vs cartpole_rt) in seconds"),
        ("qeu-tune study experiment=my_study", "designs, baseline and budgets from an experiment file"),
        ("qeu-tune study 'study.designs.aa_control=[reward=none]'", "add a design from the command line"),
    ],
}


def is_override_or_flag(word: str) -> bool:
    """Whether a command-line word is a Hydra override (``k=v``, ``+k=v``, ``~k``) or a flag."""
    return "=" in word or word.startswith(("-", "+", "~"))


def unknown_command(word: str) -> Optional[str]:
    """The error for a first word that is neither a command nor an override; None if it is one.

    Example:
        >>> unknown_command("reprot")
        "unknown command 'reprot'; did you mean 'report'?"
    """
    if word in COMMANDS or word == "help" or is_override_or_flag(word):
        return None
    close = difflib.get_close_matches(word, [*COMMANDS, "help"], n=1)
    if close:
        return f"unknown command {word!r}; did you mean {close[0]!r}?"
    return (
        f"unknown command {word!r}; commands: {', '.join(COMMANDS)}. Config values are KEY=VALUE "
        "overrides, e.g. algo=dqn (qeu-tune --help)."
    )


def _groups() -> List[str]:
    lines = []
    for group in (*GROUP_NAMES, "experiment", "debug"):
        options = ", ".join(group_options(group))
        lines += textwrap.wrap(options, WIDTH, initial_indent=f"  {group:<12}", subsequent_indent=" " * 14)
    return lines


def _examples(command: str) -> List[str]:
    return [text for line, why in _EXAMPLES[command] for text in (f"  {line}", f"      {why}")]


def _overrides_and_flags() -> List[str]:
    return [
        "",
        "Any other config value: KEY=VALUE (`qeu-tune --cfg job` prints the composed config); a value in",
        "Hydra's sweep grammar (choice, range, interval, tag) becomes a dimension of the sweep, a single",
        "value (choice(0.001)) stays a fixed value. Hydra's flags work too: --cfg job|hydra|all, -m (one sweep",
        "per Hydra job), --info, --hydra-help, --shell-completion install=bash (README: shell completion).",
    ]


def main_help() -> str:
    """``qeu-tune --help``: what it does, the commands, config groups, examples, where results go."""
    home = qeu_home()
    lines = [
        f"usage: {_USAGE['sweep']}",
        "       qeu-tune COMMAND [ARGS ...]   (qeu-tune COMMAND --help, or qeu-tune help COMMAND)",
        "",
        "qeu-tune sweeps reinforcement-learning hyperparameters and reward designs: Ray Tune over RLlib, with",
        "RT-method (Mahalanobis-Taguchi) metrics as reward feedback, every trial recorded in MLflow.",
        "",
        "commands:",
        *(f"  {name:<10}{line}" for name, line in COMMANDS.items()),
        "",
        f"config groups (GROUP=OPTION; add your own in ./conf, --config-dir DIR or ${CONFIG_DIR_ENV_VAR}):",
        *_groups(),
        *_overrides_and_flags(),
        "",
        "examples:",
        *_examples("sweep"),
        "  qeu-tune report SWEEP; qeu-tune best SWEEP",
        "      compare a finished sweep's configurations (CIs over seeds), write its best as an experiment",
        "",
        f"results: under ${HOME_ENV_VAR} (here {home}):",
        f"  MLflow runs      {redact(resolve_tracking_uri(None))}  (tracking.uri=... or $MLFLOW_TRACKING_URI to change)",
        f"  MLflow artifacts {home / 'mlartifacts'}  (configs, reports)",
        f"  Ray Tune         {home / 'ray_results'}  (checkpoints, Tune's state for `qeu-tune resume`)",
        f"  Hydra            {home / 'hydra'}  (run directories)",
        "Browse them with `qeu-tune ui`. Documentation: README.md, docs/.",
    ]
    return "\n".join(lines)


def command_help(command: str) -> str:
    """``qeu-tune sweep --help`` / ``qeu-tune study --help``: the Hydra-composed commands."""
    lines = [f"usage: {_USAGE[command]}", "", f"{command}: {COMMANDS[command]}.", ""]
    if command == "study":
        lines += [
            "Without experiment=..., the default study (experiment=study_cartpole). Designs are",
            "study.designs.NAME=[OVERRIDES]; the printed verdict table is also the study run's description in",
            "MLflow. An interrupted study goes on with `qeu-tune resume STUDY`.",
            "",
        ]
    lines += [
        "config groups (GROUP=OPTION):",
        *_groups(),
        *_overrides_and_flags(),
        "",
        "examples:",
        *_examples(command),
    ]
    return "\n".join(lines)
