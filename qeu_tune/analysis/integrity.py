"""Is a recorded sweep complete? Every run ended, every history whole, nothing logged twice.

After ``qeu-tune resume``, after a tracking-server outage, or before trusting a report, this
reads a sweep back from MLflow and lists what is wrong with its record::

    from qeu_tune.analysis.integrity import sweep_integrity
    from qeu_tune.analysis.runs import client_for

    report = sweep_integrity(client_for("sqlite:///mlflow.db"), "ppo-cartpole-none")
    if not report.ok:
        print(report.describe())

Checked, for the parent run and every child run of the sweep:

* the parent run is ``FINISHED``;
* every child run has ended (``RUNNING``: its driver died or the sweep still runs) and ended
  ``FINISHED`` (not ``FAILED``/``KILLED``); runs that ``qeu-tune resume`` could not match
  to Tune's saved state are tagged orphaned and listed as such;
* no two child runs record the same Tune trial (a replay that created a run twice);
* the env-step history (``progress/env_steps``, which is also the step axis of every metric)
  has points, never logs a step twice, never goes back, starts with a first iteration and has
  no gap: every increment is within ``tolerance`` of the iteration size (``iteration_steps``,
  by default the run's median increment), so a missing iteration shows as a double increment;
* (``check_budget=True``) the history reaches the trial's ``stop.env_steps``; off by default
  because a scheduler (ASHA, ...) or ``stop.time_s`` ends trials earlier on purpose;
* (``metrics=True``) no other metric logs a step twice (``conv/*`` is excluded by default:
  the convergence statistics are rewritten at a trial's end).

Nothing is printed and Ray is not imported: the result is data (``SweepIntegrity``) for a
command, a script or a test to judge. Reading every metric's history costs one request per
run and metric; pass ``metrics=False`` for a quick look at a large sweep.

Limits: PBT's exploit restores a trial from another trial's checkpoint, which may move its
env-step count by more than an iteration: such a jump is listed as a gap (or as going back)
and is expected there. Points still in the tracker's local journal (``qeu-tune sync``) are
not in MLflow yet and show as gaps until they are synced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any, Dict, List, Optional, Sequence

from qeu_tune.analysis.runs import child_runs, find_run
from qeu_tune.core import names, tags
from qeu_tune.core.errors import ConfigError

# Problem kinds (``IntegrityProblem.kind``).
PARENT_NOT_FINISHED = "parent not finished"
RUNNING = "running"  # a child run that never ended
NOT_FINISHED = "not finished"  # ended FAILED or KILLED
ORPHANED = "orphaned"  # not in Tune's saved state at a resume; its trial was rerun as a new one
DUPLICATE_RUN = "duplicate run"  # two child runs of one Tune trial
NO_STEPS = "no env steps"
REPEATED_STEP = "repeated step"  # a (metric, step) logged more than once
WENT_BACK = "went back"  # a step lower than one logged before it, not a repeat
GAP = "gap"  # an increment larger than an iteration: points are missing
IRREGULAR_STEP = "irregular step"  # an increment much smaller than an iteration
SHORT = "short of budget"
PROBLEM_KINDS = (
    PARENT_NOT_FINISHED,
    RUNNING,
    NOT_FINISHED,
    ORPHANED,
    DUPLICATE_RUN,
    NO_STEPS,
    REPEATED_STEP,
    WENT_BACK,
    GAP,
    IRREGULAR_STEP,
    SHORT,
)

_ENDED = (tags.FINISHED, tags.FAILED, tags.KILLED)
_SHOWN = 12  # steps quoted in a problem's detail


@dataclass(frozen=True)
class IntegrityProblem:
    """One thing wrong with a sweep's record."""

    kind: str  # one of PROBLEM_KINDS
    run_id: str
    detail: str
    trial_id: Optional[str] = None
    metric: Optional[str] = None  # for REPEATED_STEP, WENT_BACK, GAP, IRREGULAR_STEP, SHORT

    def __str__(self) -> str:
        who = f"run {self.run_id}" + (f" (trial {self.trial_id})" if self.trial_id else "")
        what = f" {self.metric}" if self.metric else ""
        return f"{self.kind}: {who}{what}: {self.detail}"


