"""Sweep statistics: one row per trial, configurations ranked with cross-seed CIs, the best one.

Everything is read back from MLflow (``qeu_tune.analysis.runs``); statistics come from
``qeu_tune.analysis.convergence`` / ``qeu_tune.analysis.stats`` so reports and live tracking agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import yaml

from qeu_tune.analysis import stats
from qeu_tune.analysis.convergence import settings_from_params, trial_statistics
from qeu_tune.analysis.runs import Curve, SweepRuns, TrialRun, load_config_artifact, metric_histories
from qeu_tune.config.trial import describe
from qeu_tune.core import names
from qeu_tune.core.errors import ConfigError

DEFAULT_BY = "final_mean"  # per trial; aggregated across seeds with the IQM
DEFAULT_AGG = "iqm"


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
    metric: str = names.RETURN_ENV_MEAN  # the curve the statistics come from


def _labels(keys: Sequence[str]) -> Dict[str, str]:
    """Short, unique labels for configurations (``lr=0.001,weight=0.3``)."""

    def label(key: str, full: bool) -> str:
        values = json.loads(key)
        if full:
            return ",".join(f"{k}={v}" for k, v in values.items()) or "base"
        return describe(values) or "base"

    short = {k: label(k, False) for k in keys}
    if len(set(short.values())) == len(short):
        return short
    return {k: label(k, True) for k in keys}


def build_report(
    client: Any,
    sweep: SweepRuns,
    *,
    by: Optional[str] = None,
    baseline: Optional[str] = None,
    threshold: Optional[float] = None,
    metric: Optional[str] = None,
    reps: int = 2000,
) -> SweepReport:
    """Statistics of every trial of a sweep and the ranked configurations.

    Args:
        client: An ``MlflowClient``.
        sweep: The sweep's runs.
        by: Per-trial statistic to rank by (default ``final_mean``); ranked by its IQM.
        baseline: Label or config key of the baseline for probability of improvement;
            default: the configuration without a reward design, if the sweep has one.
        threshold: Return threshold for ``steps_to_threshold``; default: each trial's
            ``env.return_threshold``.
        metric: The curve the statistics use (e.g. ``eval/return_env/mean``); default:
            each trial's ``convergence.metric``.
        reps: Bootstrap resamples.
    """
    by = by or DEFAULT_BY
    if by not in stats.STAT_DIRECTIONS:
        raise ConfigError(f"--by {by!r} is not a statistic; valid choices: {', '.join(stats.STAT_DIRECTIONS)}.")
    keys = sorted({t.config_key for t in sweep.trials})
    labels = _labels(keys)
    rows, curves, rt_curves = [], {}, {}
    failed = sum(t.status == "FAILED" for t in sweep.trials)
    settings = {t.run_id: _trial_settings(t, threshold, metric) for t in sweep.trials}
    curve_names = {trial_settings.metric for trial_settings in settings.values()}
    # Histories in bulk (``runs.metric_histories``): the curves first, then the RT-metric and
    # task histories of the trials that have one.
    histories = metric_histories(client, [(t.run_id, settings[t.run_id].metric) for t in sweep.trials])
    with_data = [t for t in sweep.trials if histories[(t.run_id, settings[t.run_id].metric)][0]]
    histories.update(
        metric_histories(client, [(t.run_id, k) for t in with_data for k in _side_keys(t, settings[t.run_id])])
    )
    for trial in with_data:
        trial_settings = settings[trial.run_id]
        steps, values = histories[(trial.run_id, trial_settings.metric)]
        rt = {k: histories[(trial.run_id, k)] for k in _rt_keys(trial)}
        summary = trial_statistics((steps, values), trial_settings, rt)
        summary.update(_final_task_statistics(trial, trial_settings, histories))
        label = labels[trial.config_key]
        rows.append(
            {
                "config": label,
                "config_key": trial.config_key,
                "seed": trial.seed,
                "run_id": trial.run_id,
                "status": trial.status,
                **summary,
            }
        )
        curves.setdefault(label, []).append((np.asarray(steps), np.asarray(values)))
        for key, (s, v) in rt.items():
            rt_curves.setdefault(label, {}).setdefault(key, []).append((np.asarray(s), np.asarray(v)))
    if not rows:
        raise ConfigError(
            f"sweep {sweep.run_id} has no trial with a recorded "
            f"{' or '.join(sorted(curve_names)) or names.RETURN_ENV_MEAN} history "
            f"({len(sweep.trials)} trial runs, {failed} failed); nothing to compare. An eval/ "
            "curve needs evaluation.interval > 0 in the sweep."
        )
    table = pd.DataFrame(rows)
    values = {labels[k]: json.loads(k) for k in keys}
    baseline_label = _pick_baseline(baseline, labels, values, sweep.trials)
    stat_cols = [c for c in stats.STAT_DIRECTIONS if c in table.columns]
    stat_cols += sorted(c for c in table.columns if c.startswith(names.TASK_PREFIX))
    ranked = stats.rank_configurations(
        table, by=by, agg=DEFAULT_AGG, stats=stat_cols, baseline=baseline_label, reps=reps
    )
    return SweepReport(
        sweep=sweep,
        trials=table,
        ranked=ranked,
        by=by,
        baseline=baseline_label,
        labels=labels,
        values=values,
        curves=curves,
        rt_curves=rt_curves,
        failed=failed,
        metric=" / ".join(sorted(curve_names)),
    )


def _trial_settings(trial: TrialRun, threshold: Optional[float], metric: Optional[str]) -> Any:
    settings = settings_from_params(trial.params)
    if threshold is not None:
        settings = dataclasses.replace(settings, threshold=float(threshold))
    if metric is not None:
        settings = dataclasses.replace(settings, metric=metric)
    return settings


def _rt_keys(trial: TrialRun) -> List[str]:
    return [k for k in trial.metrics if k.startswith(names.RT_PREFIX) and k.endswith("/mean")]


def _task_keys(trial: TrialRun, settings: Any) -> List[str]:
    """The task statistics of the curve's family: ``eval/task/*`` for an ``eval/`` curve, else ``task/*``."""
    family = names.EVAL_PREFIX if settings.metric.startswith(names.EVAL_PREFIX) else ""
    return [k for k in sorted(trial.metrics) if k.startswith(family + names.TASK_PREFIX)]


