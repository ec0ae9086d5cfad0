"""Runs the evidence experiments of docs/experiments.md and writes their results.

How to run this script::

    python scripts/experiments.py --list                    # the experiments and their commands
    python scripts/experiments.py cliff_compare_dqn         # the full experiment
    python scripts/experiments.py cliff_compare_dqn --quick # fewer seeds, shorter budget: minutes
    python scripts/experiments.py all --quick

Each experiment is one ``qeu-tune experiment=<file>`` sweep (printed before it runs, so it
can be rerun by hand) with a fixed sweep name, recorded in MLflow like any other sweep
(``--tracking-uri``, default: the local SQLite store). Afterwards the script reads the
sweep back with the same code as ``qeu-tune report NAME`` and writes:

* ``results/<name>_ranking.csv`` and ``results/<name>_trials.csv``: the report's tables;
* ``results/<name>.json``: the sweep's MLflow parent run (name and id), the command, wall
  time, machine, software versions, and per configuration the statistics the docs quote
  (steps to threshold, fraction of seeds that reached it, final greedy return, route
  adherence, probability of improvement over the baseline, each with its 95% CI);
* ``docs/images/<name>/``: learning curves with CI bands, RT-metric trajectories and,
  for weight sweeps, weight vs performance.

``qeu-tune report <sweep name>`` regenerates the tables from MLflow at any time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Experiment:
    """One sweep of the evidence: an experiment file plus overrides."""

    file: str
    about: str
    overrides: List[str] = field(default_factory=list)
    quick: List[str] = field(default_factory=list)  # added for --quick
    threshold: Optional[float] = None  # report threshold; None: env.return_threshold


QUICK_CLIFF = ["search.num_seeds=3", "stop.env_steps=20000"]
EXPERIMENTS: Dict[str, Experiment] = {
    "cliff_compare_dqn": Experiment(
        "qeu_cliff_compare_dqn",
        "Cliff Walking, DQN: none / signed 0.3 / absolute 0.5 / potential 0.5",
        quick=QUICK_CLIFF,
    ),
    "cliff_compare_ppo": Experiment(
        "qeu_cliff_compare", "Cliff Walking, PPO: none / signed 0.3 / absolute 0.5 / potential 0.5", quick=QUICK_CLIFF
    ),
    "cliff_weights_absolute": Experiment(
        "qeu_cliff_weight_sweep", "Cliff Walking, PPO: absolute feedback r - w |minRT|, 6 weights", quick=QUICK_CLIFF
    ),
    "cliff_weights_potential": Experiment(
        "qeu_cliff_weight_sweep",
        "Cliff Walking, PPO: potential-based shaping with Phi = -w minRT, 6 weights",
        overrides=["reward=cliff_potential"],
        quick=QUICK_CLIFF,
    ),
    "mountaincar": Experiment(
        "mountaincar_compare",
        "MountainCar-v0, PPO: none / RT unit space (additive, potential) / reference set",
        quick=["search.num_seeds=2", "stop.env_steps=30000"],
    ),
}


def sweep_name(name: str, quick: bool) -> str:
    """The fixed sweep name of an experiment (its MLflow parent run's name)."""
    return f"{name}-quick" if quick else name


def command(name: str, quick: bool) -> List[str]:
    """The ``qeu-tune`` command line of an experiment."""
    exp = EXPERIMENTS[name]
    return [
        "qeu-tune",
        f"experiment={exp.file}",
        *exp.overrides,
        *(exp.quick if quick else []),
        f"sweep_name={sweep_name(name, quick)}",
    ]


def run(name: str, *, quick: bool, uri: Optional[str], results: Path, images: Path) -> Dict[str, Any]:
    """Runs one experiment's sweep, then writes its tables, plots and summary."""
    cmd = command(name, quick)
    if uri:
        cmd.append(f"tracking.uri={uri}")
    print(f"\n=== {name}{' (quick)' if quick else ''}: {EXPERIMENTS[name].about}\n$ {shlex.join(cmd)}", flush=True)
    started = time.time()
    code = subprocess.call(cmd)
    wall = time.time() - started
    if code != 0:
        raise SystemExit(f"{name}: qeu-tune exited with {code}")
    return write_results(
        name,
        sweep_name(name, quick),
        cmd=cmd,
        wall_s=wall,
        uri=uri,
        results=results,
        images=images,
        threshold=EXPERIMENTS[name].threshold,
    )


def write_results(
    name: str,
    sweep: str,
    *,
    cmd: List[str],
    wall_s: Optional[float],
    uri: Optional[str],
    results: Path,
    images: Path,
    threshold: Optional[float] = None,
) -> Dict[str, Any]:
    """Reads the sweep back (as ``qeu-tune report`` does) and writes its result files."""
    from qeu_tune.analysis import build_report, format_report
    from qeu_tune.analysis.plots import write_plots
    from qeu_tune.analysis.runs import client_for, load_sweep
    from qeu_tune.core.paths import resolve_tracking_uri

    client = client_for(resolve_tracking_uri(uri))
    report = build_report(client, load_sweep(client, sweep), threshold=threshold)
    print(format_report(report))
    results.mkdir(parents=True, exist_ok=True)
    stem = sweep.replace("-", "_")
    report.ranked.to_csv(results / f"{stem}_ranking.csv")
    report.trials.to_csv(results / f"{stem}_trials.csv", index=False)
    (images / stem).mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, images / stem)
    summary = {
        "experiment": name,
        "sweep_name": report.sweep.name,
        "parent_run_id": report.sweep.run_id,
        "command": shlex.join(cmd),
        "wall_s": wall_s,  # the command, report included (None with --report-only)
        "sweep_wall_s": _sweep_wall_s(report.sweep.parent),  # MLflow: parent run start -> end
        "curve": report.metric,
        "baseline": report.baseline,
        "configurations": _configurations(report),
        "trials": len(report.trials),
        "failed_trials": report.failed,
        "plots": [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in plots],
        "machine": _machine(),
        "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    (results / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(f"wrote {results / stem}_ranking.csv, _trials.csv, .json and {len(plots)} plots in {images / stem}")
    return summary


def _sweep_wall_s(parent: Any) -> Optional[float]:
    info = parent.info
    return (info.end_time - info.start_time) / 1000.0 if info.end_time and info.start_time else None


def _configurations(report: Any) -> Dict[str, Dict[str, float]]:
    out = {}
    for label, row in report.ranked.iterrows():
        keep = {
            k: float(v)
            for k, v in row.items()
            if isinstance(v, (int, float))
            and (
                k in ("rank", "n_seeds", "poi", "poi_lo", "poi_hi")
                or k.split("/")[0] in ("steps_to_threshold", "reached", "final_mean", "auc_norm")
                or k.startswith("task/")
            )
        }
        keep["seeds"] = sorted(int(s) for s in report.trials.loc[report.trials["config"] == label, "seed"])
        out[str(label)] = keep
    return out


def _machine() -> Dict[str, Any]:
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        **{pkg: version(pkg) for pkg in ("ray", "torch", "mlflow", "gymnasium", "numpy")},
        "load_1min": os.getloadavg()[0],
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"experiments: {', '.join(EXPERIMENTS)} or all")
    parser.add_argument("--quick", action="store_true", help="fewer seeds and a shorter budget (minutes)")
    parser.add_argument("--list", action="store_true", help="print the experiments and their commands")
    parser.add_argument("--report-only", action="store_true", help="do not run; read the recorded sweep back")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, exp in EXPERIMENTS.items():
            print(
                f"{name}: {exp.about}\n  {shlex.join(command(name, False))}\n  quick: {shlex.join(command(name, True))}"
            )
        return
    names = list(EXPERIMENTS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {unknown}; valid: {', '.join(EXPERIMENTS)} or all")
    for name in names:
        if args.report_only:
            cmd = command(name, args.quick)
            write_results(
                name,
                sweep_name(name, args.quick),
                cmd=cmd,
                wall_s=None,
                uri=args.tracking_uri,
                results=args.results,
                images=args.images,
                threshold=EXPERIMENTS[name].threshold,
            )
        else:
            run(name, quick=args.quick, uri=args.tracking_uri, results=args.results, images=args.images)


if __name__ == "__main__":
    sys.exit(main())