@dataclass
class TrialIntegrity:
    """What was read back for one child run."""

    run_id: str
    trial_id: Optional[str]
    status: str
    ended: bool  # the run has an end time
    env_steps: List[int]  # the env-step history's steps, in the order they were logged
    budget: Optional[float]  # stop.env_steps from the run's params, when recorded
    error: Optional[str] = None  # the run's qeu.error tag


@dataclass
class SweepIntegrity:
    """``sweep_integrity``'s answer: the runs read back and the problems found (none: ``ok``)."""

    parent_run_id: str
    sweep: str
    parent_status: str
    trials: List[TrialIntegrity]
    problems: List[IntegrityProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def of_kind(self, *kinds: str) -> List[IntegrityProblem]:
        return [p for p in self.problems if p.kind in kinds]

    def describe(self) -> str:
        """A few lines for a message: the sweep, its runs, then one line per problem."""
        finished = sum(1 for t in self.trials if t.status == tags.FINISHED)
        head = (
            f"sweep {self.sweep} ({self.parent_run_id}, {self.parent_status}): "
            f"{finished}/{len(self.trials)} child runs FINISHED, "
        )
        if self.ok:
            return head + "complete"
        return head + f"{len(self.problems)} problem(s):\n" + "\n".join(f"  {p}" for p in self.problems)


def sweep_integrity(
    client: Any,
    parent_ref: str,
    *,
    iteration_steps: Optional[float] = None,
    tolerance: float = 0.5,
    check_budget: bool = False,
    metrics: bool = True,
    exclude_prefixes: Sequence[str] = (names.CONV_PREFIX,),
) -> SweepIntegrity:
    """Reads sweep ``parent_ref`` back and lists what keeps its record from being complete.

    Args:
        client: An ``MlflowClient`` (``qeu_tune.analysis.runs.client_for``).
        parent_ref: The parent run id or the sweep name (the newest sweep of that name).
        iteration_steps: Env steps of one training iteration; None: each run's median
            increment.
        tolerance: An increment outside ``(1 +- tolerance) * iteration_steps`` is a gap
            (larger) or an irregular step (smaller).
        check_budget: Also require every history to reach the run's ``stop.env_steps``.
        metrics: Also check every other metric for steps logged twice.
        exclude_prefixes: Metrics ``metrics=True`` leaves alone.

    Raises:
        ConfigError: No such run, or the run is a trial, not a sweep.
    """
    parent = find_run(client, parent_ref)
    kind = parent.data.tags.get(tags.TAG_KIND)
    if kind != "sweep":
        hint = (
            f"pass its parent {parent.data.tags.get(tags.TAG_PARENT, '?')} or its sweep name"
            if kind == "trial"
            else "pass a sweep's parent run id or sweep name (a study's sweeps are its child runs)"
        )
        raise ConfigError(f"run {parent.info.run_id} is a {kind or 'untagged'} run, not a sweep's parent run; {hint}.")
    report = SweepIntegrity(
        parent_run_id=parent.info.run_id,
        sweep=parent.data.tags.get(tags.TAG_SWEEP, parent.info.run_name),
        parent_status=parent.info.status,
        trials=[],
    )
    if parent.info.status != tags.FINISHED:
        report.problems.append(
            IntegrityProblem(PARENT_NOT_FINISHED, parent.info.run_id, f"the sweep's parent run is {parent.info.status}")
        )
    by_trial: Dict[str, List[str]] = {}
    for run in child_runs(client, parent.info.experiment_id, parent.info.run_id):
        trial, problems = _check_run(
            client, run, iteration_steps, tolerance, check_budget, metrics, tuple(exclude_prefixes)
        )
        report.trials.append(trial)
        report.problems.extend(problems)
        if trial.trial_id:
            by_trial.setdefault(trial.trial_id, []).append(trial.run_id)
    for trial_id, run_ids in by_trial.items():
        for run_id in run_ids[1:]:
            report.problems.append(
                IntegrityProblem(
                    DUPLICATE_RUN, run_id, f"trial {trial_id} has {len(run_ids)} runs: {', '.join(run_ids)}", trial_id
                )
            )
    return report


def _check_run(
    client: Any,
    run: Any,
    iteration_steps: Optional[float],
    tolerance: float,
    check_budget: bool,
    metrics: bool,
    exclude: tuple,
) -> tuple:
    run_id, run_tags = run.info.run_id, run.data.tags
    trial_id = run_tags.get(tags.TAG_TRIAL_ID)
    problems: List[IntegrityProblem] = []

    def problem(kind: str, detail: str, metric: Optional[str] = None) -> None:
        problems.append(IntegrityProblem(kind, run_id, detail, trial_id, metric))

    status = run.info.status
    ended = run.info.end_time is not None and status in _ENDED
    error = run_tags.get(tags.TAG_ERROR)
    if not ended:
        problem(RUNNING, f"status {status}, never ended (its driver died, or the sweep is still running)")
    elif status != tags.FINISHED:
        problem(NOT_FINISHED, f"ended {status}" + (f": {error.strip().splitlines()[0][:300]}" if error else ""))
    if run_tags.get(tags.TAG_ORPHANED) is not None:
        problem(ORPHANED, run_tags[tags.TAG_ORPHANED])

    history = _history(client, run_id, names.ENV_STEPS)
    steps = [int(m.step) for m in history]
    budget = _number(run.data.params.get("stop.env_steps"))
    trial = TrialIntegrity(run_id, trial_id, status, ended, steps, budget, error)
    if not steps:
        problem(NO_STEPS, f"no {names.ENV_STEPS} was logged")
    else:
        _check_env_steps(steps, iteration_steps, tolerance, problem)
        if check_budget and budget is not None and max(steps) < budget:
            problem(SHORT, f"reached {max(steps)} of stop.env_steps={budget:g}", names.ENV_STEPS)
    if metrics:
        for key in sorted(run.data.metrics):
            if key == names.ENV_STEPS or key.startswith(exclude):
                continue
            repeated = _repeated([int(m.step) for m in _history(client, run_id, key)])
            if repeated:
                problem(REPEATED_STEP, f"steps logged more than once: {_show(repeated)}", key)
    return trial, problems


def _check_env_steps(steps: List[int], iteration_steps: Optional[float], tolerance: float, problem: Any) -> None:
    key = names.ENV_STEPS
    repeated = _repeated(steps)
    if repeated:
        problem(REPEATED_STEP, f"steps logged more than once: {_show(repeated)}", key)
    seen = set()
    back = []
    highest = None
    for step in steps:
        if highest is not None and step < highest and step not in seen:
            back.append(step)
        seen.add(step)
        highest = step if highest is None else max(highest, step)
    if back:
        problem(WENT_BACK, f"logged after higher steps: {_show(back)}", key)
    distinct = sorted(seen)
    increments = [b - a for a, b in zip([0, *distinct], distinct)]
    size = float(iteration_steps) if iteration_steps else float(median(increments))
    if size <= 0:
        return
    low, high = (1 - tolerance) * size, (1 + tolerance) * size
    gaps = [(a, b) for a, b in zip([0, *distinct], distinct) if b - a > high]
    small = [(a, b) for a, b in zip([0, *distinct], distinct) if b - a < low]
    if gaps:
        problem(
            GAP,
            f"increments above {high:g} (iteration ~{size:g} env steps): " + _show([f"{a}->{b}" for a, b in gaps]),
            key,
        )
    if small:
        problem(
            IRREGULAR_STEP,
            f"increments below {low:g} (iteration ~{size:g} env steps): " + _show([f"{a}->{b}" for a, b in small]),
            key,
        )


def _history(client: Any, run_id: str, key: str) -> List[Any]:
    """A metric's points in the order they were logged (timestamp, then step)."""
    return sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))


def _repeated(steps: Sequence[int]) -> List[int]:
    seen, repeated = set(), set()
    for step in steps:
        (repeated if step in seen else seen).add(step)
    return sorted(repeated)


def _show(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOWN else "")


def _number(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text not in (None, "None", "null") else None
    except ValueError:
        return None
