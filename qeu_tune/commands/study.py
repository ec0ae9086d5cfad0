"""``qeu-tune study [experiment=FILE] [OVERRIDES]``: does one reward design beat another?

Composed by Hydra like a sweep. Without ``experiment=`` it runs the small default study
(``conf/experiment/study_cartpole.yaml``: PPO on CartPole, no feedback vs RT feedback). Each
design is tuned with the same budget on tuning seeds, its best configuration tested on held-out
seeds, and the designs compared; the verdict table is printed at the end and recorded on the
study's MLflow run (``qeu-tune report STUDY`` prints it again).
"""

from __future__ import annotations

import shlex
from typing import Any, Sequence

from qeu_tune.analysis.study_report import format_summary
from qeu_tune.commands import sweep
from qeu_tune.commands.console import fail
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.redact import redact
from qeu_tune.engine.study import StudyResult, plan_study, resume_study, run_study

DEFAULT_EXPERIMENT = "study_cartpole"


def study(cfg: Any) -> None:
    """Plans (every check, before anything runs) and runs the study of a composed config."""
    overrides = [o for o in sweep.typed_overrides() if not o.startswith("hydra.")]
    sweep.protect_job(cfg)
    try:
        plan = plan_study(sweep.plain_config(cfg), overrides)
        result = run_study(plan, command=shlex.join(["qeu-tune", "study", *overrides]), notify=print)
    except ConfigError as err:
        fail(str(err))
    finish(result)


def finish(result: StudyResult) -> None:
    """Prints the verdict table (or how to continue); exits 130/143 when interrupted."""
    uri_flag = "" if result.tracking_uri == sweep.default_uri() else f" --tracking-uri {redact(result.tracking_uri)}"
    print()
    if result.summary is not None:
        print(format_summary(result.summary))
        share = result.train_s / (result.wall_s * _cores()) if result.wall_s else 0.0
        print(
            f"\nStudy run: {result.study_run_id}  ({result.wall_s:.0f} s; the trials trained {share:.0%} of "
            f"cores x wall time). Again: qeu-tune{uri_flag} report {result.study_run_id}"
        )
        return
    print(
        f"Study stopped ({result.interrupted or result.status}); finished sweeps are kept. Continue it with: "
        f"{sweep.resume_command(result.tracking_uri, str(result.study_run_id))}"
    )
    raise SystemExit(result.exit_code or 1)


def run(argv: Sequence[str], *, command_line: Sequence[str]) -> None:
    """``qeu-tune study ...``: the default study's experiment unless one is given."""
    if not any(a.split("=", 1)[0].lstrip("+") == "experiment" for a in argv):
        argv = [f"experiment={DEFAULT_EXPERIMENT}", *argv]
    sweep.run(argv, command_line=command_line, task=study)


def resume(uri: str, ref: str) -> int:
    """``qeu-tune resume STUDY``; returns the exit code."""
    try:
        finish(resume_study(uri, ref, notify=print))
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def _cores() -> float:
    try:
        import ray

        return float(ray.cluster_resources().get("CPU", 1.0)) if ray.is_initialized() else 1.0
    except Exception:  # noqa: BLE001 - only for the printed share
        return 1.0
