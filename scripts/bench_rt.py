"""Benchmark: RT metric speed, reward-wrapper overhead, RLlib PPO throughput, side by side.

How to run this script::

    python scripts/bench_rt.py            # ~5-6 minutes on 2 cores
    python scripts/bench_rt.py --quick    # smaller, noisier, ~1.5 minutes

Everything runs on one core (BLAS and torch limited to one thread). It prints a table and
writes ``results/bench_rt.json``; ``docs/benchmarks.md`` quotes the figures.

What is measured:

1. ``UnitSpace.distance`` on a batch (n = 100k samples, k = 36 features), in samples/s,
   and as a fraction of the memory-bandwidth bound: the time of the fastest plain pass
   over the same array (``X.sum()`` or ``X @ v``), since the distance must read X once.
   Repeated with n = 1M, an array too large for any cache.
2. One single-sample call (microseconds): ``UnitSpace.distance``, ``ReferenceSet``'s
   ``distance``/``signed_distance`` on the Cliff route, and the complete metrics the
   reward wrapper calls per step (feature map + model) of three designs: the built-in
   ``cliff_signed`` and ``cartpole_rt``, and ``cartpole_upright``, a light design defined
   in this script (``UPRIGHT``) that isolates the wrapper's own cost.
3. Raw CartPole env steps/s unwrapped and wrapped with ``cartpole_rt`` and
   ``cartpole_upright``, same seed and actions.
4. RLlib PPO training throughput over whole ``train()`` iterations (``num_env_runners=0``,
   ``conf/algo/ppo.yaml``'s ``num_envs_per_env_runner``: vectorised, as a sweep runs)
   without a design, with ``cartpole_rt`` and ``cartpole_upright``, and with
   ``cartpole_rt`` plus ``step_info: false`` (no per-step ``info`` entries). Throughput
   is env steps per **CPU second of the training thread** (``time.thread_time``: with
   ``num_env_runners=0`` and no remote learner, sampling and learning both run in it; Ray's
   background threads, which do not depend on the design, are left out; the whole
   process's ``time.process_time`` is recorded too), which other processes on a shared
   machine change much less than wall time (also recorded). Every variant is built once and warmed up; a
   repetition is ``--rllib-iters`` rounds in which each variant trains one iteration, the
   order rotated every round (drift from longer episodes as the agents learn, CPU
   frequency, other load, hits every variant alike), and before every round each variant
   gets the no-design run's policy weights, so all sample with the same policy and the
   episodes are alike; ``--rllib-reps`` repetitions. A repetition's ratio is the median,
   over its rounds, of the design's rate over the no-design rate of the same round (seconds
   apart: a burst of other activity spoils one round, not the figure); the reported ratio
   is the median over repetitions and the spread is max - min of the repetitions' ratios,
   in percentage points (target: under 2).

    python scripts/bench_rt.py --rllib-only           # only item 4 (~4 minutes on 2 cores), writes
                                                      # results/bench_rt_rllib.json

Results to expect (targets): batch >= 20M samples/s, single sample <= 5 us, RLlib
throughput with the wrapper >= 95% of without.
"""

from __future__ import annotations

import os

# One core: set before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import platform
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench_rt.json"
TARGET_BATCH = 20e6  # samples/s
TARGET_SINGLE_US = 5.0
TARGET_RLLIB_RATIO = 0.95


def reward_design(name: str) -> Dict[str, Any]:
    """A ``conf/reward`` file as the plain dict a trial receives."""
    data = yaml.safe_load((ROOT / "conf" / "reward" / f"{name}.yaml").read_text())
    data.pop("defaults", None)
    return data


# A light RT design to separate the wrapper's own cost from the feature map's: QEU minRT
# of the raw state to the upright rest state (one reference point, identity feature map).
UPRIGHT = {
    "name": "cartpole_upright",
    "mode": "additive",
    "metrics": {
        "upright": {
            "kind": "reference",
            "weight": 0.1,
            "source": {"type": "list", "points": [[0.0, 0.0, 0.0, 0.0]]},
            "feature": {"type": "identity"},
        }
    },
}
DESIGNS = {"cartpole_rt": lambda: reward_design("cartpole_rt"), "cartpole_upright": lambda: UPRIGHT}
# RLlib only: cartpole_rt without the per-step info entries (the rewards are the same).
STEP_INFO_OFF = "cartpole_rt_step_info_false"
RLLIB_DESIGNS = {**DESIGNS, STEP_INFO_OFF: lambda: {**reward_design("cartpole_rt"), "step_info": False}}


