"""A study's comparison, read back from MLflow: per-seed test results, verdicts, report files.

``build_summary`` reads each design's test sweep (one trial per test seed, greedy evaluation)
and returns the study's ``summary.json`` as a plain dict; ``write_study_report`` writes it with
the verdict table (CSV, HTML), learning curves with CI bands and the performance profile;
``format_summary`` is the table ``qeu-tune study`` and ``qeu-tune report <study>`` print. No Ray.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from qeu_tune.analysis import verdict
from qeu_tune.analysis.runs import load_sweep, metric_history
from qeu_tune.analysis.tables import build_report
from qeu_tune.core import names, tags
from qeu_tune.core.errors import ConfigError

CURVE_POINTS = 50
Curves = Dict[str, List[Tuple[List[float], List[float]]]]  # design -> per seed (steps, values)


def held_out_results(
    client: Any, test_sweep: str, *, metric: str = names.EVAL_RETURN_ENV_MEAN
) -> Tuple[List[dict], list]:
    """Per test seed: ``{"seed", "final_return", "steps_to_threshold", "reached", "run_id"}``, and curves.

    The final return is the last point of ``metric`` (the last greedy evaluation); steps to
    threshold come from the same curve (``docs/statistics.md``), ``None`` when not reached.
    """
    report = build_report(client, load_sweep(client, test_sweep), metric=metric)
    rows, curves = [], []
    for trial in report.trials.sort_values("seed").itertuples():
        steps, values = metric_history(client, trial.run_id, metric)
        if not values:
            continue
        reached = bool(trial.reached)
        rows.append(
            {
                "seed": int(trial.seed),
                "final_return": float(values[-1]),
                "steps_to_threshold": float(trial.steps_to_threshold) if reached else None,
                "reached": reached,
                "run_id": str(trial.run_id),
            }
        )
        curves.append((steps, values))
    return rows, curves


def build_summary(
    client: Any,
    *,
    study: str,
    baseline: str,
    designs: Mapping[str, Mapping[str, Any]],
    budget_steps: float,
    min_effect: float,
    confidence: float = 0.95,
    reps: int = 2000,
) -> Tuple[Dict[str, Any], Curves]:
    """The study's ``summary.json`` and each design's test curves.

    Args:
        designs: ``{name: {"overrides", "config", "tune_seeds", "test_seeds", "tune_sweep",
            "test_sweep"}}`` (sweep parent run ids; ``config`` the tuned configuration).
        budget_steps: The training budget, where steps to threshold are censored.
    """
    results, tests, curves = {}, {}, {}
    for name, info in designs.items():
        rows, design_curves = held_out_results(client, info["test_sweep"])
        if len(rows) < 2:
            raise ConfigError(f"design {name}: {len(rows)} test seeds have results; a comparison needs at least 2.")
        budget = max([budget_steps, *(max(s) for s, _ in design_curves if s)])
        results[name] = verdict.DesignResult(
            name=name,
            final_return=np.array([r["final_return"] for r in rows]),
            steps_to_threshold=np.array([r["steps_to_threshold"] for r in rows], dtype=object),
            budget_steps=budget,
        )
        tests[name], curves[name] = rows, design_curves
    table = verdict.study_table(
        list(results.values()), baseline=baseline, min_effect=min_effect, confidence=confidence, reps=reps
    )
    summary: Dict[str, Any] = {
        "study": study,
        "baseline": baseline,
        "min_effect": min_effect,
        "confidence": confidence,
        "designs": {},
    }
    for row in table:
        name = str(row["design"])
        info = designs[name]
        summary["designs"][name] = {
            "overrides": list(info["overrides"]),
            "config": info["config"],
            "tune_seeds": list(info["tune_seeds"]),
            "test_seeds": list(info["test_seeds"]),
            "tune_sweep": info["tune_sweep"],
            "test_sweep": info["test_sweep"],
            "test": [{k: r[k] for k in ("seed", "final_return", "steps_to_threshold", "reached")} for r in tests[name]],
            "iqm": row["final_return_iqm"],
            "ci": [row["final_return_lo"], row["final_return_hi"]],
            "reached_fraction": row["reached_fraction"],
            "steps_iqm": row["steps_iqm"],
            "steps_ci": [row["steps_lo"], row["steps_hi"]],
            "p_improvement": row["p_improvement"],
            "p_ci": None if row["p_improvement"] is None else [row["p_improvement_lo"], row["p_improvement_hi"]],
            "verdict": row["verdict"],
            "seeds_needed": row["seeds_needed"],
        }
    return _finite(summary), curves


def table_rows(summary: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """``summary.json`` back as the rows of ``verdict.study_table`` (for printing and CSV)."""
    rows = []
    for name, d in summary["designs"].items():
        p_ci = d.get("p_ci") or [None, None]
        rows.append(
            {
                "design": name,
                "n_seeds": len(d["test"]),
                "final_return_iqm": d["iqm"],
                "final_return_lo": d["ci"][0],
                "final_return_hi": d["ci"][1],
                "reached_fraction": d["reached_fraction"],
                "steps_iqm": d["steps_iqm"],
                "steps_lo": d["steps_ci"][0],
                "steps_hi": d["steps_ci"][1],
                "p_improvement": d["p_improvement"],
                "p_improvement_lo": p_ci[0],
                "p_improvement_hi": p_ci[1],
                "verdict": d["verdict"],
                "seeds_needed": d["seeds_needed"],
            }
        )
    return rows


def format_summary(summary: Mapping[str, Any]) -> str:
    """The verdict table with a heading that says what was compared and how."""
    designs = summary["designs"]
    first = next(iter(designs.values()))
    head = (
        f"Study {summary['study']}: {len(designs)} designs vs baseline {summary['baseline']}, each tuned on "
        f"seeds {_seeds(first['tune_seeds'])} and tested on seeds {_seeds(first['test_seeds'])}.\n"
        f"Final greedy return and steps to threshold (censored at the budget): IQM over test seeds, "
        f"{summary['confidence']:.0%} bootstrap CIs; P(impr.): probability that a seed of the design beats "
        f"one of the baseline; seeds needed: to detect a difference of {summary['min_effect']:g} at 80% power."
    )
    return head + "\n" + verdict.format_study_table(table_rows(summary))


def write_study_report(summary: Mapping[str, Any], curves: Curves, out_dir: Path) -> List[Path]:
    """Writes ``summary.json``, ``verdicts.csv``/``.html``, ``learning_curves.png`` and ``profile.png``."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "summary.json", out_dir / "verdicts.csv", out_dir / "verdicts.html"]
    paths[0].write_text(json.dumps(summary, indent=1) + "\n")
    table = pd.DataFrame(table_rows(summary))
    table.to_csv(paths[1], index=False)
    paths[2].write_text(
        f"<h2>Study {summary['study']}</h2><pre>{format_summary(summary)}</pre>"
        + table.to_html(index=False, float_format=lambda x: f"{x:.4g}")
    )
    return [*paths, *_plots(summary, curves, out_dir)]


