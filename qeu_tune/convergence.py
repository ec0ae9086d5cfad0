"""A trial's convergence statistics from its recorded curves, with its config's settings.

One function serves both the live tracking callback (updated every iteration) and the
reports that recompute the statistics from MLflow's metric histories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from qeu_tune import names, stats

Curve = Tuple[Sequence[float], Sequence[float]]  # (env steps, values)


@dataclass(frozen=True)
class ConvergenceSettings:
    """Threshold and windows of the statistics (``docs/statistics.md``)."""

    threshold: Optional[float]
    budget: Optional[float]
    window: int = 5
    sustain: int = 3
    last_k: int = 5
    value_range: Optional[Tuple[float, float]] = None


def settings_from_config(config: Mapping[str, Any]) -> ConvergenceSettings:
    """Settings of a resolved trial config: ``env.return_threshold``, ``convergence.*``."""
    env = config.get("env", {})
    conv = config.get("convergence", {}) or {}
    value_range = env.get("return_range")
    return ConvergenceSettings(
        threshold=_float(env.get("return_threshold")),
        budget=_float(config.get("stop", {}).get("env_steps")),
        window=int(conv.get("window", 5)),
        sustain=int(conv.get("sustain", 3)),
        last_k=int(conv.get("last_k", 5)),
        value_range=tuple(value_range) if value_range else None,
    )


def settings_from_params(params: Mapping[str, str]) -> ConvergenceSettings:
    """The same settings from a child run's flattened MLflow params."""
    import json

    value_range = params.get("env.return_range")
    return ConvergenceSettings(
        threshold=_float(params.get("env.return_threshold")),
        budget=_float(params.get("stop.env_steps")),
        window=int(params.get("convergence.window", 5)),
        sustain=int(params.get("convergence.sustain", 3)),
        last_k=int(params.get("convergence.last_k", 5)),
        value_range=tuple(json.loads(value_range)) if value_range not in (None, "None") else None,
    )


def trial_statistics(
    returns: Curve, settings: ConvergenceSettings, rt_curves: Optional[Mapping[str, Curve]] = None
) -> Dict[str, float]:
    """Convergence statistics of the unshaped return, plus the trend of each RT metric.

    Returns:
        ``stats.CONVERGENCE_KEYS`` and ``rt_trend/<metric>`` (slope per 1e6 env steps),
        without the ``conv/`` prefix.
    """
    steps, values = returns
    out = stats.convergence_stats(
        steps, values, threshold=settings.threshold, window=settings.window, sustain=settings.sustain,
        last_k=settings.last_k, budget=settings.budget, value_range=settings.value_range,
    )
    for key, (rt_steps, rt_values) in (rt_curves or {}).items():
        metric = key[len(names.RT_PREFIX):].rsplit("/", 1)[0]
        out[f"rt_trend/{metric}"] = stats.metric_trend(rt_steps, rt_values)
    return out


def curves_from_history(history: Sequence[Mapping[str, float]]) -> Tuple[Curve, Dict[str, Curve]]:
    """The return curve and RT-metric curves of a trial's reported results.

    A restored trial replays steps; only the latest point per step counts, in order.
    """
    by_step: Dict[float, Mapping[str, float]] = {}
    for point in history:
        step = point.get(names.ENV_STEPS)
        if step is not None and not math.isnan(step):
            by_step[step] = point
    steps = sorted(by_step)
    returns = (steps, [by_step[s].get(names.RETURN_ENV_MEAN, math.nan) for s in steps])
    rt_keys = {k for p in by_step.values() for k in p if k.startswith(names.RT_PREFIX) and k.endswith("/mean")}
    rt = {k: (steps, [by_step[s].get(k, math.nan) for s in steps]) for k in sorted(rt_keys)}
    return returns, rt


def _float(value: Any) -> Optional[float]:
    if value in (None, "None", "null", ""):
        return None
    return float(value)
