"""Search efficiency: env steps and wall time until a search first finds a good configuration.

How to run this script::

    python scripts/search_efficiency.py                 # 3 methods x 5 repetitions (search.seed 0..4)
    python scripts/search_efficiency.py --reps 2 --quick
    python scripts/search_efficiency.py --report-only   # recompute from the recorded sweeps

Methods, each a ``qeu-tune experiment=cliff_search`` sweep (the weight of absolute
feedback and PPO's learning rate on Cliff Walking, 6 configurations x 1 seed):

* ``random_fifo``: Optuna's random sampler, every trial runs its full budget;
* ``random_asha``: the same samples, ASHA stops poor trials early (``scheduler=asha``);
* ``optuna_tpe``: Optuna's TPE sampler, full budgets (``search=optuna``).

Repetition ``r`` uses ``search.seed=r``: the same seeds (and, for random search, the same
configurations) across random_fifo and random_asha. For each sweep the script reads MLflow:
the first moment any trial's greedy return (``eval/return_env/mean``) reached the
threshold (``env.return_threshold``, 1950), the env steps all trials had sampled by then
(each trial's ``progress/env_steps`` history up to that timestamp), and the wall time from
the sweep's start. A search that never reaches it is censored at its total steps and wall
time. Writes ``results/search_efficiency.json`` and ``.csv`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
METHODS = {
    "random_fifo": ["search=random", "scheduler=fifo"],
    "random_asha": ["search=random", "scheduler=asha"],
    "optuna_tpe": ["search=optuna", "scheduler=fifo"],
}
BASE = ["experiment=cliff_search"]
QUICK = ["search.num_samples=4", "stop.env_steps=15000"]


def sweep_name(method: str, rep: int, quick: bool) -> str:
    return f"search-{method}-r{rep}" + ("-quick" if quick else "")


def command(method: str, rep: int, quick: bool) -> List[str]:
    # The experiment file's search.space, metric and budget survive the search= and
    # scheduler= group swaps: Hydra applies the experiment file after the groups.
    return [
        "qeu-tune",
        *BASE,
        *METHODS[method],
        *(QUICK if quick else []),
        f"search.seed={rep}",
        f"sweep_name={sweep_name(method, rep, quick)}",
    ]


def first_success(client: Any, sweep: Any, threshold: float) -> Dict[str, Any]:
    """When the sweep first had a trial at or above ``threshold``, and its cost until then."""
    from qeu_tune.core import names

    start_ms = sweep.parent.info.start_time
    hits, step_points, ends = [], [], []
    for trial in sweep.trials:
        evals = client.get_metric_history(trial.run_id, names.EVAL_RETURN_ENV_MEAN)
        hits += [m.timestamp for m in evals if m.value >= threshold]
        steps = client.get_metric_history(trial.run_id, names.ENV_STEPS)
        step_points.append([(m.timestamp, m.value) for m in steps])
        ends += [m.timestamp for m in steps]
    found = min(hits) if hits else None
    until = found if found is not None else max(ends, default=start_ms)
    used = sum(max((v for t, v in points if t <= until), default=0.0) for points in step_points)
    return {
        "found": found is not None,
        "env_steps": float(used),
        "wall_s": (until - start_ms) / 1000.0,
        "total_env_steps": float(sum(max((v for _, v in p), default=0.0) for p in step_points)),
        "trials": len(sweep.trials),
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--quick", action="store_true", help="4 configurations x 15k steps")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--threshold", type=float, default=1950.0)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "search_efficiency.json")
    args = parser.parse_args(argv)

    from qeu_tune.analysis.runs import client_for, load_sweep
    from qeu_tune.analysis.stats import iqm
    from qeu_tune.core.paths import resolve_tracking_uri

    methods = args.methods.split(",")
    uri = resolve_tracking_uri(args.tracking_uri)
    rows: List[Dict[str, Any]] = []
    for rep in range(args.reps):
        for method in methods:  # alternated, so load drifts hit every method alike
            cmd = command(method, rep, args.quick) + (
                [f"tracking.uri={args.tracking_uri}"] if args.tracking_uri else []
            )
            if not args.report_only:
                print(f"$ {shlex.join(cmd)}", flush=True)
                started = time.time()
                if subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}) != 0:
                    raise SystemExit(f"{shlex.join(cmd)} failed")
                print(f"  {time.time() - started:.0f} s", flush=True)
            client = client_for(uri)
            sweep = load_sweep(client, sweep_name(method, rep, args.quick))
            row = {
                "method": method,
                "rep": rep,
                "sweep_name": sweep.name,
                "parent_run_id": sweep.run_id,
                "command": shlex.join(cmd),
                **first_success(client, sweep, args.threshold),
            }
            rows.append(row)
            print(
                f"  {method} rep {rep}: found={row['found']} after {row['env_steps']:.0f} env steps, "
                f"{row['wall_s']:.0f} s (sweep total {row['total_env_steps']:.0f} steps)",
                flush=True,
            )

    summary = {}
    print(f"\nUntil a trial's greedy return first reached {args.threshold:g} (censored: the whole search):")
    print(
        f"{'method':<12} {'found':>7} {'env steps IQM':>14} {'env steps mean':>15} {'wall s IQM':>11} {'wall s mean':>12}"
    )
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        steps = np.array([r["env_steps"] for r in mine])
        wall = np.array([r["wall_s"] for r in mine])
        summary[method] = {
            "found": sum(r["found"] for r in mine),
            "reps": len(mine),
            "env_steps_iqm": float(iqm(steps)),
            "env_steps_mean": float(steps.mean()),
            "wall_s_iqm": float(iqm(wall)),
            "wall_s_mean": float(wall.mean()),
        }
        s = summary[method]
        print(
            f"{method:<12} {s['found']:>3}/{s['reps']:<3} {s['env_steps_iqm']:>14.0f} {s['env_steps_mean']:>15.0f} "
            f"{s['wall_s_iqm']:>11.0f} {s['wall_s_mean']:>12.0f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "threshold": args.threshold,
                "quick": args.quick,
                "methods": METHODS,
                "summary": summary,
                "runs": rows,
                "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                "load_1min": os.getloadavg()[0],
            },
            indent=2,
        )
        + "\n"
    )
    import pandas as pd

    pd.DataFrame(rows).to_csv(args.output.with_suffix(".csv"), index=False)
    print(f"wrote {args.output} and {args.output.with_suffix('.csv')}")


if __name__ == "__main__":
    sys.exit(main())
