"""``qeu-tune``: the entry point; hands each command line to its command module.

``qeu-tune [--config-dir DIR] [HYDRA OVERRIDES]`` runs a sweep (``commands.sweep``), ``qeu-tune
study ...`` a reward-design study (``commands.study``);
``qeu-tune report|best|rerun|resume|sync|ui ...`` read or continue recorded sweeps;
``qeu-tune knowhow ...`` describes a reward design's know-how; ``qeu-tune server`` runs MLflow
on PostgreSQL. ``qeu-tune --help`` / ``qeu-tune help [COMMAND]`` print ``commands.usage``'s
pages, ``--shell-completion`` is answered by ``commands.completion``, and a first word that is
neither a command nor an override is an error naming the closest command. Command modules are
imported when their command runs, so reading results back never loads Ray or torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from qeu_tune.commands import completion
from qeu_tune.commands.argv import use_config_dir
from qeu_tune.commands.console import fail, quiet_console
from qeu_tune.commands.usage import COMMANDS, HELP_FLAGS, HYDRA_COMMANDS, command_help, main_help, unknown_command
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import resolve_tracking_uri

# command -> module of qeu_tune.commands with add_parser(sub, common) and run(args, uri)
SUBCOMMANDS = {"report": "report", "best": "best", "rerun": "rerun", "ui": "ui", "resume": "resume", "sync": "sync"}


def _subcommand_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tracking-uri",
        default=argparse.SUPPRESS,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local SQLite file)",
    )
    parser = argparse.ArgumentParser(
        prog="qeu-tune", parents=[common], description="Read recorded sweeps back from MLflow."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        importlib.import_module(f"qeu_tune.commands.{module}").add_parser(sub, common)
    for name, command in sub.choices.items():  # `qeu-tune report --help` starts with what it does
        command.description = command.description or COMMANDS[name][0].upper() + COMMANDS[name][1:] + "."
    return parser


def run_subcommand(argv: Sequence[str]) -> int:
    """``qeu-tune report|best|rerun|resume|sync|ui``; returns the exit code."""
    args = _subcommand_parser().parse_args(list(argv))
    command = importlib.import_module(f"qeu_tune.commands.{SUBCOMMANDS[args.command]}")
    try:
        if args.command == "sync":  # default URI: the one each spool was recorded for
            return command.run(args)
        return command.run(args, resolve_tracking_uri(getattr(args, "tracking_uri", None)))
    except ConfigError as err:
        fail(str(err))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``qeu-tune`` console script."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    if sys.argv[1:2] == ["help"]:  # `qeu-tune help [COMMAND]` is `qeu-tune [COMMAND] --help`
        sys.argv = [sys.argv[0], *[w for w in sys.argv[2:3] if w != "help"], "--help"]
    if sys.argv[1:2] == ["server"]:  # PostgreSQL + `mlflow server`: qeu_tune/commands/server.py
        from qeu_tune.commands.server import main as server_main

        raise SystemExit(server_main(sys.argv[2:]))
    if "verbose=2" not in sys.argv[1:]:
        quiet_console()  # known noise: Ray's token notice, MLflow's table creation, font cache
    command_line = sys.argv[1:]
    try:  # --config-dir DIR: the user's own config groups (also $QEU_TUNE_CONFIG_DIR, ./conf)
        sys.argv = [sys.argv[0], *use_config_dir(sys.argv[1:])]
    except ConfigError as err:
        fail(str(err))
    _help_completion_and_typos(sys.argv[1:])
    if sys.argv[1:2] == ["sweep"]:  # the default command, named
        del sys.argv[1]
    if sys.argv[1:2] == ["knowhow"]:  # fit a reward design's know-how, no training
        from qeu_tune.commands.knowhow import main as knowhow_main

        raise SystemExit(knowhow_main(sys.argv[2:]))
    if len(sys.argv) > 1 and (sys.argv[1] in SUBCOMMANDS or sys.argv[1].startswith("--tracking-uri")):
        raise SystemExit(run_subcommand(sys.argv[1:]))
    if sys.argv[1:2] == ["study"]:  # tune each design, test it on held-out seeds, compare
        from qeu_tune.commands import study

        study.run(sys.argv[2:], command_line=command_line)
    else:
        from qeu_tune.commands import sweep  # Hydra, Ray Tune and RLlib: only for a sweep

        sweep.run(sys.argv[1:], command_line=command_line)
    if argv is None:  # the console script, not a caller in this process: end quickly
        _fast_exit(0)


def _help_completion_and_typos(args: Sequence[str]) -> None:
    """Answers ``--help`` of the Hydra-composed commands and shell-completion requests (then
    exits 0), and stops a mistyped command word with one line (exit 2) before Hydra reads it as a
    malformed override. Argparse commands answer their own ``--help``."""
    spec = completion.request(args)
    if spec is not None:
        completion.run(spec, os.environ.get("COMP_LINE"))
        raise SystemExit(0)
    rest = list(args)
    while rest and rest[0].split("=", 1)[0] == "--tracking-uri":  # qeu-tune --tracking-uri URI report ...
        rest = rest[1:] if "=" in rest[0] else rest[2:]
    word = rest[0] if rest else None
    error = unknown_command(word) if word is not None else None
    if error:
        fail(error)
    if word in SUBCOMMANDS or word in ("knowhow", "server") or not any(a in HELP_FLAGS for a in rest):
        return
    if word in HYDRA_COMMANDS:
        print(command_help(word))
    else:
        print(main_help())
    raise SystemExit(0)


def _fast_exit(code: int) -> None:
    """Exits once everything is written, without the interpreter's teardown.

    Tearing down the modules of torch, Ray, MLflow and pandas takes seconds after the
    sweep is over (measured: ~2-4 s on 2 cores; scripts/bench_overhead.py). Here Ray is
    shut down, the ``atexit`` handlers run, logs and streams are flushed, then the
    process ends with ``os._exit``.
    """
    import atexit
    import logging
    import os

    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001 - exiting anyway; Ray's reaper ends its processes
        pass
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
