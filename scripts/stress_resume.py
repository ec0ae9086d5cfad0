"""Stress test: kill the driver at random moments, resume, and check every run is complete.

How to run this script::

    python scripts/stress_resume.py                   # 8 rounds, seed 0
    python scripts/stress_resume.py --rounds 20 --seed 1 --double

Each round starts the real CLI on a small sweep (the interrupt tests' sweep: smoke PPO, 2
seeds, 6,000 env steps, a checkpoint every 3 iterations, MLflow on SQLite), waits until a
trial has logged 500-2,500 env steps plus 0-3 s (drawn at random), kills the driver and its
local Ray with SIGKILL (as a reboot would), then runs ``qeu-tune resume``. ``--double`` also
kills the first resume 8-16 s in and resumes again. A round passes when the resume exits 0,
the parent run is FINISHED, and both trial runs are FINISHED with metric histories that are
gap-free and never repeat a step (the checks of ``tests/e2e/test_interrupts.py``, whose
helpers this script uses). Rounds in which the sweep finished before the kill are counted
apart. Printed per round, and written to ``results/stress_resume.json``.
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
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import test_interrupts as checks  # noqa: E402 - the end-to-end test's sweep and checks
from mlflow.tracking import MlflowClient  # noqa: E402

from qeu_tune.core import tags  # noqa: E402
from qeu_tune.core.tags import TAG_CHECKPOINT_LOST, TAG_RESUMED  # noqa: E402


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def one_round(rng: random.Random, workdir: Path, double: bool) -> Dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="round-", dir=workdir))
    home = tmp / "home"
    proc, uri = checks.start_sweep(tmp, home)
    client = MlflowClient(uri)
    min_step, delay = rng.choice([1, 2, 3, 4, 5]) * checks.STEP, round(rng.uniform(0, 3), 2)
    outcome: Dict[str, Any] = {"dir": str(tmp), "kill_after_env_steps": min_step, "kill_delay_s": delay}
    try:
        checks.wait_for_progress(client, proc, min_step=min_step)
        time.sleep(delay)
    finally:
        kill(proc)
    parent, _ = checks.sweep_runs(client)
    if parent.info.status != "RUNNING":
        return {**outcome, "result": "finished before the kill"}
    if double:
        env = {**os.environ, "QEU_TUNE_HOME": str(home)}
        first = subprocess.Popen([*checks.QEU_TUNE, "--tracking-uri", uri, "resume", parent.info.run_id],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        outcome["resume_killed_after_s"] = round(rng.uniform(8, 16), 2)
        time.sleep(outcome["resume_killed_after_s"])
        kill(first)
        if checks.sweep_runs(client)[0].info.status != "RUNNING":
            return {**outcome, "result": "first resume finished before its kill"}
    done = checks.resume(uri, parent.info.run_id, home)
    parent, children = checks.sweep_runs(client)
    outcome["checkpoint_lost"] = [r.data.tags[TAG_CHECKPOINT_LOST] for r in children
                                  if TAG_CHECKPOINT_LOST in r.data.tags]
    try:
        assert done.returncode == 0, f"resume exited {done.returncode}"
        assert parent.info.status == "FINISHED", f"parent {parent.info.status}"
        checks.assert_complete(client, children, "")
    except AssertionError as err:
        (tmp / "resume.out").write_text(done.stdout + done.stderr)
        return {**outcome, "result": "FAILED", "error": str(err)[:1000]}
    return {**outcome, "result": "complete", "resumed": parent.data.tags.get(TAG_RESUMED),
            "trials": {r.data.tags[tags.TAG_TRIAL_ID]: r.info.status for r in children}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--double", action="store_true", help="also kill the first resume, then resume again")
    parser.add_argument("--workdir", type=Path, default=None, help="where rounds keep their files (default: a temp dir)")
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
        print(f"round {i}: {outcome['result']} (kill after {outcome['kill_after_env_steps']} env steps "
              f"+ {outcome['kill_delay_s']} s){': ' + outcome['error'] if 'error' in outcome else ''}", flush=True)
    counts = {r: sum(1 for o in rounds if o["result"] == r) for r in sorted({o["result"] for o in rounds})}
    print(f"{args.rounds} rounds in {time.time() - started:.0f} s: {counts}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "command": "python scripts/stress_resume.py " + " ".join(sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "machine": platform.platform(),
        "cpus": os.cpu_count(), "counts": counts, "rounds": rounds,
    }, indent=1))
    print(f"wrote {args.output}")
    if counts.get("FAILED"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