def _side_keys(trial: TrialRun, settings: Any) -> List[str]:
    return _rt_keys(trial) + _task_keys(trial, settings)


def _final_task_statistics(
    trial: TrialRun, settings: Any, histories: Mapping[Tuple[str, str], Curve]
) -> Dict[str, float]:
    """``task/<name>``: the mean of the last ``last_k`` points of each task statistic of the
    curve's family (``_task_keys``), e.g. the greedy policy's route adherence at the end of
    training."""
    family = names.EVAL_PREFIX if settings.metric.startswith(names.EVAL_PREFIX) else ""
    out = {}
    for key in _task_keys(trial, settings):
        _, values = histories[(trial.run_id, key)]
        tail = [v for v in values if math.isfinite(v)][-settings.last_k :]
        out[key[len(family) :]] = float(np.mean(tail)) if tail else float("nan")
    return out


def _pick_baseline(
    requested: Optional[str],
    labels: Mapping[str, str],
    values: Mapping[str, Dict[str, Any]],
    trials: Sequence[TrialRun],
) -> Optional[str]:
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


def _ci(row: Mapping[str, Any], stat: str, agg: str = DEFAULT_AGG, digits: int = 4) -> str:
    value, lo, hi = row.get(f"{stat}/{agg}"), row.get(f"{stat}/{agg}_lo"), row.get(f"{stat}/{agg}_hi")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{_num(value, digits)} [CI n/a]"  # one seed: no interval
    return f"{_num(value, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _num(value: float, digits: int = 4) -> str:
    """Compact numbers; large ones (env steps, returns) in full, never as 3e+04."""
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


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
        for col in row.index:  # task statistics, e.g. the greedy policy's route adherence
            if col.startswith(names.TASK_PREFIX) and col.endswith("/iqm"):
                out[f"{col[len(names.TASK_PREFIX) : -len('/iqm')]} IQM"] = _num(row[col])
        if report.baseline:
            out[f"P(>{report.baseline}) [CI]"] = (
                "baseline"
                if label == report.baseline
                else f"{row['poi']:.2f} [{row['poi_lo']:.2f}, {row['poi_hi']:.2f}]"
            )
        rows.append({k: v for k, v in out.items() if v != ""})
    return pd.DataFrame(rows)


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
    return BestConfig(
        label=label,
        sampled=report.values[label],
        config=config,
        seeds=sorted(int(s) for s in trials["seed"].dropna()),
        run_ids=list(trials["run_id"]),
        row=report.ranked.iloc[0].to_dict(),
    )


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
    return {
        "label": label,
        "by": report.by,
        "value": row.get(f"{report.by}/{DEFAULT_AGG}"),
        "ci": _ci(row, report.by),
        "seeds": len(trials),
        "run_id": str(ordered["run_id"].iloc[0]),
        "run_ids": [str(r) for r in trials["run_id"]],
    }


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
        "search": {
            "space": {},
            "when": {},
            "algorithm": "grid",
            "num_seeds": max(len(best.seeds), 1),
            "seed": max(best.seeds, default=0) + 1,
        },
        "sweep_name": f"best-{report.sweep.name}",
    }
    header = (
        "# @package _global_\n"
        f"# Best configuration of sweep {report.sweep.name} (parent run {report.sweep.run_id}),\n"
        f"# ranked by IQM over {len(best.seeds)} seeds of {report.by}: {_ci(best.row, report.by)}.\n"
        f"# Sampled values: {best.label}. Reruns on fresh seeds (after the tuning seeds {best.seeds}).\n"
    )
    return header + yaml.safe_dump(body, sort_keys=False)
