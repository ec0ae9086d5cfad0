"""Benchmark: how many sub-environments per env runner (vectorised sampling) to default to.

How to run this script::

    python scripts/bench_vector.py                              # PPO, envs 1,4,8, seeds 0-2, 20k steps
    python scripts/bench_vector.py --algo ppo --envs 1,8 --seeds 0,1,2 --steps 30000
    python scripts/bench_vector.py --quick                      # envs 1,8, seeds 0,1, 10k steps

One trial at a time, in this process (``num_env_runners=0``, one torch thread: the
trial's sampling and learning share one core, as in a sweep), built through
``qeu_tune.engine.trainable.build_algo_config`` from the composed ``conf/`` (the algorithm's
default hyperparameters, ``algo.num_envs_per_env_runner`` overridden per variant, the
rollout fragment length ``auto`` = train batch / envs). Variants are interleaved: for
each seed, every variant runs once, in an order rotated per seed, so drift and other
processes' load hit every variant alike.

Printed and written to ``results/bench_vector.json`` for every run: CPU seconds of this
process per 1,000 env steps (``time.process_time``, robust to other processes on a shared
machine), wall env steps/s, the final ``return_env/mean`` (mean over the last 100
episodes), the mean return over the whole run (area under the learning curve per
iteration: learning speed) and the build time; then per variant the mean over seeds. The
1-minute load average is recorded at the start and the end.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench_vector.json"


def trial_config(algo: str, envs: int, seed: int, extra: List[str]) -> Dict[str, Any]:
    from qeu_tune.config.compose import compose, to_plain
    from qeu_tune.config.trial import TrialTemplate, resolve_trial_config

    base = to_plain(compose([f"algo={algo}", f"algo.num_envs_per_env_runner={envs}", *extra]))
    config, _ = resolve_trial_config(TrialTemplate(base=base, group_options={}), {"seed": seed})
    return config


def run_one(config: Dict[str, Any], steps: int) -> Dict[str, Any]:
    from qeu_tune.core import names
    from qeu_tune.engine.episode_metrics import flatten_result
    from qeu_tune.engine.trainable import build_algo_config

    w0, c0 = time.perf_counter(), time.process_time()
    algo = build_algo_config(config).build_algo()
    w1, c1 = time.perf_counter(), time.process_time()
    curve: List[float] = []
    previous = 0.0
    try:
        while True:
            metrics = flatten_result(algo.train(), previous_env_steps=previous)
            previous = metrics[names.ENV_STEPS]
            curve.append(metrics[names.RETURN_ENV_MEAN])
            if previous >= steps:
                break
    finally:
        algo.stop()
    w2, c2 = time.perf_counter(), time.process_time()
    finite = [v for v in curve if v == v]
    return {
        "env_steps": previous,
        "iterations": len(curve),
        "build_wall_s": w1 - w0,
        "build_cpu_s": c1 - c0,
        "train_wall_s": w2 - w1,
        "train_cpu_s": c2 - c1,
        "cpu_ms_per_env_step": (c2 - c1) / previous * 1e3,
        "wall_env_steps_per_s": previous / (w2 - w1),
        "final_return_env": curve[-1],
        "mean_return_env_over_run": statistics.fmean(finite) if finite else float("nan"),
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--envs", default="1,4,8", help="comma-separated num_envs_per_env_runner values")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--quick", action="store_true", help="envs 1,8, seeds 0,1, 10k steps")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.envs, args.seeds, args.steps = "1,8", "0,1", 10000
    envs = [int(x) for x in args.envs.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]

    import ray
    import torch

    torch.set_num_threads(1)
    out: Dict[str, Any] = {
        "command": " ".join(["python", "scripts/bench_vector.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "ray": ray.__version__,
            "torch": torch.__version__,
        },
        "load_average_1min_at_start": os.getloadavg()[0],
        "algo": args.algo,
        "steps": args.steps,
        "envs": envs,
        "seeds": seeds,
        "overrides": args.override,
        "runs": [],
    }
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from qeu_tune.engine.trainable import register_env

    register_env()
    try:
        for i, seed in enumerate(seeds):
            order = envs[i % len(envs) :] + envs[: i % len(envs)]
            for n in order:
                run = run_one(trial_config(args.algo, n, seed, args.override), args.steps)
                run.update({"num_envs_per_env_runner": n, "seed": seed, "load_average_1min": os.getloadavg()[0]})
                out["runs"].append(run)
                print(
                    f"envs={n:2d} seed={seed} steps={run['env_steps']:.0f} "
                    f"CPU ms/env step={run['cpu_ms_per_env_step']:.3f} wall steps/s={run['wall_env_steps_per_s']:.0f} "
                    f"final return_env={run['final_return_env']:.1f} mean over run={run['mean_return_env_over_run']:.1f} "
                    f"build={run['build_wall_s']:.2f}s load={run['load_average_1min']:.2f}",
                    flush=True,
                )
    finally:
        ray.shutdown()
    summary = {}
    for n in envs:
        runs = [r for r in out["runs"] if r["num_envs_per_env_runner"] == n]
        summary[n] = {
            "cpu_ms_per_env_step_mean": statistics.fmean(r["cpu_ms_per_env_step"] for r in runs),
            "cpu_ms_per_env_step_min_max": [
                min(r["cpu_ms_per_env_step"] for r in runs),
                max(r["cpu_ms_per_env_step"] for r in runs),
            ],
            "wall_env_steps_per_s_mean": statistics.fmean(r["wall_env_steps_per_s"] for r in runs),
            "final_return_env_mean": statistics.fmean(r["final_return_env"] for r in runs),
            "final_return_env_per_seed": [r["final_return_env"] for r in runs],
            "mean_return_env_over_run_mean": statistics.fmean(r["mean_return_env_over_run"] for r in runs),
        }
    base = summary[envs[0]]["cpu_ms_per_env_step_mean"]
    print(f"\n{args.algo}, {args.steps} env steps, seeds {seeds} (means over seeds)")
    for n, s in summary.items():
        s["cpu_speedup_vs_first"] = base / s["cpu_ms_per_env_step_mean"]
        print(
            f"envs={n:2d}: CPU {s['cpu_ms_per_env_step_mean']:.3f} ms/env step "
            f"(min {s['cpu_ms_per_env_step_min_max'][0]:.3f}, max {s['cpu_ms_per_env_step_min_max'][1]:.3f}), "
            f"{s['cpu_speedup_vs_first']:.2f}x vs envs={envs[0]}; wall {s['wall_env_steps_per_s_mean']:.0f} steps/s; "
            f"final return_env {s['final_return_env_mean']:.1f} {[round(x, 1) for x in s['final_return_env_per_seed']]}; "
            f"mean return over run {s['mean_return_env_over_run_mean']:.1f}"
        )
    out["summary"] = summary
    out["load_average_1min_at_end"] = os.getloadavg()[0]
    print(
        f"load average (1 min): start {out['load_average_1min_at_start']:.2f}, end {out['load_average_1min_at_end']:.2f}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
