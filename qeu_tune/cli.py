"""``qeu-tune``: a thin command line over the sweep engine.

``qeu-tune [HYDRA OVERRIDES]`` composes ``conf/`` with Hydra and runs the sweep
(``-m`` runs one sweep per Hydra multirun job). ``qeu-tune report|best|rerun|ui ...`` read
recorded sweeps back from MLflow. Known errors become one paragraph on stderr and exit
code 2, before Ray starts.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any, Optional, Sequence

from qeu_tune.config.errors import ConfigError
from qeu_tune.paths import CONF_DIR

EXIT_CONFIG_ERROR = 2


def fail(message: str) -> None:
    """Prints a one-paragraph error and exits with code 2."""
    print(f"qeu-tune: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)


def sweep(cfg: Any) -> Optional[float]:
    """Runs the sweep of a composed config; returns the best value of the search metric."""
    from hydra.core.hydra_config import HydraConfig

    from qeu_tune.config.compose import to_plain
    from qeu_tune.sweep import plan_sweep, run_sweep

    overrides = list(HydraConfig.get().overrides.task)
    try:
        plan = plan_sweep(to_plain(cfg), overrides)
    except ConfigError as err:
        fail(str(err))
    try:
        result = run_sweep(plan, command=shlex.join(["qeu-tune", *sys.argv[1:]]))
    except ConfigError as err:  # e.g. an unreachable cluster
        fail(str(err))
    _print_summary(result)
    return None if result.best is None else float(result.best["value"])


def _print_summary(result: Any) -> None:
    print()
    print(f"Sweep {result.status}: {result.num_trials} trials, {result.num_errors} failed.")
    if result.report is not None:
        from qeu_tune.analysis import print_report

        print_report(result.report)
    if result.best:
        best = result.best
        print(f"Best trial by last {best['metric']}: {best['trial_id']} "
              f"({best['description'] or 'base config'}) = {best['value']:.4g}, MLflow run {best['run_id']}")
    print(f"Parent run: {result.parent_run_id}  (experiment id {result.experiment_id})")
    print(f"Tracking URI: {result.tracking_uri}")
    uri_flag = "" if result.tracking_uri == _default_uri() else f" --tracking-uri {result.tracking_uri}"
    print(f"Next: qeu-tune{uri_flag} report {result.parent_run_id} | qeu-tune{uri_flag} best ... | "
          f"qeu-tune{uri_flag} ui")


def _default_uri() -> str:
    from qeu_tune.paths import resolve_tracking_uri

    return resolve_tracking_uri(None)


SUBCOMMANDS = ("report", "best", "rerun", "ui")


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
            p.add_argument("--log", action="store_true",
                           help="also replace the report/ artifacts of the sweep's parent run")
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
        if args.command == "ui":
            from qeu_tune.ui import run_ui

            return run_ui(tracking_uri=uri, host=args.host, port=args.port)
        from qeu_tune import analysis

        if args.command == "report":
            analysis.report_command(uri, args.sweep, by=args.by, baseline=args.baseline,
                                    threshold=args.threshold, out=args.out, log=args.log)
        elif args.command == "best":
            analysis.best_command(uri, args.sweep, by=args.by, out=args.out)
        else:
            analysis.rerun_command(uri, args.ref, seeds=args.seeds, by=args.by, overrides=args.overrides)
    except ConfigError as err:
        fail(str(err))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``qeu-tune`` console script."""
    import hydra

    from qeu_tune.config.compose import setup_hydra

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    if len(sys.argv) > 1 and (sys.argv[1] in SUBCOMMANDS or sys.argv[1].startswith("--tracking-uri")):
        raise SystemExit(run_subcommand(sys.argv[1:]))
    setup_hydra()
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(sweep)()


if __name__ == "__main__":
    main()
