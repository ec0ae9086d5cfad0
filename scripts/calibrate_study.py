"""Calibration of ``qeu-tune study``'s verdicts on the synthetic learner, whose truth is known.

How to run this script::

    python scripts/calibrate_study.py                      # 100 A/A studies + 2 effect sizes x 20 studies
    python scripts/calibrate_study.py --aa 10 --per-effect 5 --output /tmp/calibration.json   # a quick look

Each study is a real ``qeu-tune study`` (``engine.study.run_study``: tuning sweeps with TPE, test
sweeps on held-out seeds, the comparison read back from MLflow) of ``algo=synthetic`` on
CartPole's return range, with its own tuning and test seeds:

* **A/A**: designs ``none`` and ``aa_control``, both ``reward=none``, each tuned separately (its
  own TPE seed). The verdict should be *no difference detected*; the share that is not is the
  false-positive rate of the whole protocol (tuning luck included), target <= 5%.
* **Known effects**: ``none`` against ``shifted``, whose reward metric weight adds a known amount
  to the curve's learning rate (``qeu_tune/engine/synthetic.py``); the detection rate is the
  share of studies that say *better*. The true effect on the final return of the tuned
  configurations is computed from the model (``synthetic.true_final_return``) and reported.

Prints the rates with Wilson 95% intervals and writes every study's verdict to
``results/calibration_study.json`` (cited in docs/statistics.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "calibration_study.json"
BASE = [
    "experiment=single",
    "algo=synthetic",
    "algo.params.base_rate=1.0",
    "stop.env_steps=10000",
    "algo.params.lr=tag(log,interval(3e-4,3e-3))",
    "study.baseline=none",
    'study.designs.none=["reward=none"]',
    "study.test.eval_interval=5",
    "verbose=0",
]


def wilson(k: int, n: int, z: float = 1.96) -> List[float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def one_study(
    index: int, design: List[str], name: str, *, uri: str, storage: str, test_seeds: int, tune_samples: int
) -> Dict[str, Any]:
    from qeu_tune.commands.argv import prepare_argv
    from qeu_tune.config.compose import compose, to_plain
    from qeu_tune.engine import synthetic
    from qeu_tune.engine.study import plan_study, run_study

    overrides = prepare_argv(
        [
            *BASE,
            f"study.designs.{name}={json.dumps(design)}",
            f"study.name=cal-{index}-{name}",
            f"study.tune.first_seed={index * 10}",
            f"study.test.first_seed={100_000 + index * 100}",
            f"study.test.seeds={test_seeds}",
            f"tracking.uri={uri}",
            f"cluster.storage_path={storage}",
        ]
    ).argv
    started = time.monotonic()
    result = run_study(plan_study(to_plain(compose(overrides)), overrides), command="calibrate_study")
    designs = result.summary["designs"]
    truth = {d: synthetic.true_final_return(designs[d]["config"]) for d in designs}
    return {
        "study": index,
        "design": name,
        "verdict": designs[name]["verdict"],
        "p_improvement": designs[name]["p_improvement"],
        "p_ci": designs[name]["p_ci"],
        "true_effect": truth[name] - truth["none"],
        "wall_s": round(time.monotonic() - started, 1),
    }


def write(
    args: argparse.Namespace, conditions: list, runs: List[Dict[str, Any]], started: float, *, complete: bool
) -> Dict[str, Any]:
    """Summarises the studies so far and writes them (after every study: a long run can be read early)."""
    summary = {}
    for name, _, _count in conditions:
        rows = [r for r in runs if r["design"] == name]
        if not rows:
            continue
        better = sum(r["verdict"] == "better" for r in rows)
        worse = sum(r["verdict"] == "worse" for r in rows)
        none_ = sum(r["verdict"] == "no difference detected" for r in rows)
        effects = sorted(r["true_effect"] for r in rows)
        summary[name] = {
            "studies": len(rows),
            "better": better,
            "worse": worse,
            "no_difference": none_,
            "no_difference_rate": round(none_ / len(rows), 4),
            "no_difference_ci": wilson(none_, len(rows)),
            "better_rate": round(better / len(rows), 4),
            "better_ci": wilson(better, len(rows)),
            "true_effect_median": effects[len(effects) // 2],
            "true_effect_range": [effects[0], effects[-1]],
        }
    out = {
        "command": "python scripts/calibrate_study.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"),
        "complete": complete,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "wall_s": round(time.monotonic() - started, 1),
        "base_overrides": BASE,
        "test_seeds": args.test_seeds,
        "summary": summary,
        "studies": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aa", type=int, default=100, help="A/A studies")
    parser.add_argument("--weights", default="0.25,1.0", help="reward weights of the shifted design (rate shift)")
    parser.add_argument("--per-effect", type=int, default=20, help="studies per effect size")
    parser.add_argument("--test-seeds", type=int, default=10)
    parser.add_argument("--tune-samples", type=int, default=6, help="configurations tuned per design")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("QEU_TUNE_HOME", tempfile.mkdtemp(prefix="qeu-calibrate-"))
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    home = Path(os.environ["QEU_TUNE_HOME"])
    uri, storage = f"sqlite:///{home / 'mlflow.db'}", str(home / "ray_results")
    runs: List[Dict[str, Any]] = []
    conditions = [("aa_control", ["reward=none"], args.aa)] + [
        (
            f"shifted_{w.replace('.', 'p')}",
            ["reward=cartpole_rt", f"reward.metrics.balance.weight={w}"],
            args.per_effect,
        )
        for w in args.weights.split(",")
    ]
    started = time.monotonic()
    index = 0
    # Interleaved in proportion (A/A, effects, A/A, ...), so a run stopped early covers every condition.
    jobs = sorted(((k + 0.5) / count, name, design) for name, design, count in conditions for k in range(count))
    for _, name, design in jobs:
        runs.append(
            one_study(
                index,
                design,
                name,
                uri=uri,
                storage=storage,
                test_seeds=args.test_seeds,
                tune_samples=args.tune_samples,
            )
        )
        index += 1
        last = runs[-1]
        print(
            f"study {index}: {name} -> {last['verdict']} (P {last['p_improvement']:.2f}, "
            f"true effect {last['true_effect']:+.1f}, {last['wall_s']} s)",
            flush=True,
        )
        write(args, conditions, runs, started, complete=False)
    summary = write(args, conditions, runs, started, complete=True)
    for name, row in summary.items():
        print(
            f"{name}: {row['studies']} studies; better {row['better']}, worse {row['worse']}, no difference "
            f"{row['no_difference']} (no-difference rate {row['no_difference_rate']:.0%} {row['no_difference_ci']}); "
            f"true effect on final return: median {row['true_effect_median']:+.1f}"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
