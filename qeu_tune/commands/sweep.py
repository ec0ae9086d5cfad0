"""``qeu-tune [--config-dir DIR] [HYDRA OVERRIDES]``: compose the config with Hydra and run the sweep.

Sweep-grammar values given as plain overrides become dimensions of that one sweep
(``qeu_tune.commands.argv``), while ``-m`` runs one sweep per Hydra multirun job. Known errors
become one paragraph on stderr and exit code 2, before Ray starts.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any, Callable, List, Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from qeu_tune.analysis import format_report
from qeu_tune.commands.argv import check_hydra_overrides, fix_dimensions, prepare_argv
from qeu_tune.commands.console import fail
from qeu_tune.config.compose import setup_hydra, to_plain
from qeu_tune.config.run_files import OUTPUT_SUBDIR, hydra_escaped, write_run_files
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import CONF_DIR, resolve_tracking_uri
from qeu_tune.core.redact import (
    find_env_interpolations,
    protect_console,
    redact,
    register_config,
    register_secrets,
    uri_secrets,
)
from qeu_tune.core.secrets import recorded_uri, register_env_forms
from qeu_tune.engine.plan import plan_sweep
from qeu_tune.engine.run import SweepResult, run_sweep

_COMMAND_LINE: List[str] = []  # the arguments as typed (main() rewrites sys.argv for Hydra)
_RUN_FILES = [OUTPUT_SUBDIR]  # where each job writes its redacted .hydra files (hydra.output_subdir)
_OUTPUT_SUBDIR_KEY = "hydra.output_subdir="


def protect_job(cfg: Any) -> None:
    """First thing in a Hydra job: its secrets known, masked in logs, its run files redacted."""
    register_secrets(find_env_interpolations(cfg).values())  # ${oc.env:...} values: *** when recorded
    register_config(OmegaConf.to_container(cfg, resolve=False))  # URI passwords, also where Hydra escapes them
    register_env_forms(cfg)  # ... and recorded as the interpolation, for `resume`
    protect_console()  # Hydra's job log file too
    write_run_files(cfg, _RUN_FILES[0])


def sweep(cfg: Any) -> Optional[float]:
    """Runs the sweep of a composed config; returns the best value of the search metric."""
    overrides = typed_overrides()
    protect_job(cfg)
    try:
        plan = plan_sweep(plain_config(cfg), overrides)
    except ConfigError as err:
        fail(str(err))
    try:
        result = run_sweep(plan, command=shlex.join(["qeu-tune", *(_COMMAND_LINE or sys.argv[1:])]))
    except ConfigError as err:  # e.g. an unreachable cluster
        fail(str(err))
    return finish(result)


def typed_overrides() -> List[str]:
    """The job's overrides as typed: ``${oc.env:NAME}`` unresolved (iterating Hydra's list resolves it)."""
    return list(OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False))


def plain_config(cfg: Any) -> Any:
    """``to_plain``; an interpolation that does not resolve is a config error. Inside
    ``hydra.main``, values fixed on the command line replace the experiment's search
    dimensions of the same keys (``fix_dimensions``)."""
    try:
        config = to_plain(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(" ".join(line.strip() for line in str(err).splitlines() if line.strip())) from None
    if HydraConfig.initialized():
        fix_dimensions(config, typed_overrides())  # keys only: nothing resolved
    return config


def finish(result: SweepResult) -> Optional[float]:
    """Prints the summary; exits non-zero when interrupted (130/143) or every trial failed."""
    _print_summary(result)
    if result.interrupted:
        raise SystemExit(result.exit_code)
    if result.num_trials and result.num_errors == result.num_trials:
        print(
            f"qeu-tune: error: every trial failed ({result.num_errors} of {result.num_trials}); "
            "see each trial's qeu.error tag or the messages above.",
            file=sys.stderr,
        )
        raise SystemExit(1)
    best = result.best
    return None if not best or best.get("value") is None else float(best["value"])


def _print_summary(result: SweepResult) -> None:
    uri_flag = "" if result.tracking_uri == default_uri() else f" --tracking-uri {redact(result.tracking_uri)}"
    sweep_ref = result.parent_run_id or "<sweep name>"
    print()
    if result.interrupted:
        print(
            f"Sweep interrupted by {result.interrupted}: {result.num_trials} trials started, "
            f"{result.num_errors} failed; unfinished trials and the parent run are marked KILLED."
        )
        print(f"Continue it with: {resume_command(result.tracking_uri, sweep_ref)}")
    else:
        failed = f", {result.num_errors} failed" if result.num_errors else ""
        print(f"Sweep {result.status}: {result.num_trials} trials{failed}.")
        if result.report is not None:
            print(format_report(result.report))
        best = result.best
        if best and best.get("by"):
            seeds = f"{best['seeds']} seed{'s' if best['seeds'] != 1 else ''}"
            print(
                f"Best configuration (IQM over {seeds} of {best['by']}): {best['label']} = "
                f"{best['ci']}; its best seed: MLflow run {best['run_id']}"
            )
        if best and best.get("last"):
            last = best["last"]
            print(
                f"  (single trial with the best last {last['metric']}, not the ranking rule: "
                f"{last['trial_id']} ({last['description'] or 'base config'}) = {last['value']:.4g})"
            )
    if result.spool:
        print(
            f"MLflow did not take every point; they are kept in {result.spool}. "
            f"Upload them with: qeu-tune{uri_flag} sync"
        )
    print(f"Parent run: {result.parent_run_id}  (experiment id {result.experiment_id})")
    print(f"Tracking URI: {redact(result.tracking_uri)}")
    if not result.interrupted:
        print(f"Next: qeu-tune{uri_flag} report {sweep_ref} | qeu-tune{uri_flag} best ... | qeu-tune{uri_flag} ui")


def default_uri() -> str:
    return resolve_tracking_uri(None)


def resume_command(tracking_uri: str, ref: str) -> str:
    """``qeu-tune resume`` as printed: a URI whose password came from ``${oc.env:NAME}`` in
    that form (it runs as printed), any other with its password masked."""
    shown = recorded_uri(tracking_uri)
    if shown != redact(tracking_uri):
        return shlex.join(["qeu-tune", "resume", ref, f"tracking.uri={shown}"])
    return f"qeu-tune{'' if tracking_uri == default_uri() else f' --tracking-uri {shown}'} resume {ref}"


def run(argv: Sequence[str], *, command_line: Sequence[str], task: Callable[[Any], Any] = sweep) -> None:
    """Composes ``argv`` with Hydra (checked first: exit 2 on a bad override) and runs ``task``
    (the sweep, or ``qeu-tune study``) on the composed config."""
    _COMMAND_LINE[:] = command_line
    setup_hydra()
    # Sweep-grammar overrides without -m -> search.space; reward.metrics.* may add keys;
    # the user config directory on Hydra's search path (qeu_tune/commands/argv.py).
    sys.argv = [sys.argv[0], *prepare_argv(argv).argv]
    # Hydra's own .hydra files would hold the command line as typed: the job writes them.
    for arg in [a for a in sys.argv[1:] if a.lstrip("+").startswith(_OUTPUT_SUBDIR_KEY)]:
        sys.argv.remove(arg)
        value = arg.split("=", 1)[1]
        _RUN_FILES[0] = None if value in ("null", "") else value
    # A multirun's launcher logs each job's overrides (values escaped) before any job starts.
    typed = set().union(*(uri_secrets(a.partition("=")[2]) for a in sys.argv[1:]))
    register_secrets(typed | {hydra_escaped(s) for s in typed})
    protect_console()
    try:  # Hydra's compose errors: exit 2 and one paragraph, before hydra.main's exit 1
        check_hydra_overrides(sys.argv[1:])
    except ConfigError as err:
        fail(str(err))
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)()