def load_summary(client: Any, study_run_id: str) -> Dict[str, Any]:
    """A study run's ``summary.json`` (plain JSON; nothing is unpickled)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(study_run_id, tags.STUDY_SUMMARY_ARTIFACT, tmp)
        except Exception as err:  # noqa: BLE001 - MLflow's store raises many types for a missing file
            raise ConfigError(
                f"study run {study_run_id} has no {tags.STUDY_SUMMARY_ARTIFACT} ({err}); a study writes it when its "
                "test stage is done: finish an interrupted one with `qeu-tune resume`."
            ) from None
        return json.loads(Path(path).read_text())


def _plots(summary: Mapping[str, Any], curves: Curves, out_dir: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    top = max((max(s) for seeds in curves.values() for s, _ in seeds if s), default=1.0)
    grid = np.linspace(0.0, top, CURVE_POINTS)[1:]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, seeds in curves.items():
        band = verdict.learning_curve_band([s for s, _ in seeds], [v for _, v in seeds], grid, reps=500)
        ax.plot(band.x, band.center, label=name)
        ax.fill_between(band.x, band.lo, band.hi, alpha=0.2)
    ax.set(xlabel="env steps", ylabel="greedy return (IQM over test seeds, 95% CI)", title=f"Study {summary['study']}")
    ax.legend()
    fig.tight_layout()
    out.append(out_dir / "learning_curves.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    results = {
        name: verdict.DesignResult(
            name=name,
            final_return=np.array([t["final_return"] for t in d["test"]]),
            steps_to_threshold=np.full(len(d["test"]), np.nan),
            budget_steps=1.0,
        )
        for name, d in summary["designs"].items()
    }
    finals = np.concatenate([r.final_return for r in results.values()])
    taus = np.linspace(finals.min(), finals.max(), 60) if finals.max() > finals.min() else finals[:1]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, band in verdict.performance_profile(results, taus, reps=500).items():
        ax.step(band.x, band.center, where="post", label=name)
        ax.fill_between(band.x, band.lo, band.hi, step="post", alpha=0.2)
    ax.set(xlabel="final greedy return tau", ylabel="fraction of test seeds > tau", title="Performance profile")
    ax.legend()
    fig.tight_layout()
    out.append(out_dir / "profile.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    return out


def _seeds(seeds: Sequence[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _finite(data: Any) -> Any:
    """NaN/inf become None, numpy scalars plain numbers: valid JSON everywhere."""
    if isinstance(data, Mapping):
        return {str(k): _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    if isinstance(data, (np.integer,)):
        return int(data)
    if isinstance(data, (float, np.floating)):
        return float(data) if math.isfinite(float(data)) else None
    if isinstance(data, np.bool_):
        return bool(data)
    return data


def study_sweeps(client: Any, study_run: Any, stage: str) -> Dict[str, Any]:
    """The study's sweeps of one stage, newest per design: ``{design: run}``."""
    runs = client.search_runs(
        [study_run.info.experiment_id],
        filter_string=f"tags.`{tags.TAG_PARENT}` = '{study_run.info.run_id}' and tags.`{tags.TAG_STAGE}` = '{stage}'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    out: Dict[str, Any] = {}
    for run in runs:
        out.setdefault(run.data.tags.get(tags.TAG_DESIGN, ""), run)
    return out


def is_study(run: Any) -> bool:
    return run.data.tags.get(tags.TAG_KIND) == "study"
