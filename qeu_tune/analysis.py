"""Sweep comparison: ranked tables with cross-seed CIs, plots, the best configuration, reruns.

Everything is read back from MLflow (``qeu_tune.runs``); statistics come from
``qeu_tune.convergence`` / ``qeu_tune.stats`` so reports and live tracking agree.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import yaml

from qeu_tune import names, stats, tracking
from qeu_tune.config.errors import ConfigError
from qeu_tune.convergence import settings_from_params, trial_statistics
from qeu_tune.runs import SweepRuns, TrialRun, client_for, find_run, load_config_artifact, load_sweep, metric_history

DEFAULT_BY = "final_mean"  # per trial; aggregated across seeds with the IQM
DEFAULT_AGG = "iqm"
REPORT_DIR = "report"  # artifact folder on the parent run
GRID_POINTS = 60  # common env-step grid for curves with CI bands


@dataclass
class SweepReport:
    """A sweep's statistics per trial and per configuration."""

    sweep: SweepRuns
    trials: pd.DataFrame  # one row per trial with data
    ranked: pd.DataFrame  # one row per configuration, best first
    by: str
    baseline: Optional[str]
    labels: Dict[str, str]  # config key -> label
    values: Dict[str, Dict[str, Any]]  # label -> sampled values
    curves: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    rt_curves: Dict[str, Dict[str, List[Tuple[np.ndarray, np.ndarray]]]] = field(default_factory=dict)
    failed: int = 0


# ----------------------------------------------------------------------- building


def _labels(keys: Sequence[str]) -> Dict[str, str]:
    """Short, unique labels for configurations (``lr=0.001,weight=0.3``)."""
    from qeu_tune.trial_config import describe

    def label(key: str, full: bool) -> str:
        values = json.loads(key)
        if full:
            return ",".join(f"{k}={v}" for k, v in values.items()) or "base"
        return describe(values) or "base"

    short = {k: label(k, False) for k in keys}
    if len(set(short.values())) == len(short):
        return short
    return {k: label(k, True) for k in keys}


def build_report(client: Any, sweep: SweepRuns, *, by: Optional[str] = None, baseline: Optional[str] = None,
                 threshold: Optional[float] = None, reps: int = 2000) -> SweepReport:
    """Statistics of every trial of a sweep and the ranked configurations.

    Args:
        client: An ``MlflowClient``.
        sweep: The sweep's runs.
        by: Per-trial statistic to rank by (default ``final_mean``); ranked by its IQM.
        baseline: Label or config key of the baseline for probability of improvement;
            default: the configuration without a reward design, if the sweep has one.
        threshold: Return threshold for ``steps_to_threshold``; default: each trial's
            ``env.return_threshold``.
        reps: Bootstrap resamples.
    """
    by = by or DEFAULT_BY
    if by not in stats.STAT_DIRECTIONS:
        raise ConfigError(
            f"--by {by!r} is not a statistic; valid choices: {', '.join(stats.STAT_DIRECTIONS)}."
        )
    keys = sorted({t.config_key for t in sweep.trials})
    labels = _labels(keys)
    rows, curves, rt_curves, failed = [], {}, {}, 0
    for trial in sweep.trials:
        if trial.status == "FAILED":
            failed += 1
        steps, values = metric_history(client, trial.run_id, names.RETURN_ENV_MEAN)
        if not steps:
            continue
        rt = {
            k: metric_history(client, trial.run_id, k)
            for k in trial.metrics if k.startswith(names.RT_PREFIX) and k.endswith("/mean")
        }
        settings = settings_from_params(trial.params)
        if threshold is not None:
            settings = dataclasses.replace(settings, threshold=float(threshold))
        summary = trial_statistics((steps, values), settings, rt)
        label = labels[trial.config_key]
        rows.append({"config": label, "config_key": trial.config_key, "seed": trial.seed,
                     "run_id": trial.run_id, "status": trial.status, **summary})
        curves.setdefault(label, []).append((np.asarray(steps), np.asarray(values)))
        for key, (s, v) in rt.items():
            rt_curves.setdefault(label, {}).setdefault(key, []).append((np.asarray(s), np.asarray(v)))
    if not rows:
        raise ConfigError(
            f"sweep {sweep.run_id} has no trial with a recorded {names.RETURN_ENV_MEAN} history "
            f"({len(sweep.trials)} trial runs, {failed} failed); nothing to compare."
        )
    table = pd.DataFrame(rows)
    values = {labels[k]: json.loads(k) for k in keys}
    baseline_label = _pick_baseline(baseline, labels, values, sweep.trials)
    stat_cols = [c for c in stats.STAT_DIRECTIONS if c in table.columns]
    ranked = stats.rank_configurations(
        table, by=by, agg=DEFAULT_AGG, stats=stat_cols, baseline=baseline_label, reps=reps
    )
    return SweepReport(sweep=sweep, trials=table, ranked=ranked, by=by, baseline=baseline_label,
                       labels=labels, values=values, curves=curves, rt_curves=rt_curves, failed=failed)