def median_time(fn: Callable[[], Any], reps: int) -> List[float]:
    """Wall times of ``reps`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_batch(n: int, k: int, reps: int) -> Dict[str, Any]:
    from qeu_tune.rt import UnitSpace

    rng = np.random.default_rng(0)
    X = rng.random((n, k))  # non-negative patterns, as RT needs
    us = UnitSpace.fit(X[:2000])
    v = np.ones(k)
    t_dist = median_time(lambda: us.distance(X), reps)
    t_sum = median_time(lambda: X.sum(), reps)
    t_dot = median_time(lambda: X @ v, reps)
    t_bound = min(statistics.median(t_sum), statistics.median(t_dot))
    t = statistics.median(t_dist)
    return {
        "n": n,
        "k": k,
        "array_mb": X.nbytes / 1e6,
        "distance_s_median": t,
        "distance_s_min": min(t_dist),
        "samples_per_s": n / t,
        "bound_read_s": {"X.sum()": statistics.median(t_sum), "X @ v": statistics.median(t_dot)},
        "bound_samples_per_s": n / t_bound,
        "bound_gb_per_s": X.nbytes / t_bound / 1e9,
        "fraction_of_bound": t_bound / t,
    }


def per_call_us(stmt: str, namespace: Dict[str, Any], number: int) -> float:
    """Best-of-5 microseconds per call of ``stmt`` (timeit: no lambda overhead)."""
    return min(timeit.repeat(stmt, globals=namespace, number=number, repeat=5)) / number * 1e6


def bench_single(number: int) -> Dict[str, float]:
    from qeu_tune.envs.cliff_grid import cliff_side_points, cliff_standard_route
    from qeu_tune.reward import build_metric
    from qeu_tune.rt import ReferenceSet, UnitSpace

    rng = np.random.default_rng(1)
    us = UnitSpace.fit(rng.random((2000, 36)))
    neg, pos = cliff_side_points()
    ref = ReferenceSet(cliff_standard_route(), negative_side=neg, positive_side=pos)
    cliff = build_metric("route", reward_design("cliff_signed")["metrics"]["route"])
    cartpole = build_metric("balance", reward_design("cartpole_rt")["metrics"]["balance"])
    upright = build_metric("upright", UPRIGHT["metrics"]["upright"])
    onehot = np.zeros(48, np.float32)
    onehot[26] = 1.0
    ns = {
        "us": us,
        "x": rng.random(36),
        "ref": ref,
        "p": np.array([5.0, 2.0]),
        "cliff": cliff,
        "onehot": onehot,
        "cartpole": cartpole,
        "upright": upright,
        "cp_obs": np.array([0.01, 0.1, 0.02, -0.1], np.float32),
    }
    return {
        "unit_space_distance_k36_us": per_call_us("us.distance(x)", ns, number),
        "reference_distance_cliff_us": per_call_us("ref.distance(p)", ns, number),
        "reference_signed_distance_cliff_us": per_call_us("ref.signed_distance(p)", ns, number),
        "metric_cliff_signed_onehot_obs_us": per_call_us("cliff(onehot)", ns, number // 2),
        "metric_cartpole_rt_us": per_call_us("cartpole(cp_obs)", ns, number // 2),
        "metric_cartpole_upright_us": per_call_us("upright(cp_obs)", ns, number // 2),
    }


def bench_env(steps: int, reps: int) -> Dict[str, Any]:
    import gymnasium as gym

    from qeu_tune.reward import make_env

    actions = np.random.default_rng(2).integers(0, 2, size=steps).tolist()
    env_returns: Dict[str, float] = {}

    def run(name: str, env: gym.Env) -> float:
        env.reset(seed=0)
        total = 0.0
        t0 = time.perf_counter()
        for a in actions:
            _, reward, terminated, truncated, info = env.step(a)
            total += info.get("reward/env", reward)
            if terminated or truncated:
                env.reset()
        elapsed = time.perf_counter() - t0
        env_returns[name] = total
        return elapsed

    envs = {"raw": gym.make("CartPole-v1")}
    envs.update({name: make_env("CartPole-v1", {}, design(), gamma=0.99) for name, design in DESIGNS.items()})
    times: Dict[str, List[float]] = {name: [] for name in envs}
    for rep in range(reps):  # alternate the order: drift hits every variant equally
        for name in list(envs) if rep % 2 == 0 else list(envs)[::-1]:
            times[name].append(run(name, envs[name]))
    assert len(set(env_returns.values())) == 1, "the wrapper changed the environment's own rewards"
    rate = {name: steps / statistics.median(t) for name, t in times.items()}
    out: Dict[str, Any] = {"steps": steps, "raw_steps_per_s": rate["raw"]}
    for name in DESIGNS:
        out[name] = {
            "steps_per_s": rate[name],
            "ratio": rate[name] / rate["raw"],
            "overhead_us_per_step": (1 / rate[name] - 1 / rate["raw"]) * 1e6,
        }
    return out


def bench_rllib(iters: int, reps: int) -> Dict[str, Any]:
    import ray
    import torch

    from qeu_tune.engine.trainable import build_algo_config, register_env

    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ppo = yaml.safe_load((ROOT / "conf" / "algo" / "ppo.yaml").read_text())
    # Vectorised runners, as a sweep runs them: ppo.yaml's sub-envs per env runner.
    num_envs = int(ppo.get("num_envs_per_env_runner", 1))
    register_env()
    last_steps: Dict[int, float] = {}

    def build(reward: Dict[str, Any]) -> Any:
        config = {
            "algo": {
                "name": "ppo",
                "params": ppo["params"],
                "model": ppo["model"],
                "num_env_runners": 0,
                "num_envs_per_env_runner": num_envs,
            },
            "env": {"id": "CartPole-v1", "env_config": {}},
            "reward": reward,
            "seed": 0,
        }
        algo = build_algo_config(config).build_algo()
        # Warm-up: first-iteration costs (allocation, lazy imports) stay out of the timing.
        last_steps[id(algo)] = _env_steps(algo.train())
        return algo

    variants = {"without": {"name": "none", "mode": "none", "metrics": {}}}
    variants.update({name: design() for name, design in RLLIB_DESIGNS.items()})
    algos = {name: build(reward) for name, reward in variants.items()}
    # Per repetition and variant: env steps sampled, CPU seconds of this process (the
    # trial's sampling and learning both run here: num_env_runners=0) and wall seconds.
    # Throughput = env steps per CPU second: other processes on a shared machine change
    # the wall time, much less the CPU time this process needs per env step.
    # Within a repetition the variants alternate at every iteration (order rotated each
    # round), and before each round every variant gets the no-design run's policy weights:
    # all sample with the same policy, so their episodes (lengths, resets) are alike and
    # the difference left is the design's own cost, not a different learning trajectory.
    samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in algos}
    names_ = list(algos)
    try:
        for rep in range(reps):
            acc = {
                name: {"env_steps": 0.0, "cpu_s": 0.0, "process_cpu_s": 0.0, "wall_s": 0.0, "rounds": []}
                for name in algos
            }
            for it in range(iters):
                weights = algos["without"].learner_group.get_weights()
                for name in names_:
                    if name != "without":
                        algos[name].learner_group.set_weights(weights)
                        algos[name].env_runner_group.sync_weights(
                            from_worker_or_learner_group=algos[name].learner_group
                        )
                k = (rep * iters + it) % len(names_)
                for name in names_[k:] + names_[:k]:
                    algo = algos[name]
                    c0, p0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
                    result = algo.train()
                    cpu, elapsed = time.thread_time() - c0, time.perf_counter() - t0
                    acc[name]["process_cpu_s"] += time.process_time() - p0
                    steps = _env_steps(result)
                    acc[name]["rounds"].append(
                        ((steps - last_steps[id(algo)]) / cpu, (steps - last_steps[id(algo)]) / elapsed)
                    )
                    acc[name]["env_steps"] += steps - last_steps[id(algo)]
                    acc[name]["cpu_s"] += cpu
                    acc[name]["wall_s"] += elapsed
                    last_steps[id(algo)] = steps
            for name in algos:
                samples[name].append(acc[name])
    finally:
        for algo in algos.values():
            algo.stop()
        ray.shutdown()
    rates = {name: [s["env_steps"] / s["cpu_s"] for s in ss] for name, ss in samples.items()}
    wall_rates = {name: [s["env_steps"] / s["wall_s"] for s in ss] for name, ss in samples.items()}
    out: Dict[str, Any] = {
        "method": "env steps per CPU second of the training thread (time.thread_time; process CPU "
        "in samples.process_cpu_s); variants alternate at every iteration (order rotated), "
        "all sample with the no-design run's policy weights; a repetition's ratio is the "
        "median over its rounds of design rate / no-design rate in the same round; "
        "samples[*].rounds = per round (env steps per CPU s, per wall s)",
        "iterations_per_measurement": iters,
        "train_batch_size": ppo["params"]["train_batch_size_per_learner"],
        "num_envs_per_env_runner": num_envs,
        "repetitions": reps,
        "samples": samples,
        "without_steps_per_cpu_s": rates["without"],
        "without_median": statistics.median(rates["without"]),
        "without_wall_steps_per_s": wall_rates["without"],
        # How much one variant alone varies between repetitions (min and max / median).
        "without_spread_relative_to_median": [
            min(rates["without"]) / statistics.median(rates["without"]),
            max(rates["without"]) / statistics.median(rates["without"]),
        ],
    }

    def round_median(name: str, which: int) -> List[float]:
        # Per repetition: the median over its rounds of (design rate / no-design rate) in the
        # same round, i.e. measured seconds apart; a burst of other activity (the machine's
        # speed varies by +-20% over minutes on a shared VM) spoils one round, not the figure.
        return [
            statistics.median(d[which] / w[which] for d, w in zip(sd["rounds"], sw["rounds"]))
            for sd, sw in zip(samples[name], samples["without"])
        ]

    for name in RLLIB_DESIGNS:
        per_rep = round_median(name, 0)
        wall_per_rep = round_median(name, 1)
        out[name] = {
            "steps_per_cpu_s": rates[name],
            "median": statistics.median(rates[name]),
            "ratio_median": statistics.median(per_rep),
            "ratio_of_medians": statistics.median(rates[name]) / statistics.median(rates["without"]),
            "ratio_per_repetition": per_rep,
            "ratio_spread_pp": 100 * (max(per_rep) - min(per_rep)),
            "wall_steps_per_s": wall_rates[name],
            "wall_ratio_per_repetition": wall_per_rep,
            "wall_ratio_spread_pp": 100 * (max(wall_per_rep) - min(wall_per_rep)),
        }
    return out


def _env_steps(result: Dict[str, Any]) -> float:
    runners = result.get("env_runners", {})
    return float(result.get("num_env_steps_sampled_lifetime", runners.get("num_env_steps_sampled_lifetime", 0)))


def versions() -> Dict[str, str]:
    import gymnasium
    import ray
    import torch

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "ray": ray.__version__,
        "torch": torch.__version__,
    }


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def print_table(r: Dict[str, Any]) -> None:
    """The results as an aligned text table, with each target's verdict."""
    rows = _micro_rows(r) if "batch" in r else []
    if r.get("rllib") is not None:
        rows += _rllib_rows(r["rllib"])
    width = max(len(row[0]) for row in rows)
    vwidth = max(len(row[1]) for row in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {note}")


def _micro_rows(r: Dict[str, Any]) -> List[Any]:
    b, bd, s, e = r["batch"], r["batch_dram"], r["single"], r["env"]
    verdict, single = _verdict, TARGET_SINGLE_US
    rows = [
        (
            "UnitSpace.distance, batch n=100k k=36",
            f"{b['samples_per_s'] / 1e6:.1f} M samples/s",
            f"target >= 20 M/s: {verdict(b['samples_per_s'] >= TARGET_BATCH)}",
        ),
        (
            "  plain read of the same array (bound)",
            f"{b['bound_samples_per_s'] / 1e6:.1f} M samples/s",
            f"{b['bound_gb_per_s']:.1f} GB/s; distance at {100 * b['fraction_of_bound']:.0f}% of it",
        ),
        (
            "UnitSpace.distance, batch n=1M (> L3)",
            f"{bd['samples_per_s'] / 1e6:.1f} M samples/s",
            f"bound {bd['bound_samples_per_s'] / 1e6:.1f} M/s ({bd['bound_gb_per_s']:.1f} GB/s): "
            f"{100 * bd['fraction_of_bound']:.0f}%",
        ),
        (
            "UnitSpace.distance, 1 sample (k=36)",
            f"{s['unit_space_distance_k36_us']:.2f} us",
            f"target <= 5 us: {verdict(s['unit_space_distance_k36_us'] <= single)}",
        ),
        (
            "ReferenceSet.distance, 1 state (Cliff)",
            f"{s['reference_distance_cliff_us']:.2f} us",
            f"target <= 5 us: {verdict(s['reference_distance_cliff_us'] <= single)}",
        ),
        (
            "ReferenceSet.signed_distance, 1 state",
            f"{s['reference_signed_distance_cliff_us']:.2f} us",
            f"target <= 5 us: {verdict(s['reference_signed_distance_cliff_us'] <= single)}",
        ),
        (
            "metric/step: cliff_signed, onehot obs",
            f"{s['metric_cliff_signed_onehot_obs_us']:.2f} us",
            "obs_to_xy + signed minRT",
        ),
        ("metric/step: cartpole_rt", f"{s['metric_cartpole_rt_us']:.2f} us", "rbf (81 features) + D"),
        ("metric/step: cartpole_upright", f"{s['metric_cartpole_upright_us']:.2f} us", "identity + minRT, 1 point"),
        ("CartPole env steps/s, raw", f"{e['raw_steps_per_s']:,.0f}", "same seed and actions below"),
    ]
    for name in DESIGNS:
        rows.append(
            (
                f"CartPole env steps/s, {name}",
                f"{e[name]['steps_per_s']:,.0f}",
                f"{100 * e[name]['ratio']:.0f}% of raw, +{e[name]['overhead_us_per_step']:.1f} us/step",
            )
        )
    return rows


def _rllib_rows(rl: Dict[str, Any]) -> List[Any]:
    lo, hi = rl["without_spread_relative_to_median"]
    rows = [
        (
            f"RLlib PPO env steps/CPU s, {rl['num_envs_per_env_runner']} envs/runner, no design",
            f"{rl['without_median']:,.0f}",
            f"median; repetitions {100 * (lo - 1):+.1f}% to {100 * (hi - 1):+.1f}% of it",
        )
    ]
    for name in RLLIB_DESIGNS:
        ratio = rl[name]["ratio_median"]
        spread = rl[name]["ratio_per_repetition"]
        label = "cartpole_rt, step_info: false" if name == STEP_INFO_OFF else name
        rows.append(
            (
                f"RLlib PPO env steps/CPU s, {label}",
                f"{rl[name]['median']:,.0f}",
                f"{100 * ratio:.1f}% of without (repetitions {100 * min(spread):.1f}-"
                f"{100 * max(spread):.1f}%, spread {rl[name]['ratio_spread_pp']:.1f} pp; wall-time "
                f"spread {rl[name]['wall_ratio_spread_pp']:.1f} pp); target >= 95%: "
                f"{_verdict(ratio >= TARGET_RLLIB_RATIO)}, spread < 2 pp: "
                f"{_verdict(rl[name]['ratio_spread_pp'] < 2.0)}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier, ~1.5 minutes)")
    parser.add_argument("--no-rllib", action="store_true", help="skip the RLlib PPO measurement")
    parser.add_argument("--rllib-only", action="store_true", help="only the RLlib PPO measurement")
    parser.add_argument(
        "--rllib-iters",
        type=int,
        default=None,
        help="rounds (one train() iteration per variant) per repetition (default 16, --quick 4)",
    )
    parser.add_argument("--rllib-reps", type=int, default=None, help="repetitions (default 4)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(ROOT)})"
    )
    args = parser.parse_args()
    quick = args.quick
    if args.rllib_only and args.output == RESULTS:  # keep the full run's file whole
        args.output = RESULTS.with_name("bench_rt_rllib.json")

    results: Dict[str, Any] = {
        "command": " ".join(["python", "scripts/bench_rt.py", *sys.argv[1:]]),
        "versions": versions(),
        "load_average_1_5_15_min_at_start": list(os.getloadavg()),
    }
    if not args.rllib_only:
        print("RT batch ...", flush=True)
        results["batch"] = bench_batch(100_000, 36, reps=10 if quick else 30)
        # 100k x 36 float64 is 28.8 MB: it can sit in a large L3 cache (32 MiB on the machine
        # of docs/benchmarks.md). 1M rows (288 MB) shows the DRAM-bound case.
        results["batch_dram"] = bench_batch(1_000_000, 36, reps=3 if quick else 8)
        print("single-sample calls ...", flush=True)
        results["single"] = bench_single(number=20_000 if quick else 100_000)
        print("CartPole env steps ...", flush=True)
        results["env"] = bench_env(steps=20_000 if quick else 50_000, reps=3 if quick else 5)
    if not args.no_rllib:
        print("RLlib PPO throughput ...", flush=True)
        iters = args.rllib_iters or (4 if quick else 16)
        reps = args.rllib_reps or 4
        results["rllib"] = bench_rllib(iters=iters, reps=reps)
    results["targets"] = {
        "rllib_ratio_spread_pp": 2.0,
        "batch_samples_per_s": TARGET_BATCH,
        "single_sample_us": TARGET_SINGLE_US,
        "rllib_ratio": TARGET_RLLIB_RATIO,
    }
    # Other processes share the cores: the load average says how much to trust the run.
    results["load_average_1_5_15_min_at_end"] = list(os.getloadavg())
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
