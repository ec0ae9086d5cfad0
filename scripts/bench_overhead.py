"""Benchmark: qeu-tune's overhead against plain Ray Tune + RLlib + MLflowLoggerCallback.

How to run this script::

    python scripts/bench_overhead.py                 # 3 reps of 4 PPO CartPole trials x 20k steps each
                                                     # way, then a 16-trial x 20k sweep (efficiency)
    python scripts/bench_overhead.py --reps 5
    python scripts/bench_overhead.py --quick         # 2 trials x 10k steps, 4-trial efficiency sweep
    python scripts/bench_overhead.py --before /tmp/qeu-before   # adds the pre-change code as a third
                                                     # variant: git archive <commit> | tar -x -C /tmp/qeu-before
    ray start --head --num-cpus 2 --include-dashboard false   # then, joining that Ray:
    python scripts/bench_overhead.py --skip-pair --qeu-override cluster=remote

What runs (each as a fresh subprocess, its own Ray instance and its own MLflow SQLite
store and Tune storage in a temporary directory; the store is created and migrated before
the timing starts unless ``--fresh-store``; ``OMP_NUM_THREADS=1`` etc. for both, so
torch uses one thread per trial in both):

* ``qeu``: ``qeu-tune experiment=single search.num_seeds=N stop.env_steps=S search.seed=0``:
  N PPO CartPole trials with the seeds 0..N-1 and ``conf/algo/ppo.yaml``'s hyperparameters.
* ``plain``: this script with ``--plain-worker``: the same N trials written directly with
  Ray Tune and RLlib (``PPOConfig`` with the hyperparameters, model and sampling settings
  read from ``conf/algo/ppo.yaml``, ``num_env_runners=0``, seeds by ``grid_search``),
  stopped at the same env-step budget, checkpointed at the end like a qeu-tune trial, and
  recorded with Ray's own ``ray.air.integrations.mlflow.MLflowLoggerCallback``.
* ``tune`` (only with ``--tune-only``): the plain script without ``MLflowLoggerCallback``,
  i.e. Ray Tune + RLlib with no tracking at all: the floor any tracking adds to. (No MLflow
  timeline for it: its start/end figures are missing.)
* ``before`` (only with ``--before DIR``): the ``qeu`` command run with ``PYTHONPATH=DIR``,
  i.e. another checkout of qeu_tune (the code before a change), same overrides.

The variants alternate (the order rotates every repetition) so drift and other
processes' load hit each alike. Per run the script measures and prints:

* wall time of the command and the ratio qeu / plain per repetition (median over reps);
* CPU seconds of the command's whole process tree (driver, Ray's daemons, every trial
  worker; from ``/proc``, polled every 0.2 s) and CPU milliseconds per env step: robust to
  other users of a shared machine, unlike wall time;
* env steps sampled (all trials), env steps per second of wall time per core;
* final ``return_env/mean`` (qeu) / ``env_runners/episode_return_mean`` (plain) of each
  trial (the same quantity without a reward design): both did the same work;
* start and end of the sweep, from MLflow's run and metric timestamps: command start ->
  first trial started, trial start -> its first result (median of the trials after the
  first wave, and of the first wave), last trial ended -> command exit.

Then the **sweep efficiency** of one ``--efficiency-trials`` x ``--steps`` qeu-tune sweep
(16 x 20k by default): the trials' own training time (sum over trials of Tune's
``time_total_s``, which includes building the algorithm) / (CPUs x wall time of the
command); also with RLlib's training time alone and with the time between the first
trial start and the last trial end.

Every figure, each repetition, the command lines, the software versions and the
1-minute load average at the start and end of every run go to
``results/bench_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench_overhead.json"
PYTHON = sys.executable
QEU_TUNE = str(Path(sys.executable).with_name("qeu-tune"))
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- CPU time of a process tree


class TreeCPU:
    """CPU seconds used by a process and all its descendants, polled from /proc.

    A process is counted from the first poll that sees it under the root until it ends
    (its last value before exit is kept); up to one polling interval of a short-lived
    process's CPU time can be missed, so the figure is a slight underestimate.
    """

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        self.root = root
        self.interval_s = interval_s
        self.cpu: Dict[tuple, float] = {}  # (pid, starttime) -> utime + stime seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "TreeCPU":
        self._thread.start()
        return self

    def stop(self) -> float:
        self._poll()
        self._stop.set()
        self._thread.join()
        return self.total_s

    @property
    def total_s(self) -> float:
        return sum(self.cpu.values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def _poll(self) -> None:
        stats = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stream:
                    text = stream.read()
            except OSError:
                continue
            fields = text[text.rfind(")") + 2 :].split()
            # fields[1] = ppid, [11] utime, [12] stime, [19] starttime (man 5 proc, from field 3)
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), fields[19])
        children: Dict[int, List[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        stack, seen = [self.root], set()
        while stack:
            pid = stack.pop()
            if pid in seen or pid not in stats:
                continue
            seen.add(pid)
            self.cpu[(pid, stats[pid][2])] = stats[pid][1] / TICKS
            stack.extend(children.get(pid, []))
        # Processes already counted that were re-parented (daemons): keep following them.
        for (pid, start), _ in list(self.cpu.items()):
            if pid not in seen and pid in stats and stats[pid][2] == start:
                self.cpu[(pid, start)] = stats[pid][1] / TICKS


# --------------------------------------------------------------------------- the plain baseline


def plain_worker(args: argparse.Namespace) -> None:
    """N PPO CartPole trials with Ray Tune + RLlib + MLflowLoggerCallback, nothing else."""
    import ray
    import yaml
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.rllib.algorithms.ppo import PPOConfig

    ppo = yaml.safe_load((ROOT / "conf" / "algo" / "ppo.yaml").read_text())
    # Defaults of qeu_tune.config.schema.AlgoConfig when ppo.yaml does not set them.
    num_envs = int(ppo.get("num_envs_per_env_runner", 1))
    fragment = ppo.get("rollout_fragment_length", "auto")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .training(**ppo["params"])
        .rl_module(model_config=dict(ppo["model"]))
        .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs, rollout_fragment_length=fragment)
        .learners(num_learners=0)
        .debugging(seed=tune.grid_search(list(range(args.trials))), log_level="ERROR")
    )
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = tune.Tuner(
        "PPO",
        param_space=config,
        run_config=tune.RunConfig(
            name="plain",
            storage_path=args.storage,
            stop={"num_env_steps_sampled_lifetime": args.steps},
            callbacks=[]
            if args.no_mlflow
            else [MLflowLoggerCallback(tracking_uri=args.uri, experiment_name="plain-baseline")],
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True, num_to_keep=2),
            verbose=1,
        ),
    )
    results = tuner.fit()
    if results.errors:
        raise SystemExit(f"{len(results.errors)} plain trials failed: {results.errors}")


# --------------------------------------------------------------------------- running and reading one variant


def _env(pythonpath: Optional[str], home: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env.update(THREAD_ENV)
    env["QEU_TUNE_HOME"] = str(home)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def command(
    variant: str, trials: int, steps: int, work: Path, cpus: int, before: Optional[str], overrides: Sequence[str] = ()
) -> tuple:
    """The command of one variant; ``overrides`` (--qeu-override) go to the qeu-tune ones."""
    if variant in ("qeu", "before"):
        cmd = [
            QEU_TUNE,
            "experiment=single",
            f"search.num_seeds={trials}",
            f"stop.env_steps={steps}",
            "search.seed=0",
            f"cluster.num_cpus={cpus}",
            *overrides,
        ]
        return cmd, _env(before if variant == "before" else None, work / "home")
    cmd = [
        PYTHON,
        str(Path(__file__).resolve()),
        "--plain-worker",
        "--trials",
        str(trials),
        "--steps",
        str(steps),
        "--cpus",
        str(cpus),
        "--storage",
        str(work / "ray_results"),
        "--uri",
        f"sqlite:///{work / 'mlflow.db'}",
    ]
    if variant == "tune":
        cmd.append("--no-mlflow")
    return cmd, _env(None, work / "home")


def _store_uri(variant: str, work: Path) -> str:
    return (
        f"sqlite:///{work / 'home' / 'mlflow.db'}"
        if variant not in ("plain", "tune")
        else f"sqlite:///{work / 'mlflow.db'}"
    )


def run_variant(
    variant: str,
    trials: int,
    steps: int,
    cpus: int,
    before: Optional[str],
    keep: bool,
    fresh_store: bool = False,
    overrides: Sequence[str] = (),
) -> Dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench_overhead_{variant}_"))
    cmd, env = command(variant, trials, steps, work, cpus, before, overrides)
    if not fresh_store:  # a user's usual case: the MLflow database exists already
        from mlflow.tracking import MlflowClient

        (work / "home").mkdir(parents=True, exist_ok=True)
        MlflowClient(_store_uri(variant, work)).search_experiments()  # creates and migrates it
    load_start = os.getloadavg()[0]
    log_path = work / "output.log"
    t_start_epoch = time.time()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(work))
        tree = TreeCPU(proc.pid).start()
        code = proc.wait()
    wall = time.perf_counter() - t0
    t_exit_epoch = time.time()
    cpu = tree.stop()
    load_end = os.getloadavg()[0]
    if code != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"{variant} run failed (exit {code}): {' '.join(cmd)}\n{tail}")
    out: Dict[str, Any] = {
        "variant": variant,
        "command": " ".join(cmd),
        "trials": trials,
        "steps_per_trial": steps,
        "wall_s": wall,
        "cpu_tree_s": cpu,
        "load_average_1min_at_start": load_start,
        "load_average_1min_at_end": load_end,
    }
    out.update(read_trials(variant, work))
    out.update(read_timeline(variant, work, t_start_epoch, t_exit_epoch))
    steps_total = sum(t["env_steps"] for t in out["per_trial"])
    out["env_steps_total"] = steps_total
    out["cpu_ms_per_env_step"] = cpu / steps_total * 1e3 if steps_total else float("nan")
    out["env_steps_per_s_per_core"] = steps_total / wall / cpus
    tune_time = sum(t["tune_time_total_s"] for t in out["per_trial"])
    out["sum_trial_time_total_s"] = tune_time
    out["sweep_efficiency"] = tune_time / (cpus * wall)
    rllib = [t.get("rllib_time_total_s") for t in out["per_trial"]]
    if all(v is not None for v in rllib):
        out["sum_rllib_training_time_s"] = sum(rllib)
        out["sweep_efficiency_rllib_training_only"] = sum(rllib) / (cpus * wall)
    if out.get("first_trial_start_to_last_trial_end_s"):
        out["sweep_efficiency_trials_window"] = tune_time / (cpus * out["first_trial_start_to_last_trial_end_s"])
    out["final_returns"] = [t["final_return"] for t in out["per_trial"]]
    out["final_return_mean"] = statistics.fmean(out["final_returns"])
    if keep:
        out["work_dir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _rows(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_trials(variant: str, work: Path) -> Dict[str, Any]:
    """Per trial, from Tune's result.json: env steps, final return, Tune's and RLlib's time."""
    plain = variant in ("plain", "tune")
    root = work / "home" / "ray_results" if not plain else work / "ray_results"
    per_trial = []
    for path in sorted(root.glob("*/*/result.json")):
        rows = _rows(path)
        if not rows:
            continue
        last = rows[-1]
        if plain:
            env_steps = float(
                last.get("num_env_steps_sampled_lifetime") or last["env_runners"]["num_env_steps_sampled_lifetime"]
            )
            final = float(last["env_runners"]["episode_return_mean"])
            seed = last.get("config", {}).get("seed")
            rllib = None  # a Trainable's time_total_s is its training time
        else:
            env_steps = float(last["progress/env_steps"])
            final = float(last["return_env/mean"])
            seed = last.get("config", {}).get("seed")
            rllib = float(last["progress/time_total_s"])
        per_trial.append(
            {
                "trial": path.parent.name,
                "seed": seed,
                "iterations": len(rows),
                "env_steps": env_steps,
                "final_return": final,
                "tune_time_total_s": float(last["time_total_s"]),
                "first_report_time_total_s": float(rows[0]["time_total_s"]),
                "rllib_time_total_s": rllib,
            }
        )
    return {"per_trial": per_trial}


