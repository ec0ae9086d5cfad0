"""``qeu-tune``: a thin command line over the sweep engine.

``qeu-tune [HYDRA OVERRIDES]`` composes ``conf/`` with Hydra and runs the sweep
(``-m`` runs one sweep per Hydra multirun job). Known errors become one paragraph on
stderr and exit code 2, before Ray starts.
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
    result = run_sweep(plan, command=shlex.join(["qeu-tune", *sys.argv[1:]]))
    _print_summary(result)
    return None if result.best is None else float(result.best["value"])


def _print_summary(result: Any) -> None:
    print()
    print(f"Sweep {result.status}: {result.num_trials} trials, {result.num_errors} failed.")
    if result.best:
        best = result.best
        print(f"Best trial: {best['trial_id']} ({best['description'] or 'base config'}) "
              f"{best['metric']} = {best['value']:.4g}")
        print(f"  MLflow run: {best['run_id']}")
    print(f"Parent run: {result.parent_run_id}  (experiment id {result.experiment_id})")
    print(f"Tracking URI: {result.tracking_uri}")
    print(f"Browse: mlflow ui --backend-store-uri {result.tracking_uri} --host 127.0.0.1")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the ``qeu-tune`` console script."""
    import hydra

    from qeu_tune.config.compose import setup_hydra

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    setup_hydra()
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(sweep)()


if __name__ == "__main__":
    main()