def _pick_baseline(requested: Optional[str], labels: Mapping[str, str], values: Mapping[str, Dict[str, Any]],
                   trials: Sequence[TrialRun]) -> Optional[str]:
    if requested:
        if requested in labels.values():
            return requested
        if requested in labels:
            return labels[requested]
        raise ConfigError(
            f"--baseline {requested!r} is not a configuration of this sweep; configurations: "
            f"{', '.join(sorted(labels.values()))}."
        )
    if len(labels) < 2:
        return None
    # The no-feedback design is the natural baseline of a reward-design comparison.
    for label, sampled in values.items():
        if sampled.get("reward") == "none":
            return label
    for label, sampled in values.items():
        weights = [v for k, v in sampled.items() if k.endswith(".weight")]
        if weights and all(w == 0 for w in weights):
            return label
    return None


# ----------------------------------------------------------------------- output


def _ci(row: Mapping[str, Any], stat: str, agg: str = DEFAULT_AGG, digits: int = 4) -> str:
    value, lo, hi = row.get(f"{stat}/{agg}"), row.get(f"{stat}/{agg}_lo"), row.get(f"{stat}/{agg}_hi")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{_num(value, digits)} [CI n/a]"  # one seed: no interval
    return f"{_num(value, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _num(value: float, digits: int = 4) -> str:
    """Compact numbers; large ones (env steps, returns) in full, never as 3e+04."""
    return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def summary_table(report: SweepReport) -> pd.DataFrame:
    """The ranked table as printed: aggregates with 95% CIs as text."""
    rows = []
    for label, row in report.ranked.iterrows():
        out = {
            "rank": int(row["rank"]),
            "config": label,
            "seeds": int(row["n_seeds"]),
            f"{report.by} IQM [95% CI]": _ci(row, report.by),
            "steps_to_threshold IQM [CI]": _ci(row, "steps_to_threshold") if report.by != "steps_to_threshold" else "",
            "reached": f"{row.get('reached/mean', float('nan')):.2f}",
            "auc IQM": _num(row.get("auc/iqm", float("nan"))),
        }
        if report.baseline:
            out[f"P(>{report.baseline}) [CI]"] = (
                "baseline" if label == report.baseline else f"{row['poi']:.2f} [{row['poi_lo']:.2f}, {row['poi_hi']:.2f}]"
            )
        rows.append({k: v for k, v in out.items() if v != ""})
    return pd.DataFrame(rows)


def print_report(report: SweepReport, out: Any = None) -> None:
    out = out or sys.stdout
    sweep = report.sweep
    print(f"Sweep {sweep.name} (parent run {sweep.run_id}): {len(report.trials)} trials with data, "
          f"{len(report.ranked)} configurations, {report.failed} failed trials.", file=out)
    print(f"Ranked by IQM over seeds of per-trial {report.by} of the unshaped return "
          f"({'higher' if stats.STAT_DIRECTIONS[report.by] else 'lower'} is better); 95% stratified-bootstrap CIs.",
          file=out)
    print(summary_table(report).to_string(index=False), file=out)
    if len(report.ranked) and report.ranked["n_seeds"].min() < 5:
        print("Note: fewer than 5 seeds per configuration; CIs are crude (docs/statistics.md).", file=out)


