"""Benchmark: the end-of-sweep report (``report_sweep_end``) of a 16-trial sweep.

How to run this script::

    python scripts/bench_report.py            # 4 configurations x 4 seeds x 10 points, 3 repetitions
    python scripts/bench_report.py --reps 5 --configs 8 --seeds 2

Records a real sweep in a temporary MLflow SQLite store: the synthetic learner
(``algo=synthetic``: 10 points per trial, like a 20k-step PPO trial, with every metric a
trial reports; until 2026-12 a simulated sweep with one RT metric per trial), then times
``qeu_tune.analysis.report_sweep_end`` (MLflow reads, statistics with bootstrap CIs,
CSV/HTML, three plots, artifact upload) in fresh subprocesses:

* ``cold``: the modules it needs (pandas, scipy.stats, matplotlib) imported inside the
  timing, as before the sweep pre-imported them;
* ``warm``: imported before the timing, as in the sweep's driver at the end of a sweep
  (Ray Tune and MLflow's store are loaded by then; ``qeu_tune.engine.run`` now imports the
  report's modules in a background thread while the trials run).

Prints and writes to ``results/bench_report.json`` the wall and CPU seconds of every
repetition (alternated cold/warm) with the 1-minute load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench_report.json"

CHILD = r"""
import json, os, sys, time
warm = sys.argv[1] == "warm"
uri, parent = sys.argv[2], sys.argv[3]
if warm:  # what the sweep's driver has loaded by the end of a sweep
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - warm imports, as a sweep has them
    import qeu_tune.analysis  # noqa: F401 - warm imports, as a sweep has them
    import qeu_tune.engine.run  # noqa: F401  (Ray Tune; the report's labels import it)
    from mlflow.tracking import MlflowClient
    MlflowClient(uri).search_experiments()  # the tracker's store is open
w0, c0 = time.perf_counter(), time.process_time()
from qeu_tune.analysis import report_sweep_end
report = report_sweep_end(uri, parent)
print(json.dumps({"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                  "trials": int(len(report.trials))}))
"""


def record(uri: str, configs: int, seeds: int) -> str:
    """A real sweep of the synthetic learner (configs learning rates x seeds, 10 points each)."""
    from qeu_tune.commands.argv import prepare_argv
    from qeu_tune.config.compose import compose, to_plain
    from qeu_tune.engine.plan import plan_sweep
    from qeu_tune.engine.run import run_sweep

    lrs = ",".join(f"{10 ** (-4 + 0.3 * i):.6g}" for i in range(configs))
    overrides = prepare_argv(
        [
            "experiment=single",
            "algo=synthetic",
            "search=grid",
            f"algo.params.lr=choice({lrs})",
            f"search.num_seeds={seeds}",
            "stop.env_steps=20000",
            "algo.params.steps_per_iteration=2000",
            f"tracking.uri={uri}",
            "verbose=0",
        ]
    ).argv
    return run_sweep(plan_sweep(to_plain(compose(overrides)), overrides)).parent_run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--configs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    out = {
        "command": " ".join(["python", "scripts/bench_report.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_1min_at_start": os.getloadavg()[0],
        "trials": args.configs * args.seeds,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["QEU_TUNE_HOME"] = tmp
        uri = f"sqlite:///{tmp}/mlflow.db"
        parent = record(uri, args.configs, args.seeds)
        for rep in range(args.reps):
            for mode in ("cold", "warm") if rep % 2 == 0 else ("warm", "cold"):
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, mode, uri, parent],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-3000:])
                run = {
                    "mode": mode,
                    "rep": rep,
                    **json.loads(proc.stdout.strip().splitlines()[-1]),
                    "load_average_1min": os.getloadavg()[0],
                }
                out["runs"].append(run)
                print(
                    f"rep {rep} {mode}: wall {run['wall_s']:.2f} s, CPU {run['cpu_s']:.2f} s "
                    f"({run['trials']} trials), load {run['load_average_1min']:.2f}",
                    flush=True,
                )
    for mode in ("cold", "warm"):
        runs = [r for r in out["runs"] if r["mode"] == mode]
        out[mode] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
        }
        print(f"{mode}: wall {out[mode]['wall_s_median']:.2f} s, CPU {out[mode]['cpu_s_median']:.2f} s (medians)")
    out["load_average_1min_at_end"] = os.getloadavg()[0]
    print(
        f"load average (1 min): start {out['load_average_1min_at_start']:.2f}, "
        f"end {out['load_average_1min_at_end']:.2f}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
