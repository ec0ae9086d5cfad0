"""A trial's convergence statistics from its recorded curves, with its config's settings.

One function serves both the live tracking callback (updated every iteration) and the
reports that recompute the statistics from MLflow's metric histories.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np
import yaml

from qeu_tune.analysis import stats
from qeu_tune.core import names

Curve = Tuple[Sequence[float], Sequence[float]]  # (env steps, values)
T = TypeVar("T")


@dataclass(frozen=True)
class ConvergenceSettings:
    """Curve, threshold and windows of the statistics (``docs/statistics.md``)."""

    threshold: Optional[float]
    budget: Optional[float]
    window: int = 5
    sustain: int = 3
    last_k: int = 5
    value_range: Optional[Tuple[float, float]] = None
    metric: str = names.RETURN_ENV_MEAN  # the curve: convergence.metric


def settings_from_config(config: Mapping[str, Any]) -> ConvergenceSettings:
    """Settings of a resolved trial config: ``env.return_threshold``, ``convergence.*``."""
    env, conv = config.get("env", {}), config.get("convergence", {}) or {}
    return _settings(lambda key: env.get(key), lambda key: conv.get(key), config.get("stop", {}).get("env_steps"))


def settings_from_params(params: Mapping[str, str]) -> ConvergenceSettings:
    """The same settings from a child run's flattened MLflow params (strings)."""

    def read(prefix: str) -> Any:
        return lambda key: _yaml_value(params.get(f"{prefix}.{key}"))

    return _settings(read("env"), read("convergence"), _yaml_value(params.get("stop.env_steps")))


def _settings(env: Any, conv: Any, budget: Any) -> ConvergenceSettings:
    defaults = ConvergenceSettings(threshold=None, budget=None)
    value_range = env("return_range")
    return ConvergenceSettings(
        threshold=_float(env("return_threshold")),
        budget=_float(budget),
        window=int(conv("window") or defaults.window),
        sustain=int(conv("sustain") or defaults.sustain),
        last_k=int(conv("last_k") or defaults.last_k),
        value_range=tuple(value_range) if value_range else None,
        metric=str(conv("metric") or defaults.metric),
    )


@functools.lru_cache(maxsize=1024)  # a sweep's trials repeat a few texts; YAML parsing them was ~3% of a report
def _yaml_value(text: Optional[str]) -> Any:
    """A flattened param back to its value (params hold str(value) or JSON for lists; the
    caller must not change a list it gets, the cache shares it)."""
    if text is None or text == "None":
        return None
    return yaml.safe_load(text)


# Theil-Sen compares every pair of points: thin long curves so a live update stays ~ms.
MAX_TREND_POINTS = 256


def trial_statistics(
    returns: Curve, settings: ConvergenceSettings, rt_curves: Optional[Mapping[str, Curve]] = None
) -> Dict[str, float]:
    """Convergence statistics of the unshaped return, plus the trend of each RT metric.

    Returns:
        ``stats.CONVERGENCE_KEYS`` and ``rt_trend/<metric>`` (slope per 1e6 env steps,
        over at most ``MAX_TREND_POINTS`` evenly spaced points), without the ``conv/``
        prefix.
    """
    steps, values = returns
    out = stats.convergence_stats(
        steps,
        values,
        threshold=settings.threshold,
        window=settings.window,
        sustain=settings.sustain,
        last_k=settings.last_k,
        budget=settings.budget,
        value_range=settings.value_range,
    )
    for key, (rt_steps, rt_values) in (rt_curves or {}).items():
        metric = key[len(names.RT_PREFIX) :].rsplit("/", 1)[0]
        keep = np.unique(np.linspace(0, len(rt_steps) - 1, MAX_TREND_POINTS).round().astype(int)) if rt_steps else []
        out[f"rt_trend/{metric}"] = stats.metric_trend(np.asarray(rt_steps)[keep], np.asarray(rt_values)[keep])
    return out


def latest_attempt(points: Sequence[Tuple[float, T]]) -> List[Tuple[float, T]]:
    """The points of a curve's latest attempt, given in the order they were reported.

    A trial restored from a checkpoint (retry, PBT) reports steps again from the
    checkpoint's step: a step at or below one already seen discards every earlier point
    from that step on, so the curve never mixes the failed attempt with the new one.
    """
    kept: List[Tuple[float, T]] = []
    for step, payload in points:
        while kept and kept[-1][0] >= step:
            kept.pop()
        kept.append((step, payload))
    return kept


def curves_from_history(
    history: Sequence[Mapping[str, float]], metric: str = names.RETURN_ENV_MEAN
) -> Tuple[Curve, Dict[str, Curve]]:
    """The ``metric`` curve (the return) and RT-metric curves of a trial's reported
    results (latest attempt). Points without ``metric`` (iterations between evaluations,
    for an ``eval/`` curve) are not on its curve."""
    points = latest_attempt(
        [(p[names.ENV_STEPS], p) for p in history if not math.isnan(p.get(names.ENV_STEPS, math.nan))]
    )
    steps = [s for s, _ in points]
    with_metric = [(s, p[metric]) for s, p in points if metric in p]
    returns = ([s for s, _ in with_metric], [v for _, v in with_metric])
    rt_keys = {k for _, p in points for k in p if k.startswith(names.RT_PREFIX) and k.endswith("/mean")}
    rt = {k: (steps, [p.get(k, math.nan) for _, p in points]) for k in sorted(rt_keys)}
    return returns, rt


def _float(value: Any) -> Optional[float]:
    if value in (None, "None", "null", ""):
        return None
    return float(value)