@np.errstate(all="ignore")
def _interp(curves: Sequence[Tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    rows = []
    for steps, values in curves:
        ok = np.isfinite(values)
        if ok.sum() == 0:
            continue
        s, v = steps[ok], values[ok]
        row = np.interp(grid, s, v, left=np.nan, right=np.nan)
        rows.append(row)
    return np.array(rows) if rows else np.empty((0, grid.size))


def _band(matrix: np.ndarray, reps: int = 500, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds at each grid point with a percentile-bootstrap 95% band."""
    import warnings

    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # grid points before any seed's data
        mean = np.nanmean(matrix, axis=0)
        if matrix.shape[0] < 2:
            return mean, mean, mean
        idx = rng.integers(0, matrix.shape[0], size=(reps, matrix.shape[0]))
        boot = np.nanmean(matrix[idx], axis=1)
        lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
    return mean, lo, hi


def _grid(curves: Mapping[str, Sequence[Tuple[np.ndarray, np.ndarray]]]) -> np.ndarray:
    last = max(float(s.max()) for cs in curves.values() for s, _ in cs if s.size)
    return np.linspace(0.0, last, GRID_POINTS)


def write_plots(report: SweepReport, out_dir: Path) -> List[Path]:
    """Learning curves with CI bands, weight vs performance, RT-metric trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    order = list(report.ranked.index)
    grid = _grid(report.curves)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label in order:
        mean, lo, hi = _band(_interp(report.curves[label], grid))
        line, = ax.plot(grid, mean, label=f"{label} (n={len(report.curves[label])})")
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2)
    threshold = settings_from_params(report.sweep.trials[0].params).threshold if report.sweep.trials else None
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set(xlabel="environment steps", ylabel="unshaped return (mean, 95% CI over seeds)",
           title=f"Learning curves: {report.sweep.name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "learning_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    numeric = _numeric_sampled_keys(report.values)
    if numeric:
        key = next((k for k in numeric if k.endswith("weight")), numeric[0])
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, stat in zip(axes, ("final_mean", "steps_to_threshold")):
            xs = [report.values[c].get(key) for c in report.trials["config"]]
            ax.scatter(xs, report.trials[stat], alpha=0.6, label="trials")
            agg = [(report.values[c].get(key), r[f"{stat}/iqm"]) for c, r in report.ranked.iterrows()
                   if report.values[c].get(key) is not None]
            agg.sort(key=lambda p: p[0])
            if agg:
                ax.plot([a for a, _ in agg], [b for _, b in agg], "o-", color="black", label="IQM over seeds")
            ax.set(xlabel=key, ylabel=stat)
            ax.legend(fontsize=8)
        fig.suptitle(f"{key} vs performance (unshaped return)")
        fig.tight_layout()
        paths.append(out_dir / "weight_vs_performance.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    metrics = sorted({m for per in report.rt_curves.values() for m in per})
    if metrics:
        fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 3.2 * len(metrics)), squeeze=False)
        for ax, metric in zip(axes[:, 0], metrics):
            for label in order:
                curves = report.rt_curves.get(label, {}).get(metric)
                if curves:
                    mean, lo, hi = _band(_interp(curves, grid))
                    line, = ax.plot(grid, mean, label=label)
                    ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2)
            ax.set(xlabel="environment steps", ylabel=metric)
            ax.legend(fontsize=8)
        fig.suptitle("RT-metric trajectories (episode mean; 95% CI over seeds)")
        fig.tight_layout()
        paths.append(out_dir / "rt_metrics.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _numeric_sampled_keys(values: Mapping[str, Mapping[str, Any]]) -> List[str]:
    keys = sorted({k for v in values.values() for k in v})
    numeric = []
    for key in keys:
        column = [v.get(key) for v in values.values() if key in v]
        if len(set(map(str, column))) > 1 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in column):
            numeric.append(key)
    return numeric


def write_report(report: SweepReport, out_dir: Path) -> List[Path]:
    """Writes ranking.csv/.html, trials.csv and the plots; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ranking = report.ranked.copy()
    ranking.to_csv(out_dir / "ranking.csv")
    report.trials.to_csv(out_dir / "trials.csv", index=False)
    html = (
        f"<h2>Sweep {report.sweep.name}</h2><p>Ranked by IQM over seeds of {report.by} "
        "(unshaped return), 95% stratified-bootstrap CIs.</p>"
        + summary_table(report).to_html(index=False)
        + "<h3>All aggregates</h3>" + ranking.to_html(float_format=lambda x: f"{x:.4g}")
    )
    (out_dir / "ranking.html").write_text(html)
    return [out_dir / "ranking.csv", out_dir / "ranking.html", out_dir / "trials.csv", *write_plots(report, out_dir)]


def log_report(client: Any, report: SweepReport, out_dir: Path) -> None:
    """Logs the report files and the aggregates of the best configuration to the parent run."""
    from mlflow.entities import Metric

    client.log_artifacts(report.sweep.run_id, str(out_dir), REPORT_DIR)
    best_label, best = next(iter(report.ranked.iterrows()))
    now = int(time.time() * 1000)
    metrics = [Metric(f"best_config/{col}", float(val), now, 0) for col, val in best.items()
               if isinstance(val, (int, float, np.floating)) and math.isfinite(float(val))]
    client.log_batch(report.sweep.run_id, metrics=metrics[:1000])
    client.set_tag(report.sweep.run_id, "qeu.best_config", best_label)


def report_sweep_end(tracking_uri: str, parent_run_id: str) -> Optional[SweepReport]:
    """Called at the end of every sweep: the report, as artifacts of the parent run."""
    client = client_for(tracking_uri)
    report = build_report(client, load_sweep(client, parent_run_id))
    with tempfile.TemporaryDirectory() as tmp:
        write_report(report, Path(tmp))
        log_report(client, report, Path(tmp))
    return report


# ----------------------------------------------------------------------- commands


def report_command(uri: str, ref: str, *, by: Optional[str] = None, baseline: Optional[str] = None,
                   threshold: Optional[float] = None, out: Optional[str] = None, log: bool = False) -> SweepReport:
    """``qeu-tune report SWEEP``: print the ranked table and write tables and plots.

    With ``log`` the files also replace the ``report/`` artifacts of the parent run (the
    sweep logs its default report there itself).
    """
    client = client_for(uri)
    report = build_report(client, load_sweep(client, ref), by=by, baseline=baseline, threshold=threshold)
    print_report(report)
    out_dir = Path(out or Path.cwd() / f"report-{report.sweep.name}").resolve()
    paths = write_report(report, out_dir)
    if log:
        try:
            log_report(client, report, out_dir)
        except Exception as err:  # noqa: BLE001 - the local files are the deliverable here
            print(f"(could not log the report to the parent run: {err})", file=sys.stderr)
    print(f"Wrote {len(paths)} files to {out_dir}")
    return report


@dataclass
class BestConfig:
    """The best configuration of a sweep and how to rerun it."""

    label: str
    sampled: Dict[str, Any]
    config: Dict[str, Any]  # the resolved config of one of its trials (seed removed)
    seeds: List[int]
    run_ids: List[str]
    row: Mapping[str, Any]

    def overrides(self) -> List[str]:
        """Hydra overrides that reproduce the configuration on top of the default config."""
        out = []
        for group in ("algo", "env", "reward"):
            out.append(f"{group}={self.config[group]['name']}")
        for key, value in self.sampled.items():
            if key in ("algo", "env", "reward", "seed"):
                continue
            text = json.dumps(value) if not isinstance(value, str) else value
            out.append(f"{key}={text}")
        out.append(f"stop.env_steps={self.config['stop']['env_steps']}")
        return out


def best_configuration(client: Any, report: SweepReport) -> BestConfig:
    label = str(report.ranked.index[0])
    trials = report.trials[report.trials["config"] == label]
    run_id = str(trials["run_id"].iloc[0])
    config = load_config_artifact(client, run_id)
    return BestConfig(label=label, sampled=report.values[label], config=config,
                      seeds=sorted(int(s) for s in trials["seed"].dropna()), run_ids=list(trials["run_id"]),
                      row=report.ranked.iloc[0].to_dict())


def best_configuration_row(report: SweepReport) -> Dict[str, Any]:
    """The sweep's winner by the one ranking rule (IQM over seeds of ``report.by``).

    Used by the end-of-sweep summary, the parent run's tags and ``qeu-tune best`` alike;
    ``run_id`` is the configuration's seed with the best value of the statistic.
    """
    label = str(report.ranked.index[0])
    row = report.ranked.iloc[0].to_dict()
    trials = report.trials[report.trials["config"] == label]
    ascending = not stats.STAT_DIRECTIONS.get(report.by, True)  # True: higher is better
    ordered = trials.sort_values(report.by, ascending=ascending, na_position="last") if report.by in trials else trials
    return {"label": label, "by": report.by, "value": row.get(f"{report.by}/{DEFAULT_AGG}"),
            "ci": _ci(row, report.by), "seeds": len(trials), "run_id": str(ordered["run_id"].iloc[0]),
            "run_ids": [str(r) for r in trials["run_id"]]}


def experiment_yaml(best: BestConfig, report: SweepReport) -> str:
    """A Hydra ``experiment/`` file that reruns the best configuration exactly."""
    config = best.config
    body = {
        "defaults": [{f"override /{g}": config[g]["name"]} for g in ("algo", "env", "reward")],
        "algo": config["algo"],
        "env": config["env"],
        "reward": config["reward"],
        "stop": config["stop"],
        "convergence": config.get("convergence", {}),
        "search": {"space": {}, "when": {}, "algorithm": "grid", "num_seeds": max(len(best.seeds), 1),
                   "seed": max(best.seeds, default=0) + 1},
        "sweep_name": f"best-{report.sweep.name}",
    }
    header = (
        "# @package _global_\n"
        f"# Best configuration of sweep {report.sweep.name} (parent run {report.sweep.run_id}),\n"
        f"# ranked by IQM over {len(best.seeds)} seeds of {report.by}: {_ci(best.row, report.by)}.\n"
        f"# Sampled values: {best.label}. Reruns on fresh seeds (after the tuning seeds {best.seeds}).\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False)


def best_command(uri: str, ref: str, *, by: Optional[str] = None, out: Optional[str] = None) -> BestConfig:
    """``qeu-tune best SWEEP``: print the winner's overrides and write an experiment file."""
    from qeu_tune.paths import CONF_DIR, user_config_dir

    client = client_for(uri)
    report = build_report(client, load_sweep(client, ref), by=by)
    best = best_configuration(client, report)
    name = "best_" + re.sub(r"[^A-Za-z0-9_]+", "_", report.sweep.name).strip("_")
    # Default: the user config directory (--config-dir, $QEU_TUNE_CONFIG_DIR or ./conf),
    # never the installed package's configs.
    path = Path(out) if out else _user_experiment_dir(CONF_DIR, user_config_dir) / f"{name}.yaml"
    if path.suffix != ".yaml":
        path = path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(experiment_yaml(best, report))
    print(f"Best configuration of {report.sweep.name}: {best.label}")
    print(f"  {report.by} IQM over {len(best.seeds)} seeds: {_ci(best.row, report.by)}")
    print(f"  overrides: {' '.join(best.overrides())}")
    print(f"  experiment file: {path}")
    group_dir = path.parent.resolve()
    if group_dir == (CONF_DIR / "experiment").resolve() or group_dir == (Path.cwd() / "conf" / "experiment").resolve():
        print(f"  rerun it: qeu-tune experiment={path.stem}")
    elif group_dir.name == "experiment":
        print(f"  rerun it: qeu-tune --config-dir {group_dir.parent} experiment={path.stem}")
    return best


def _user_experiment_dir(conf_dir: Path, user_config_dir: Any) -> Path:
    """``<user config dir>/experiment``, created; refuses the installed package's ``conf/``."""
    directory = user_config_dir(create=True)
    installed = any(part in ("site-packages", "dist-packages") for part in conf_dir.parts)
    if installed and directory.resolve() == conf_dir.resolve():
        raise ConfigError(
            f"qeu-tune best would write into the installed package ({conf_dir}); run it from "
            "another directory, or pass --config-dir DIR (or set QEU_TUNE_CONFIG_DIR)."
        )
    return directory / "experiment"


def fresh_seeds(used: Sequence[int], count: int) -> List[int]:
    """``count`` seeds after every tuning seed (Eimer et al. 2023: report on fresh seeds)."""
    start = max(used, default=-1) + 1
    return list(range(start, start + count))


def _apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> None:
    from qeu_tune.trial_config import set_dotted

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not set_dotted(config, key.strip(), yaml.safe_load(text)):
            raise ConfigError(f"rerun override {item!r} must be key=value with an existing dotted key.")


def _validated(config: Dict[str, Any]) -> Dict[str, Any]:
    """The config checked against the schema (a tampered or stale artifact fails here)."""
    from omegaconf import OmegaConf

    from qeu_tune.config.schema import ExperimentConfig

    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), config)
    except Exception as err:  # noqa: BLE001 - OmegaConf raises several error types
        raise ConfigError(f"the recorded config does not match the schema: {err}".replace("\n", " ")) from None
    return OmegaConf.to_container(merged, resolve=True)


