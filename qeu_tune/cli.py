"""``qeu-tune``: a thin command line over the sweep engine.

``qeu-tune [--config-dir DIR] [HYDRA OVERRIDES]`` composes the shipped configs (plus the
user config directory) with Hydra and runs the sweep; sweep-grammar values given as plain
overrides become dimensions of that one sweep (``qeu_tune.config.cmdline``), while ``-m``
runs one sweep per Hydra multirun job. ``qeu-tune report|best|rerun|ui ...`` read recorded
sweeps back from MLflow; ``qeu-tune knowhow ...`` describes a reward design's know-how
(``qeu_tune.knowhow_report``). Known errors become one paragraph on stderr and exit code 2,
before Ray starts.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any, Optional, Sequence

from qeu_tune.config.errors import ConfigError
from qeu_tune.paths import CONF_DIR
from qeu_tune.redact import redact

EXIT_CONFIG_ERROR = 2
_COMMAND_LINE: list = []  # the arguments as typed (main() rewrites sys.argv for Hydra)


def fail(message: str) -> None:
    """Prints a one-paragraph error and exits with code 2."""
    print(f"qeu-tune: error: {redact(message)}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)


def sweep(cfg: Any) -> Optional[float]:
    """Runs the sweep of a composed config; returns the best value of the search metric."""
    from hydra.core.hydra_config import HydraConfig

    from qeu_tune.redact import find_env_interpolations, register_secrets
    from qeu_tune.sweep import plan_sweep, run_sweep

    overrides = list(HydraConfig.get().overrides.task)
    register_secrets(find_env_interpolations(cfg).values())  # ${oc.env:...} values: *** when recorded
    try:
        plan = plan_sweep(_plain_config(cfg), overrides)
    except ConfigError as err:
        fail(str(err))
    try:
        result = run_sweep(plan, command=shlex.join(["qeu-tune", *(_COMMAND_LINE or sys.argv[1:])]))
    except ConfigError as err:  # e.g. an unreachable cluster
        fail(str(err))
    return finish(result)


def _plain_config(cfg: Any) -> Any:
    """``to_plain``; an interpolation that does not resolve is a config error."""
    from omegaconf.errors import OmegaConfBaseException

    from qeu_tune.config.compose import to_plain

    try:
        return to_plain(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(" ".join(line.strip() for line in str(err).splitlines() if line.strip())) from None


def finish(result: Any) -> Optional[float]:
    """Prints the summary; exits non-zero when interrupted (130/143) or every trial failed."""
    _print_summary(result)
    if result.interrupted:
        raise SystemExit(result.exit_code)
    if result.num_trials and result.num_errors == result.num_trials:
        print(f"qeu-tune: error: every trial failed ({result.num_errors} of {result.num_trials}); "
              "see each trial's qeu.error tag or the messages above.", file=sys.stderr)
        raise SystemExit(1)
    best = result.best
    return None if not best or best.get("value") is None else float(best["value"])


def _print_summary(result: Any) -> None:
    uri_flag = "" if result.tracking_uri == _default_uri() else f" --tracking-uri {redact(result.tracking_uri)}"
    sweep_ref = result.parent_run_id or "<sweep name>"
    print()
    if result.interrupted:
        print(f"Sweep interrupted by {result.interrupted}: {result.num_trials} trials started, "
              f"{result.num_errors} failed; unfinished trials and the parent run are marked KILLED.")
        print(f"Continue it with: qeu-tune{uri_flag} resume {sweep_ref}")
    else:
        failed = f", {result.num_errors} failed" if result.num_errors else ""
        print(f"Sweep {result.status}: {result.num_trials} trials{failed}.")
        if result.report is not None:
            from qeu_tune.analysis import print_report

            print_report(result.report)
        best = result.best
        if best and best.get("by"):
            seeds = f"{best['seeds']} seed{'s' if best['seeds'] != 1 else ''}"
            print(f"Best configuration (IQM over {seeds} of {best['by']}): {best['label']} = "
                  f"{best['ci']}; its best seed: MLflow run {best['run_id']}")
        if best and best.get("last"):
            last = best["last"]
            print(f"  (single trial with the best last {last['metric']}, not the ranking rule: "
                  f"{last['trial_id']} ({last['description'] or 'base config'}) = {last['value']:.4g})")
    if result.spool:
        print(f"MLflow did not take every point; they are kept in {result.spool}. "
              f"Upload them with: qeu-tune{uri_flag} sync")
    print(f"Parent run: {result.parent_run_id}  (experiment id {result.experiment_id})")
    print(f"Tracking URI: {redact(result.tracking_uri)}")
    if not result.interrupted:
        print(f"Next: qeu-tune{uri_flag} report {sweep_ref} | qeu-tune{uri_flag} best ... | "
              f"qeu-tune{uri_flag} ui")


def _default_uri() -> str:
    from qeu_tune.paths import resolve_tracking_uri

    return resolve_tracking_uri(None)


SUBCOMMANDS = ("report", "best", "rerun", "ui", "resume", "sync")


def _subcommand_parser() -> Any:
    import argparse

    from qeu_tune.ui import DEFAULT_HOST, DEFAULT_PORT

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tracking-uri", default=argparse.SUPPRESS,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local SQLite file)")
    parser = argparse.ArgumentParser(prog="qeu-tune", parents=[common], description="Read recorded sweeps back from MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", parents=[common], help="start the MLflow UI on this project's tracking backend")
    ui.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1: local only)")
    ui.add_argument("--port", type=int, default=DEFAULT_PORT)
    for name, text in (("report", "ranked table and plots of a sweep"), ("best", "the best configuration of a sweep")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("sweep", help="parent run id or sweep name")
        p.add_argument("--by", default=None, help="statistic to rank by (default: IQM of final return over seeds)")
        p.add_argument("--baseline", default=None, help="configuration (reward name or config key) for probability of improvement")
        p.add_argument("--out", default=None, help="directory for tables/plots (report) or the experiment file (best)")
        if name == "report":
            p.add_argument("--threshold", type=float, default=None,
                           help="return threshold for steps_to_threshold (default: env.return_threshold)")
            p.add_argument("--metric", default=None,
                           help="curve the statistics use, e.g. eval/return_env/mean or return_env/mean "
                                "(default: each trial's convergence.metric)")
            p.add_argument("--log", action="store_true",
                           help="also replace the report/ artifacts of the sweep's parent run")
    resume = sub.add_parser("resume", parents=[common], help="continue an interrupted sweep into the same MLflow runs")
    resume.add_argument("sweep", help="parent run id or sweep name")
    resume.add_argument("--restart-errored", action="store_true",
                        help="also retry trials that had failed, from their last checkpoint")
    sync = sub.add_parser("sync", parents=[common], help="upload spooled tracking data (offline sweep or MLflow outage)")
    sync.add_argument("spool_dir", nargs="?", default=None,
                      help="a sweep's spool directory (default: every spool under $QEU_TUNE_HOME/spool)")
    rerun = sub.add_parser("rerun", parents=[common], help="rerun a sweep's best configuration (or one trial) on fresh seeds")
    rerun.add_argument("ref", help="parent run id / sweep name, or a trial's run id")
    rerun.add_argument("--seeds", type=int, default=None, help="number of fresh seeds (default: the sweep's num_seeds)")
    rerun.add_argument("--by", default=None, help="statistic that picks the best configuration")
    rerun.add_argument("overrides", nargs="*", help="extra Hydra-style overrides, e.g. cluster.address=auto")
    return parser


def run_subcommand(argv: Sequence[str]) -> int:
    """``qeu-tune report|best|rerun|ui``; returns the exit code."""
    from qeu_tune.paths import resolve_tracking_uri

    args = _subcommand_parser().parse_args(list(argv))
    uri = resolve_tracking_uri(getattr(args, "tracking_uri", None))
    try:
        if args.command == "sync":  # default URI: the one each spool was recorded for
            from qeu_tune.journal import run_sync

            uri_args = ["--tracking-uri", args.tracking_uri] if getattr(args, "tracking_uri", None) else []
            return run_sync([*([args.spool_dir] if args.spool_dir else []), *uri_args])
        if args.command == "resume":
            from qeu_tune.resume import resume_sweep

            return _exit_code(lambda: finish(resume_sweep(uri, args.sweep, restart_errored=args.restart_errored)))
        if args.command == "ui":
            from qeu_tune.ui import run_ui

            return run_ui(tracking_uri=uri, host=args.host, port=args.port)
        from qeu_tune import analysis

        if args.command == "report":
            analysis.report_command(uri, args.sweep, by=args.by, baseline=args.baseline,
                                    threshold=args.threshold, metric=args.metric, out=args.out, log=args.log)
        elif args.command == "best":
            analysis.best_command(uri, args.sweep, by=args.by, out=args.out)
        else:
            analysis.rerun_command(uri, args.ref, seeds=args.seeds, by=args.by, overrides=args.overrides)
    except ConfigError as err:
        fail(str(err))
    return 0


def _exit_code(call: Any) -> int:
    try:
        call()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``qeu-tune`` console script."""
    import hydra

    from qeu_tune.config.compose import setup_hydra

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    if sys.argv[1:2] == ["server"]:  # PostgreSQL + `mlflow server`: qeu_tune/server.py
        from qeu_tune.server import main as server_main

        raise SystemExit(server_main(sys.argv[2:]))
    from qeu_tune.config.cmdline import prepare_argv, use_config_dir
    from qeu_tune.console import quiet_console

    if "verbose=2" not in sys.argv[1:]:
        quiet_console()  # known noise: Ray's token notice, MLflow's table creation, font cache
    _COMMAND_LINE[:] = sys.argv[1:]
    try:  # --config-dir DIR: the user's own config groups (also $QEU_TUNE_CONFIG_DIR, ./conf)
        sys.argv = [sys.argv[0], *use_config_dir(sys.argv[1:])]
    except ConfigError as err:
        fail(str(err))
    if sys.argv[1:2] == ["knowhow"]:  # fit a reward design's know-how, no training
        from qeu_tune.knowhow_report import main as knowhow_main

        raise SystemExit(knowhow_main(sys.argv[2:]))
    if len(sys.argv) > 1 and (sys.argv[1] in SUBCOMMANDS or sys.argv[1].startswith("--tracking-uri")):
        raise SystemExit(run_subcommand(sys.argv[1:]))
    setup_hydra()
    from qeu_tune.config.validate import check_hydra_overrides

    # Sweep-grammar overrides without -m -> search.space; reward.metrics.* may add keys;
    # the user config directory on Hydra's search path (qeu_tune/config/cmdline.py).
    sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:]).argv]

    try:  # Hydra's compose errors: exit 2 and one paragraph, before hydra.main's exit 1
        check_hydra_overrides(sys.argv[1:])
    except ConfigError as err:
        fail(str(err))
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(sweep)()
    if argv is None:  # the console script, not a caller in this process: end quickly
        _fast_exit(0)


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
