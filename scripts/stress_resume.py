"""Stress test: kill the driver at random moments, resume, and check every run is complete.

How to run this script::

    python scripts/stress_resume.py                   # 8 rounds, seed 0
    python scripts/stress_resume.py --rounds 20 --seed 1 --double

Each round starts the real CLI on a small sweep (the interrupt tests' sweep: smoke PPO, 2
seeds, 6,000 env steps, a checkpoint every 3 iterations, MLflow on SQLite), waits until a
trial has logged 500-2,500 env steps plus 0-3 s (drawn at random), kills the driver and its
local Ray with SIGKILL (as a reboot would), then runs ``qeu-tune resume``. ``--double`` also
kills the first resume 8-16 s in and resumes again. A round passes when the resume exits 0,
the sweep has its 2 trial runs and ``qeu_tune.analysis.integrity.sweep_integrity`` finds no
problem: parent and trial runs FINISHED, env-step histories that reach the budget one
iteration at a time, no metric step logged twice (the checks of
``tests/e2e/test_interrupts.py``). Rounds in which the sweep finished before the kill are
counted apart. Printed per round, and written to ``results/stress_resume.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

from mlflow.tracking import MlflowClient

from qeu_tune.analysis.integrity import sweep_integrity
from qeu_tune.analysis.runs import load_sweep
from qeu_tune.core import names, tags
from qeu_tune.core.tags import TAG_CHECKPOINT_LOST, TAG_RESUMED

ROOT = Path(__file__).resolve().parents[1]
# The sweep of tests/e2e/test_interrupts.py: smoke PPO samples STEP env steps an iteration.
BUDGET = 6000
STEP = 500
TRIALS = 2
QEU_TUNE = [sys.executable, "-m", "qeu_tune.commands.main"]


def start_sweep(tmp: Path, home: Path) -> tuple:
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    args = [
        "debug=smoke",
        "experiment=single",
        f"search.num_seeds={TRIALS}",
        f"stop.env_steps={BUDGET}",
        "stop.time_s=null",
        "checkpoint_every=3",
        f"tracking.uri={uri}",
        f"cluster.storage_path={tmp / 'ray'}",
        "verbose=1",
    ]
    env = {**os.environ, "QEU_TUNE_HOME": str(home)}
    proc = subprocess.Popen(
        [*QEU_TUNE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    return proc, uri


def resume(uri: str, ref: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QEU_TUNE_HOME": str(home)}
    return subprocess.run(
        [*QEU_TUNE, "--tracking-uri", uri, "resume", ref], capture_output=True, text=True, env=env, timeout=300
    )


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def sweep_run_id(client: MlflowClient) -> Optional[str]:
    """The parent run of the round's sweep (the only one in its database), once it exists."""
    try:
        ids = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(ids, filter_string=f"tags.`{tags.TAG_KIND}` = 'sweep'") if ids else []
    except Exception:  # noqa: BLE001 - the database may not exist yet
        return None
    return found[0].info.run_id if found else None


def wait_for_progress(client: MlflowClient, proc: subprocess.Popen, min_step: int, timeout: float = 180) -> None:
    """Until some trial has logged ``min_step`` env steps."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sweep exited ({proc.returncode}) before the kill:\n{proc.stdout.read()[-3000:]}")
        ref = sweep_run_id(client)
        if ref is not None and any(
            t.metrics.get(names.ENV_STEPS, 0) >= min_step for t in load_sweep(client, ref).trials
        ):
            return
        time.sleep(0.5)
    raise RuntimeError("the sweep made no progress")


def one_round(rng: random.Random, workdir: Path, double: bool) -> Dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="round-", dir=workdir))
    home = tmp / "home"
    proc, uri = start_sweep(tmp, home)
    client = MlflowClient(uri)
    min_step, delay = rng.choice([1, 2, 3, 4, 5]) * STEP, round(rng.uniform(0, 3), 2)
    outcome: Dict[str, Any] = {"dir": str(tmp), "kill_after_env_steps": min_step, "kill_delay_s": delay}
    try:
        wait_for_progress(client, proc, min_step=min_step)
        time.sleep(delay)
    finally:
        kill(proc)
    ref = sweep_run_id(client)
    if load_sweep(client, ref).parent.info.status != "RUNNING":
        return {**outcome, "result": "finished before the kill"}
    if double:
        env = {**os.environ, "QEU_TUNE_HOME": str(home)}
        first = subprocess.Popen(
            [*QEU_TUNE, "--tracking-uri", uri, "resume", ref],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        outcome["resume_killed_after_s"] = round(rng.uniform(8, 16), 2)
        time.sleep(outcome["resume_killed_after_s"])
        kill(first)
        if load_sweep(client, ref).parent.info.status != "RUNNING":
            return {**outcome, "result": "first resume finished before its kill"}
    done = resume(uri, ref, home)
    sweep = load_sweep(client, ref)
    outcome["checkpoint_lost"] = [t.tags[TAG_CHECKPOINT_LOST] for t in sweep.trials if TAG_CHECKPOINT_LOST in t.tags]
    report = sweep_integrity(client, ref, iteration_steps=STEP, tolerance=0.2, check_budget=True)
    errors = [f"resume exited {done.returncode}"] if done.returncode != 0 else []
    if len(report.trials) != TRIALS:
        errors.append(f"{len(report.trials)} child runs, not {TRIALS}")
    errors.extend(str(p) for p in report.problems)
    if errors:
        (tmp / "resume.out").write_text(done.stdout + done.stderr)
        return {**outcome, "result": "FAILED", "error": "; ".join(errors)[:1000]}
    return {
        **outcome,
        "result": "complete",
        "resumed": sweep.parent.data.tags.get(TAG_RESUMED),
        "trials": {t.trial_id: t.status for t in report.trials},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--double", action="store_true", help="also kill the first resume, then resume again")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where rounds keep their files (default: a temp dir)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "stress_resume.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qeu-stress-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = []
    started = time.time()
    for i in range(args.rounds):
        outcome = one_round(rng, workdir, args.double)
        rounds.append(outcome)
        print(
            f"round {i}: {outcome['result']} (kill after {outcome['kill_after_env_steps']} env steps "
            f"+ {outcome['kill_delay_s']} s){': ' + outcome['error'] if 'error' in outcome else ''}",
            flush=True,
        )
    counts = {r: sum(1 for o in rounds if o["result"] == r) for r in sorted({o["result"] for o in rounds})}
    print(f"{args.rounds} rounds in {time.time() - started:.0f} s: {counts}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "command": "python scripts/stress_resume.py " + " ".join(sys.argv[1:]),
                "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "counts": counts,
                "rounds": rounds,
            },
            indent=1,
        )
    )
    print(f"wrote {args.output}")
    if counts.get("FAILED"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