def rerun_command(uri: str, ref: str, *, seeds: Optional[int] = None, by: Optional[str] = None,
                  overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """``qeu-tune rerun SWEEP_OR_RUN``: rerun on fresh seeds and compare with the original."""
    from qeu_tune.sweep import plan_sweep, run_sweep

    client = client_for(uri)
    run = find_run(client, ref)
    kind = run.data.tags.get(tracking.TAG_KIND)
    if kind == "trial":  # exact reproduction of one trial (same seed unless told otherwise)
        config = load_config_artifact(client, run.info.run_id)
        original_seed = int(config.get("seed") or 0)
        seed_list = [original_seed] if seeds is None else fresh_seeds([original_seed], seeds)
        source, label, original = run.info.run_id, run.data.tags.get(tracking.TAG_CONFIG_KEY, ""), None
    else:
        report = build_report(client, load_sweep(client, ref), by=by)
        best = best_configuration(client, report)
        config = best.config
        count = seeds or max(len(best.seeds), 1)
        seed_list = fresh_seeds(report.trials["seed"].dropna().astype(int).tolist(), count)
        source, label, original = report.sweep.run_id, best.label, (report, best)
    config = copy.deepcopy(config)
    config.pop("seed", None)
    config["search"].update({"space": {}, "when": {}, "algorithm": "grid", "num_samples": 1,
                             "num_seeds": len(seed_list), "seed": seed_list[0]})
    config["tracking"]["uri"] = uri
    config["sweep_name"] = f"rerun-{config.get('sweep_name', 'sweep')}"
    config.setdefault("tags", {}).update({"qeu.rerun_of": source, "qeu.rerun_config": label[:4000]})
    _apply_overrides(config, overrides)
    config = _validated(config)
    result = run_sweep(plan_sweep(config), command=f"qeu-tune rerun {ref}")
    if result.parent_run_id is None:
        raise ConfigError("the rerun could not be recorded in MLflow; see the warnings above.")
    rerun_report = build_report(client, load_sweep(client, result.parent_run_id), by=by)
    by_stat = rerun_report.by
    new = rerun_report.ranked.iloc[0]
    print(f"\nRerun of {label or source} on seeds {seed_list} (parent run {result.parent_run_id}):")
    print(f"  rerun    {by_stat} IQM [95% CI]: {_ci(new, by_stat)}  (n={int(new['n_seeds'])})")
    comparison = {"rerun_parent": result.parent_run_id, "seeds": seed_list, "rerun": new.to_dict()}
    if original is not None:
        old = original[1].row
        print(f"  original {by_stat} IQM [95% CI]: {_ci(old, by_stat)}  (n={len(original[1].seeds)}, tuning seeds)")
        held = old[f"{by_stat}/iqm_lo"] <= new[f"{by_stat}/iqm"] <= old[f"{by_stat}/iqm_hi"] or (
            new[f"{by_stat}/iqm_lo"] <= old[f"{by_stat}/iqm_hi"] and old[f"{by_stat}/iqm_lo"] <= new[f"{by_stat}/iqm_hi"]
        )
        verdict = "held: the CIs overlap" if held else "did NOT hold: the CIs do not overlap"
        print(f"  The tuning result {verdict}.")
        client.set_tag(result.parent_run_id, "qeu.rerun_held", str(bool(held)))
        comparison.update({"original": dict(old), "held": bool(held)})
    return comparison
