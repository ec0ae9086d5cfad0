"""Interrupts through the real CLI: SIGINT, SIGTERM and SIGKILL of the driver mid-sweep, then
``qeu-tune resume`` continues into the same MLflow runs with gap-free, unrepeated histories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from qeu_tune.analysis import integrity
from qeu_tune.analysis.integrity import sweep_integrity
from qeu_tune.core import names, tags
from qeu_tune.core.tags import TAG_CHECKPOINT_LOST

pytestmark = pytest.mark.slow

BUDGET = 6000  # env steps per trial; smoke PPO samples 500 an iteration
STEP = 500
QEU_TUNE = [sys.executable, "-m", "qeu_tune.commands.main"]


def start_sweep(tmp_path: Path, home: Path, budget: int = BUDGET) -> tuple[subprocess.Popen, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "debug=smoke",
        "experiment=single",
        "search.num_seeds=2",
        f"stop.env_steps={budget}",
        "stop.time_s=null",
        "checkpoint_every=3",
        f"tracking.uri={uri}",
        f"cluster.storage_path={tmp_path / 'ray'}",
        "verbose=1",
    ]
    env = {**os.environ, "QEU_TUNE_HOME": str(home)}
    proc = subprocess.Popen(
        [*QEU_TUNE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    return proc, uri


def wait_for_progress(client: MlflowClient, proc: subprocess.Popen, min_step: int, timeout: float = 180) -> None:
    """Until some trial has logged ``min_step`` env steps (and none has finished)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            runs = client.search_runs(["1"], filter_string=f"tags.`{tags.TAG_KIND}` = 'trial'")
        except Exception:  # noqa: BLE001 - the database may not exist yet
            runs = []
        steps = [r.data.metrics.get(names.ENV_STEPS, 0) for r in runs]
        if steps and max(steps) >= min_step:
            return
        time.sleep(0.5)
    raise AssertionError("the sweep made no progress")


def sweep_runs(client: MlflowClient):
    (parent,) = client.search_runs(["1"], filter_string=f"tags.`{tags.TAG_KIND}` = 'sweep'")
    children = client.search_runs(["1"], filter_string=f"tags.`{tags.TAG_PARENT}` = '{parent.info.run_id}'")
    return parent, children


def resume(uri: str, ref: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QEU_TUNE_HOME": str(home)}
    return subprocess.run(
        [*QEU_TUNE, "--tracking-uri", uri, "resume", ref], capture_output=True, text=True, env=env, timeout=300
    )


def assert_complete(client: MlflowClient, parent_ref: str, resume_output: str = "", budget: int = BUDGET) -> None:
    """Both trial runs FINISHED; env-step histories strictly increasing up to the budget, one
    point per iteration (vectorised sampling makes an iteration ~STEP env steps, episode ends
    shift it a little: within 20%); no (metric, step) logged twice (``sweep_integrity``)."""
    report = sweep_integrity(client, parent_ref, iteration_steps=STEP, tolerance=0.2, check_budget=True)
    assert report.ok, (report.describe(), resume_output)
    assert len(report.trials) == 2, report.describe()
    for trial in report.trials:
        assert trial.status == "FINISHED" and trial.budget == budget, report.describe()
        assert trial.env_steps == sorted(set(trial.env_steps)) and trial.env_steps[-1] >= budget, trial.env_steps


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_honestly_and_resume_finishes_into_the_same_runs(tmp_path, sig, code):
    home = tmp_path / "home"
    proc, uri = start_sweep(tmp_path, home)
    client = MlflowClient(uri)
    try:
        wait_for_progress(client, proc, min_step=2 * STEP)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, out
    assert "Sweep FINISHED" not in out and f"interrupted by {signal.Signals(sig).name}" in out
    assert "Traceback" not in out
    parent, children = sweep_runs(client)
    assert f"qeu-tune --tracking-uri {uri} resume {parent.info.run_id}" in out
    assert parent.info.status == "KILLED"
    assert parent.data.tags[tags.TAG_INTERRUPTED] == signal.Signals(sig).name
    assert children and all(r.info.status in ("KILLED", "FINISHED") for r in children)
    assert any(r.info.status == "KILLED" for r in children)

    done = resume(uri, parent.info.run_id, home)
    assert done.returncode == 0, done.stdout + done.stderr
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert_complete(client, parent.info.run_id, done.stdout + done.stderr)


def test_resume_after_the_driver_was_killed_reconciles_runs_left_running(tmp_path):
    home = tmp_path / "home"
    # Longer trials: MLflow shows a trial's steps a little after the driver has them, and on a
    # quiet machine 6,000-step trials were done before the kill (CI, 2026-12-07).
    budget = 3 * BUDGET
    proc, uri = start_sweep(tmp_path, home, budget=budget)
    client = MlflowClient(uri)
    try:
        wait_for_progress(client, proc, min_step=4 * STEP)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray: like a reboot
        proc.communicate(timeout=60)
    parent, children = sweep_runs(client)
    assert parent.info.status == "RUNNING"
    before = sweep_integrity(client, parent.info.run_id, metrics=False)
    assert before.of_kind(integrity.PARENT_NOT_FINISHED) and before.of_kind(integrity.RUNNING), before.describe()

    done = resume(uri, parent.data.tags[tags.TAG_SWEEP], home)  # by sweep name
    assert done.returncode == 0, done.stdout + done.stderr
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert_complete(client, parent.info.run_id, done.stdout + done.stderr, budget=budget)


def checkpoints_named_by_tune(tune_dir: Path) -> list:
    """The checkpoint each unfinished trial would be restored from, as Tune's newest saved state
    names it (a TERMINATED trial is not restored)."""
    from ray.tune.experiment import Trial

    states = sorted(tune_dir.glob("*/experiment_state-*.json"))
    if not states:
        return []
    named = []
    for trial_json, metadata in json.loads(states[-1].read_text())["trial_data"]:
        trial = Trial.from_json_state(trial_json, stub=True)  # stub: no trainable needed
        trial.restore_run_metadata(metadata)
        if trial.checkpoint is not None and trial.status != Trial.TERMINATED:
            named.append((trial.trial_id, Path(trial.checkpoint.path)))
    return named


def test_resume_goes_on_when_tune_deleted_the_checkpoint_its_state_names(tmp_path):
    """A driver killed after a checkpoint it names was lost (Tune deletes the oldest kept one when
    it keeps fewer than all, as sweeps did before 2026-12-06; or the storage lost it) leaves a
    state that names a deleted checkpoint."""
    home = tmp_path / "home"
    # Longer trials: Tune snapshots its state about every 10 s, and one must catch a trial
    # running with a checkpoint.
    budget = 5 * BUDGET
    proc, uri = start_sweep(tmp_path, home, budget=budget)
    client = MlflowClient(uri)
    try:
        deadline = time.time() + 180
        while not checkpoints_named_by_tune(tmp_path / "ray"):
            assert proc.poll() is None and time.time() < deadline, "Tune saved no state with a checkpoint"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    deleted = dict(checkpoints_named_by_tune(tmp_path / "ray"))
    for path in deleted.values():
        shutil.rmtree(path)

    done = resume(uri, sweep_runs(client)[0].info.run_id, home)
    assert done.returncode == 0, done.stdout + done.stderr
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert_complete(client, parent.info.run_id, done.stdout + done.stderr, budget=budget)
    notes = {r.data.tags[tags.TAG_TRIAL_ID]: r.data.tags.get(TAG_CHECKPOINT_LOST, "") for r in children}
    for trial_id, path in deleted.items():
        assert f"its checkpoint {path.name} was deleted" in notes[trial_id]