def read_timeline(variant: str, work: Path, start_epoch: float, exit_epoch: float) -> Dict[str, Any]:
    """Start and end of the sweep from MLflow's run start/end times and metric timestamps."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_store_uri(variant, work))
    name, key = ("plain-baseline", "training_iteration") if variant == "plain" else ("qeu-tune", "progress/iteration")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    if variant != "plain":
        runs = [r for r in runs if r.data.tags.get("qeu.kind") == "trial"]
    trials = []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, key)
        first = min((m.timestamp for m in history), default=None)
        trials.append(
            {
                "start": run.info.start_time / 1e3,
                "end": (run.info.end_time or 0) / 1e3,
                "first_result": first / 1e3 if first else None,
            }
        )
    if not trials:
        return {}
    trials.sort(key=lambda t: t["start"])
    first_start = trials[0]["start"]
    last_end = max(t["end"] for t in trials)
    latency = [t["first_result"] - t["start"] for t in trials if t["first_result"]]
    wave = min(len(latency), int(os.environ.get("BENCH_CPUS", os.cpu_count() or 1)))
    return {
        "command_to_first_trial_start_s": first_start - start_epoch,
        "command_to_first_result_s": min(t["first_result"] for t in trials if t["first_result"]) - start_epoch,
        "trial_start_to_first_result_s": latency,
        "trial_start_to_first_result_first_wave_median_s": statistics.median(latency[:wave]) if wave else None,
        "trial_start_to_first_result_later_median_s": statistics.median(latency[wave:]) if latency[wave:] else None,
        "last_trial_end_to_exit_s": exit_epoch - last_end,
        "first_trial_start_to_last_trial_end_s": last_end - first_start,
    }


# --------------------------------------------------------------------------- the benchmark


def describe(run: Dict[str, Any]) -> str:
    def fmt(value: Any, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    return (
        f"{run['variant']:6s} wall {run['wall_s']:6.1f} s  CPU {run['cpu_tree_s']:6.1f} s "
        f"({run['cpu_ms_per_env_step']:.3f} ms/env step)  {run['env_steps_per_s_per_core']:6.0f} env steps/s/core  "
        f"efficiency {run['sweep_efficiency']:.2f}  final returns {[round(r, 1) for r in run['final_returns']]} "
        f"(mean {run['final_return_mean']:.1f})  cmd->1st trial {fmt(run.get('command_to_first_trial_start_s'))} s  "
        f"cmd->1st result {fmt(run.get('command_to_first_result_s'))} s  trial start->1st result "
        f"{fmt(run.get('trial_start_to_first_result_first_wave_median_s'))} s (1st wave) / "
        f"{fmt(run.get('trial_start_to_first_result_later_median_s'))} s (later)  last end->exit "
        f"{fmt(run.get('last_trial_end_to_exit_s'))} s  load {run['load_average_1min_at_start']:.2f}->"
        f"{run['load_average_1min_at_end']:.2f}"
    )


def versions() -> Dict[str, str]:
    import mlflow
    import ray
    import torch

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "torch": torch.__version__,
        "mlflow": mlflow.__version__,
        "platform": platform.platform(),
    }


def summarise(runs: List[Dict[str, Any]], variants: List[str]) -> Dict[str, Any]:
    by = {v: [r for r in runs if r["variant"] == v] for v in variants}
    summary: Dict[str, Any] = {}
    for v, rs in by.items():
        summary[v] = {
            "wall_s": [r["wall_s"] for r in rs],
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "cpu_ms_per_env_step": [r["cpu_ms_per_env_step"] for r in rs],
            "cpu_ms_per_env_step_median": statistics.median(r["cpu_ms_per_env_step"] for r in rs),
            "env_steps_per_s_per_core_median": statistics.median(r["env_steps_per_s_per_core"] for r in rs),
            "final_return_mean_per_rep": [r["final_return_mean"] for r in rs],
            "final_return_mean": statistics.fmean(r["final_return_mean"] for r in rs),
        }
        for key in (
            "command_to_first_trial_start_s",
            "command_to_first_result_s",
            "last_trial_end_to_exit_s",
            "trial_start_to_first_result_first_wave_median_s",
            "trial_start_to_first_result_later_median_s",
        ):
            values = [r[key] for r in rs if r.get(key) is not None]
            summary[v][key + "_median"] = statistics.median(values) if values else None
    for other in variants:
        if other == "qeu":
            continue
        # Paired by repetition: run i of qeu against run i of the other variant.
        ratios = [q["wall_s"] / o["wall_s"] for q, o in zip(by["qeu"], by[other])]
        cpu_ratios = [q["cpu_ms_per_env_step"] / o["cpu_ms_per_env_step"] for q, o in zip(by["qeu"], by[other])]
        summary[f"qeu_over_{other}"] = {
            "wall_ratio_per_rep": ratios,
            "wall_ratio_median": statistics.median(ratios),
            "cpu_per_env_step_ratio_per_rep": cpu_ratios,
            "cpu_per_env_step_ratio_median": statistics.median(cpu_ratios),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each variant (alternated)")
    parser.add_argument("--quick", action="store_true", help="2 trials x 10k steps; efficiency sweep 4 x 10k")
    parser.add_argument("--trials", type=int, default=4, help="trials per variant run (seeds 0..N-1)")
    parser.add_argument("--steps", type=int, default=20000, help="env steps per trial")
    parser.add_argument("--efficiency-trials", type=int, default=16, help="trials of the efficiency sweep (0: skip)")
    parser.add_argument("--efficiency-reps", type=int, default=1)
    parser.add_argument("--skip-pair", action="store_true", help="only the efficiency sweep")
    parser.add_argument(
        "--efficiency-before",
        action="store_true",
        help="also run the efficiency sweep with --before's code (alternated with qeu each rep)",
    )
    parser.add_argument("--before", default=None, help="a directory with another qeu_tune checkout to compare")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="Ray CPUs (default: all cores)")
    parser.add_argument("--keep", action="store_true", help="keep each run's temporary directory")
    parser.add_argument(
        "--fresh-store",
        action="store_true",
        help="let each command create its MLflow SQLite database (default: created and migrated "
        "before the timing starts, as for a user's second sweep)",
    )
    parser.add_argument(
        "--qeu-override",
        action="append",
        default=[],
        help="extra override of the qeu-tune commands (repeatable), e.g. cluster=remote to join "
        "a running `ray start --head` (whose daemons' CPU the process-tree CPU then misses)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    # Internal: the plain Tune + RLlib + MLflowLoggerCallback script.
    parser.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--no-mlflow", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--tune-only",
        action="store_true",
        help="adds the variant 'tune': the plain script without MLflowLoggerCallback (Tune's floor)",
    )
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        plain_worker(args)
        return
    if args.quick:
        args.trials, args.steps = 2, 10000
        args.efficiency_trials = min(args.efficiency_trials, 4)
    os.environ["BENCH_CPUS"] = str(args.cpus)

    variants = ["qeu", "plain"] + (["before"] if args.before else []) + (["tune"] if args.tune_only else [])
    results: Dict[str, Any] = {
        "command": " ".join(["python", "scripts/bench_overhead.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "versions": versions(),
        "cpus": args.cpus,
        "trials": args.trials,
        "steps": args.steps,
        "reps": args.reps,
        "variants": variants,
        "before": args.before,
        "thread_env": THREAD_ENV,
        "mlflow_store_created_before_timing": not args.fresh_store,
        "load_average_1min_at_start": os.getloadavg()[0],
        "runs": [],
        "efficiency_runs": [],
    }
    print(f"load average at start: {results['load_average_1min_at_start']:.2f}", flush=True)
    if not args.skip_pair:
        for rep in range(args.reps):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for variant in order:
                run = run_variant(
                    variant,
                    args.trials,
                    args.steps,
                    args.cpus,
                    args.before,
                    args.keep,
                    args.fresh_store,
                    args.qeu_override,
                )
                run["rep"] = rep
                results["runs"].append(run)
                print(f"rep {rep} {describe(run)}", flush=True)
        results["summary"] = summarise(results["runs"], variants)
    eff_variants = ["qeu"] + (["before"] if args.efficiency_before and args.before else [])
    for rep in range(args.efficiency_reps if args.efficiency_trials else 0):
        for variant in eff_variants[rep % len(eff_variants) :] + eff_variants[: rep % len(eff_variants)]:
            run = run_variant(
                variant,
                args.efficiency_trials,
                args.steps,
                args.cpus,
                args.before,
                args.keep,
                args.fresh_store,
                args.qeu_override,
            )
            run["rep"] = rep
            results["efficiency_runs"].append(run)
            print(f"efficiency {args.efficiency_trials} trials: {describe(run)}", flush=True)
    results["load_average_1min_at_end"] = os.getloadavg()[0]

    print(
        f"\n=== {args.trials} PPO CartPole trials x {args.steps} env steps, {args.cpus} CPUs, "
        f"{args.reps} alternated repetitions ==="
    )
    s = results.get("summary", {})
    for v in variants if s else []:
        d = s[v]
        print(
            f"{v:6s}: wall {d['wall_s_median']:.1f} s median {[round(x, 1) for x in d['wall_s']]}; CPU "
            f"{d['cpu_ms_per_env_step_median']:.3f} ms/env step {[round(x, 3) for x in d['cpu_ms_per_env_step']]}; "
            f"{d['env_steps_per_s_per_core_median']:.0f} env steps/s/core; final return (mean of trials) "
            f"{d['final_return_mean']:.1f} {[round(x, 1) for x in d['final_return_mean_per_rep']]}"
        )
        print(
            f"        command -> first trial {d['command_to_first_trial_start_s_median']} s; command -> first "
            f"result {d['command_to_first_result_s_median']} s; trial start -> first result "
            f"{d['trial_start_to_first_result_first_wave_median_s_median']} s (first wave), "
            f"{d['trial_start_to_first_result_later_median_s_median']} s (later trials); last trial end -> exit "
            f"{d['last_trial_end_to_exit_s_median']} s"
        )
    for v in variants[1:] if s else []:
        d = s[f"qeu_over_{v}"]
        print(
            f"qeu / {v}: wall-time ratio {d['wall_ratio_median']:.3f} (per rep "
            f"{[round(x, 3) for x in d['wall_ratio_per_rep']]}); CPU per env step ratio "
            f"{d['cpu_per_env_step_ratio_median']:.3f} ({[round(x, 3) for x in d['cpu_per_env_step_ratio_per_rep']]})"
        )
    for run in results["efficiency_runs"]:
        print(
            f"sweep efficiency ({run['variant']}), {run['trials']} trials x {run['steps_per_trial']} steps: "
            f"{run['sweep_efficiency']:.3f} = sum(time_total_s) {run['sum_trial_time_total_s']:.1f} s / "
            f"({args.cpus} CPUs x {run['wall_s']:.1f} s wall); RLlib training only: "
            f"{run.get('sweep_efficiency_rllib_training_only', float('nan')):.3f}; over the trials' window "
            f"(first start -> last end, {run.get('first_trial_start_to_last_trial_end_s', float('nan')):.1f} s): "
            f"{run.get('sweep_efficiency_trials_window', float('nan')):.3f}"
        )
    print(
        f"load average (1 min): start {results['load_average_1min_at_start']:.2f}, "
        f"end {results['load_average_1min_at_end']:.2f}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
