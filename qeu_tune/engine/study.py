"""Run a planned study: tune every design, test each best configuration, compare, record.

One MLflow run for the study (``qeu.kind=study``); each stage's sweep is its child (tags
``qeu.study``, ``qeu.stage`` tune/test, ``qeu.design``), so the MLflow UI shows the tree study
-> sweeps -> trials. The study goes stage by stage and design by design; a sweep already
FINISHED is reused, an interrupted one is resumed, so ``qeu-tune resume STUDY`` continues where
it stopped. The comparison (``summary.json``, tables, plots) is logged on the study run.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from qeu_tune.analysis.notes import log_note, study_note
from qeu_tune.analysis.runs import client_for, find_run, load_sweep
from qeu_tune.analysis.study_report import build_summary, study_sweeps, write_study_report
from qeu_tune.analysis.tables import best_configuration, build_report
from qeu_tune.core import names, redact, tags
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import CONF_DIR
from qeu_tune.core.secrets import TRACKING_URI_PATH, recorded_config, restore_env_forms, tracking_uri_for_resume
from qeu_tune.engine.plan import plan_sweep
from qeu_tune.engine.resume import resume_sweep
from qeu_tune.engine.run import SweepResult, run_sweep
from qeu_tune.engine.study_plan import StudyPlan, held_out_config, plan_study, recorded_designs
from qeu_tune.engine.sweep_state import read_state, write_state
from qeu_tune.tracking.tracker import Tracker, flatten_params, sweep_tags

STUDY_STATE_FILE = "qeu_study.yaml"  # what `resume` re-plans a study from (trusted storage)
STAGES = ("tune", "test")
Notify = Callable[[str], None]  # one line of progress for the user (the command prints it)


def _silent(_: str) -> None:
    pass


@dataclass
class StudyResult:
    """What a study returns (and the CLI prints)."""

    study_run_id: Optional[str]
    tracking_uri: str
    status: str
    summary: Optional[Dict[str, Any]] = None
    interrupted: Optional[str] = None
    exit_code: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0  # the trials' own training time, summed over the study's sweeps


def run_study(plan: StudyPlan, *, command: str = "qeu-tune study", notify: Notify = _silent) -> StudyResult:
    """Creates the study run, then tunes, tests and compares (``continue_study``)."""
    redact.register_config(plan.config, plan.tracking_uri)
    tracker = _open_tracker(plan)
    run_name = f"study-{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    state_dir = f"{plan.storage_path.rstrip('/')}/{run_name}"
    key = tracker.create_run(
        run_name=run_name,
        tags=redact.redact(
            {
                **sweep_tags(
                    sweep_name=plan.name,
                    command=command,
                    source_dir=CONF_DIR.parent,
                    extra=plan.config.get("tags") or {},
                ),
                tags.TAG_KIND: "study",
                tags.TAG_STUDY: plan.name,
                tags.TAG_TUNE_PATH: state_dir,
            }
        ),
    )
    tracker.log_params(key, redact.redact(flatten_params(_study_params(plan))))
    tracker.log_dict_yaml(key, redact.redact(plan.config), tags.STUDY_CONFIG_ARTIFACT)
    study_id = tracker.resolve(key) if tracker.flush(timeout_s=60) else None
    if study_id is None:
        tracker.end_run(key, tags.FAILED)
        tracker.close()
        raise ConfigError(
            f"the study run could not be created in {redact.redact(plan.tracking_uri)}; a study needs the "
            "tracking store reachable (its sweeps are found there): check tracking.uri, or run `qeu-tune sync`."
        )
    state = {  # no secrets: values from the environment as ${oc.env:NAME}, others ***
        "config": recorded_config(plan.config),
        "overrides": redact.redact(plan.overrides),
        "designs": {
            name: {"config": recorded_config(d["config"]), "options": redact.redact(d["options"])}
            for name, d in recorded_designs(plan).items()
        },
    }
    write_state(state_dir, STUDY_STATE_FILE, state)
    tracker.close()
    return continue_study(plan, study_id, notify=notify)


def resume_study(tracking_uri: str, ref: str, *, notify: Notify = _silent) -> StudyResult:
    """Continues a study where it stopped: finished sweeps are kept, an interrupted one resumes."""
    client = client_for(tracking_uri)
    run = find_run(client, ref)
    if run.data.tags.get(tags.TAG_KIND) != "study":
        raise ConfigError(f"run {run.info.run_id} is not a study run.")
    if run.info.status == tags.FINISHED:
        raise ConfigError(f"study {ref!r} (run {run.info.run_id}) already FINISHED; `qeu-tune report` shows it.")
    state = read_state(run.data.tags.get(tags.TAG_TUNE_PATH, ""), STUDY_STATE_FILE, what="study's state")
    config, what = state["config"], f"study {ref!r}"
    tracking_uri = tracking_uri_for_resume(tracking_uri, config["tracking"].get("uri"), what)
    config["tracking"]["uri"] = tracking_uri
    config = restore_env_forms(config, what)
    # Designs are composed from the overrides, whose tracking.uri is recorded without its password.
    overrides = [o for o in state.get("overrides") or [] if o.lstrip("+").split("=", 1)[0] != TRACKING_URI_PATH]
    designs = None  # a state without them (older versions): the designs are composed again
    if state.get("designs"):
        designs = {name: {**d, "config": restore_env_forms(d["config"], what)} for name, d in state["designs"].items()}
        for design in designs.values():
            design["config"]["tracking"]["uri"] = tracking_uri
    plan = plan_study(config, overrides, recorded=designs)
    for design in plan.designs.values():
        design.tune.tracking_uri = design.tune.config["tracking"]["uri"] = tracking_uri
    tracker = _open_tracker(plan)
    tracker.reopen_run(run.info.run_id)
    tracker.set_tags(run.info.run_id, {tags.TAG_INTERRUPTED: ""})
    tracker.close()
    notify(f"Resuming study {plan.name} (run {run.info.run_id})")
    return continue_study(plan, run.info.run_id, notify=notify)


def continue_study(plan: StudyPlan, study_id: str, *, notify: Notify = _silent) -> StudyResult:
    """Runs every stage's sweeps not yet FINISHED, then compares and records the designs.

    An error ends the study run FAILED (an interrupt outside a sweep: KILLED), never RUNNING;
    its finished sweeps stay, and ``qeu-tune resume`` goes on from them.
    """
    try:
        return _continue(plan, study_id, notify)
    except BaseException as err:
        status = tags.KILLED if isinstance(err, KeyboardInterrupt) else tags.FAILED
        try:
            client = client_for(plan.tracking_uri)
            client.set_tag(study_id, tags.TAG_ERROR, redact.redact(f"{type(err).__name__}: {err}")[:4000])
            client.set_terminated(study_id, status)
        except Exception:  # noqa: BLE001 - the study's own error is the one to report
            pass
        raise


def _continue(plan: StudyPlan, study_id: str, notify: Notify) -> StudyResult:
    started = time.monotonic()
    client = client_for(plan.tracking_uri)
    study_run = client.get_run(study_id)
    done: Dict[str, Dict[str, str]] = {stage: {} for stage in STAGES}
    train_s = 0.0
    best_configs: Dict[str, Dict[str, Any]] = {}
    for stage in STAGES:
        existing = study_sweeps(client, study_run, stage)
        for name, design in plan.designs.items():
            if stage == "test" and name not in best_configs:
                best_configs[name] = _best_config(client, done["tune"][name])
            result = _stage_sweep(
                plan,
                study_id,
                stage,
                name,
                existing.get(name),
                design.tune if stage == "tune" else None,
                best_configs.get(name),
                notify,
            )
            if result.interrupted or result.parent_run_id is None:
                return _stop(plan, study_id, result, started, train_s)
            done[stage][name] = result.parent_run_id
            train_s += _train_seconds(client, result.parent_run_id)
    summary, curves = build_summary(
        client,
        study=plan.name,
        baseline=plan.baseline,
        budget_steps=float(plan.config["stop"]["env_steps"]),
        min_effect=plan.min_effect,
        confidence=plan.confidence,
        designs={
            name: {
                "overrides": d.overrides,
                "config": best_configs[name],
                "tune_seeds": plan.tune_seeds,
                "test_seeds": plan.test_seeds,
                "tune_sweep": done["tune"][name],
                "test_sweep": done["test"][name],
            }
            for name, d in plan.designs.items()
        },
    )
    wall_s = time.monotonic() - started
    summary["cost"] = {"wall_s": round(wall_s, 1), "train_s": round(train_s, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        write_study_report(summary, curves, Path(tmp))
        client.log_artifacts(study_id, tmp, "study")
    log_note(client, study_id, study_note(summary, run_id=study_id))  # the verdict table on the run page
    for name, design in summary["designs"].items():
        if design["verdict"]:
            client.set_tag(study_id, f"{tags.TAG_DESIGN}.{name}", design["verdict"])
    client.set_terminated(study_id, tags.FINISHED)
    return StudyResult(
        study_run_id=study_id,
        tracking_uri=plan.tracking_uri,
        status=tags.FINISHED,
        summary=summary,
        wall_s=wall_s,
        train_s=train_s,
    )


def _stage_sweep(
    plan: StudyPlan,
    study_id: str,
    stage: str,
    design: str,
    existing: Any,
    tune_plan: Any,
    best_config: Optional[Dict[str, Any]],
    notify: Notify,
) -> SweepResult:
    """One stage's sweep of one design: reused when FINISHED, resumed when stopped, else run."""
    if existing is not None and existing.info.status == tags.FINISHED:
        return SweepResult(
            parent_run_id=existing.info.run_id,
            tracking_uri=plan.tracking_uri,
            experiment_id=existing.info.experiment_id,
            num_trials=0,
            num_errors=0,
            best=None,
            status=tags.FINISHED,
        )
    if existing is not None:
        notify(f"Study {plan.name}: resuming the {stage} sweep of design {design} (run {existing.info.run_id})")
        return resume_sweep(plan.tracking_uri, existing.info.run_id, restart_errored=True)
    if stage == "tune":
        sweep_plan = tune_plan
    else:
        config = held_out_config(best_config, plan, design)
        config["tracking"]["uri"] = plan.tracking_uri  # the recorded copy is redacted
        sweep_plan = plan_sweep(config)
    sweep_plan.config["tags"] = {
        **(sweep_plan.config.get("tags") or {}),
        tags.TAG_PARENT: study_id,
        tags.TAG_STUDY: plan.name,
        tags.TAG_STAGE: stage,
        tags.TAG_DESIGN: design,
    }
    notify(
        f"Study {plan.name}: {stage} stage, design {design} "
        f"({'seeds ' + ', '.join(map(str, plan.test_seeds)) if stage == 'test' else 'tuning seeds'})"
    )
    return run_sweep(sweep_plan, command=f"qeu-tune study ({stage} {design})")


