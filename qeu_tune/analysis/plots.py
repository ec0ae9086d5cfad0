"""Report plots: learning curves with CI bands, weight vs performance, RT-metric trajectories."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from qeu_tune.analysis.convergence import settings_from_params
from qeu_tune.analysis.tables import SweepReport
from qeu_tune.core import names

GRID_POINTS = 60  # common env-step grid for curves with CI bands
# Curve plots of sweeps with more configurations than PLOT_ALL_UP_TO draw the best TOP_PLOTTED
# (and the baseline): a legend of hundreds of entries is unreadable, and drawing it took half
# of a 1,000-configuration report. Smaller sweeps keep every curve.
PLOT_ALL_UP_TO = 20
TOP_PLOTTED = 10


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


def plotted_configurations(report: SweepReport) -> Tuple[List[str], Dict[str, str], str]:
    """The configurations the curve plots draw (best first), their legend labels, and what
    the titles say about the selection ("" when every configuration is drawn)."""
    order = list(report.ranked.index)
    if len(order) <= PLOT_ALL_UP_TO:
        return order, {label: label for label in order}, ""
    shown = order[:TOP_PLOTTED]
    legend = {label: label for label in shown}
    note = f"best {TOP_PLOTTED} of {len(order)} configurations"
    if report.baseline is not None and report.baseline not in shown:
        shown.append(report.baseline)
        legend[report.baseline] = f"{report.baseline} (baseline)"
        note += " and the baseline"
    return shown, legend, note


def write_plots(report: SweepReport, out_dir: Path) -> List[Path]:
    """Learning curves with CI bands, weight vs performance, RT-metric trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    order, legend, selection = plotted_configurations(report)
    grid = _grid(report.curves)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label in order:
        mean, lo, hi = _band(_interp(report.curves[label], grid))
        (line,) = ax.plot(grid, mean, label=f"{legend[label]} (n={len(report.curves[label])})")
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2)
    threshold = settings_from_params(report.sweep.trials[0].params).threshold if report.sweep.trials else None
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label="threshold")
    ax.set(
        xlabel="environment steps",
        ylabel=f"{report.metric} (mean, 95% CI over seeds)",
        title=f"Learning curves: {report.sweep.name}" + (f" ({selection})" if selection else ""),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "learning_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    numeric = _numeric_sampled_keys(report.values)
    if numeric:
        key = next((k for k in numeric if k.endswith("weight")), numeric[0])
        # Performance, then each task statistic (e.g. the greedy route adherence) by weight.
        panels = [
            "final_mean",
            "steps_to_threshold",
            *sorted(c for c in report.trials.columns if c.startswith(names.TASK_PREFIX)),
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        for ax, stat in zip(axes[0], panels):
            xs = [report.values[c].get(key) for c in report.trials["config"]]
            ax.scatter(xs, report.trials[stat], alpha=0.6, label="trials")
            agg = [
                (report.values[c].get(key), r[f"{stat}/iqm"])
                for c, r in report.ranked.iterrows()
                if report.values[c].get(key) is not None
            ]
            agg.sort(key=lambda p: p[0])
            if agg:
                ax.plot([a for a, _ in agg], [b for _, b in agg], "o-", color="black", label="IQM over seeds")
            ax.set(xlabel=key, ylabel=stat)
            ax.legend(fontsize=8)
        fig.suptitle(f"{key} vs performance ({report.metric})")
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
                    (line,) = ax.plot(grid, mean, label=legend[label])
                    ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2)
            ax.set(xlabel="environment steps", ylabel=metric)
            if ax.get_legend_handles_labels()[0]:  # none of the configurations drawn has this metric
                ax.legend(fontsize=8)
        fig.suptitle(
            "RT-metric trajectories (episode mean; 95% CI over seeds)" + (f"\n{selection}" if selection else "")
        )
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
        if len(set(map(str, column))) > 1 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in column
        ):
            numeric.append(key)
    return numeric