def _best_config(client: Any, tune_sweep: str) -> Dict[str, Any]:
    """The tuning sweep's best configuration (the report's ranking rule), as a full config."""
    report = build_report(client, load_sweep(client, tune_sweep))
    if report.ranked.empty:
        raise ConfigError(f"the tuning sweep {tune_sweep} has no trial with results; see its trials' qeu.error tags.")
    return best_configuration(client, report).config


def _train_seconds(client: Any, sweep_id: str) -> float:
    """The trials' own training time (Tune's ``time_total_s``), summed over a sweep's trials."""
    return sum(float(t.metrics.get(names.TIME_TOTAL_S, 0.0)) for t in load_sweep(client, sweep_id).trials)


def _stop(plan: StudyPlan, study_id: str, result: SweepResult, started: float, train_s: float) -> StudyResult:
    client = client_for(plan.tracking_uri)
    signal = result.interrupted or "FAILED"
    client.set_tag(study_id, tags.TAG_INTERRUPTED, signal)
    status = tags.KILLED if result.interrupted else tags.FAILED
    client.set_terminated(study_id, status)
    return StudyResult(
        study_run_id=study_id,
        tracking_uri=plan.tracking_uri,
        status=status,
        interrupted=result.interrupted,
        exit_code=result.exit_code or 1,
        wall_s=time.monotonic() - started,
        train_s=train_s,
    )


def _open_tracker(plan: StudyPlan) -> Tracker:
    tracking = plan.config["tracking"]
    if tracking.get("mode", "online") == "offline":
        raise ConfigError("a study needs tracking.mode=online: it reads its sweeps back from the tracking store.")
    return Tracker(
        tracking_uri=plan.tracking_uri, experiment=tracking["experiment"], writer=tracking.get("writer", "process")
    )


def _study_params(plan: StudyPlan) -> Dict[str, Any]:
    study = plan.config["study"]
    return {
        "study": {
            **{k: v for k, v in study.items() if k != "designs"},
            "designs": {k: " ".join(v) for k, v in study["designs"].items()},
        },
        "algo": plan.config["algo"]["name"],
        "env": plan.config["env"]["name"],
        "stop": plan.config["stop"],
        "search_space": {k: str(v) for k, v in (plan.config["search"].get("space") or {}).items()},
        "tune_seeds": plan.tune_seeds,
        "test_seeds": plan.test_seeds,
    }
