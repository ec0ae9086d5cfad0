"""A reward design's know-how, fitted and described, without training (``qeu-tune knowhow``).

For each metric, fitted from its source into a unit space (``kind: unit_space``) or a
reference set (``kind: reference``), ``summarize`` finds:

* ``n`` (know-how samples) and ``k`` (features after the feature map);
* for a unit space: mean ``D^2`` over the unit space itself (1 by construction with
  ``ddof=0``, ``(n-1)/n`` with ``ddof=1``);
* ``D`` (the metric's value) over the know-how samples and over the states a uniformly
  random policy visits in the same environment: a useful metric puts the random policy's
  states further away;
* warnings: a near-singular ``(Y1, Y2)`` covariance, constant features, too few samples,
  a metric that does not separate the random policy from the know-how.

``save_models`` writes the fitted unit space (or reference set) as JSON in the format of
``UnitSpace.save`` / ``ReferenceSet.to_dict``; with several metrics, one file per metric
(``PATH`` with ``.<metric>`` before the suffix).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from qeu_tune.core.errors import ConfigError
from qeu_tune.envs import make_base_env
from qeu_tune.reward.config import parse_reward_config
from qeu_tune.reward.design import fit_metric_parts

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
COND_WARN = 1e8  # condition number of the (Y1, Y2) covariance
CORR_WARN = 0.999  # |corr(Y1, Y2)| over the unit space
MIN_SAMPLES_WARN = 20
RANDOM_STEP_CAP = 10_000  # per episode, for environments without a time limit


@dataclass
class MetricSummary:
    """What ``qeu-tune knowhow`` found out about one metric."""

    name: str
    kind: str
    n: int
    k: int
    mean_d2: Optional[float]  # unit space only
    ddof: Optional[int]
    know_how_d: np.ndarray  # the metric's value on every know-how sample
    random_d: np.ndarray  # ... on every state of the random-policy rollouts
    patterns: np.ndarray
    model: Any
    warnings: List[str] = field(default_factory=list)
    saved: Optional[Path] = None

    def quantiles(self, values: np.ndarray) -> List[float]:
        return [float(q) for q in np.quantile(values, QUANTILES)] if values.size else []


def random_policy_states(env_cfg: Dict[str, Any], *, episodes: int, seed: int) -> np.ndarray:
    """Observations a uniformly random policy visits (episode ``i`` resets with ``seed + i``)."""

    env = make_base_env(env_cfg["id"], dict(env_cfg.get("env_config") or {}))
    rows = []
    try:
        env.action_space.seed(seed)
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            for _ in range(RANDOM_STEP_CAP):
                rows.append(np.asarray(obs, dtype=np.float64).reshape(-1))
                obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    break
    finally:
        env.close()
    return np.stack(rows)


def _warnings(summary: MetricSummary) -> List[str]:
    out = []
    patterns = summary.patterns
    scale = float(np.sqrt(np.mean(patterns**2))) or 1.0
    constant = np.flatnonzero(patterns.std(axis=0) <= 1e-12 * scale)
    if constant.size:
        shown = ", ".join(str(int(i)) for i in constant[:10]) + (" ..." if constant.size > 10 else "")
        out.append(
            f"{constant.size} of {summary.k} features are constant over the know-how "
            f"(indices {shown}); they carry no information about the state."
        )
    if summary.kind == "unit_space":
        V = np.asarray(summary.model.cov)
        cond = float(np.linalg.cond(V))
        corr = float(V[0, 1] / math.sqrt(V[0, 0] * V[1, 1]))
        if cond > COND_WARN or abs(corr) > CORR_WARN:
            out.append(
                f"near-singular (Y1, Y2) covariance: condition number {cond:.3g}, "
                f"corr(Y1, Y2) = {corr:+.4f}; distances are dominated by a tiny "
                "direction. Add varied know-how samples or change the feature map."
            )
    if summary.kind == "unit_space" and summary.n < MIN_SAMPLES_WARN:
        out.append(f"only {summary.n} know-how samples; the unit space's statistics are crude.")
    if summary.random_d.size and summary.know_how_d.size:
        if np.median(np.abs(summary.random_d)) <= np.median(np.abs(summary.know_how_d)):
            out.append(
                "the random policy's states are not further away than the know-how "
                "(median D not larger): the metric may not reward the expert's behaviour."
            )
    return out


def summarize(
    config: Dict[str, Any], *, metric: Optional[str] = None, episodes: int = 10, seed: int = 0
) -> List[MetricSummary]:
    """Fits and describes the metrics of a composed config's reward design.

    Raises:
        ConfigError: No metrics, an unknown metric name, or a source that cannot be fitted.
    """

    try:
        reward = parse_reward_config(config.get("reward"))
    except ValueError as err:
        raise ConfigError(f"reward={config.get('reward', {}).get('name')}: {err}") from None
    if not reward.metrics:
        raise ConfigError(
            f"reward={reward.name} has no metrics; pick a design with metrics, "
            "e.g. reward=cartpole_rt, or add one with +reward.metrics.NAME={...}."
        )
    names = list(reward.metrics)
    if metric is not None:
        if metric not in reward.metrics:
            raise ConfigError(f"metric={metric}: reward={reward.name} has the metrics {', '.join(names)}.")
        names = [metric]
    try:
        states = random_policy_states(config["env"], episodes=episodes, seed=seed)
    except Exception as err:  # noqa: BLE001 - user envs can raise anything
        raise ConfigError(
            f"env={config['env'].get('name')}: random-policy rollouts failed: {type(err).__name__}: {err}"
        ) from None
    out = []
    for name in names:
        spec = reward.metrics[name]
        try:
            feature_map, model, patterns = fit_metric_parts(spec)
            score = model.signed_distance if spec.signed else model.distance
            know_how_d = np.asarray(score(patterns), dtype=np.float64)
            random_d = np.asarray(score(feature_map.map_batch(states)), dtype=np.float64)
        except (ValueError, OSError, ImportError, TypeError) as err:
            raise ConfigError(f"reward.metrics.{name} ({spec.kind}, source {spec.source}): {err}") from None
        is_unit = spec.kind == "unit_space"
        summary = MetricSummary(
            name=name,
            kind=spec.kind,
            n=int(patterns.shape[0]),
            k=int(patterns.shape[1]),
            mean_d2=float(np.mean(model.distance(patterns, squared=True))) if is_unit else None,
            ddof=spec.ddof if is_unit else None,
            know_how_d=know_how_d,
            random_d=random_d,
            patterns=patterns,
            model=model,
        )
        summary.warnings = _warnings(summary)
        out.append(summary)
    return out


def save_models(summaries: Sequence[MetricSummary], path: Path) -> None:
    """Writes each fitted model as JSON (one file per metric when there are several)."""
    for summary in summaries:
        target = path if len(summaries) == 1 else path.with_name(f"{path.stem}.{summary.name}{path.suffix or '.json'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(summary.model, "save"):
            summary.model.save(target)
        else:
            target.write_text(json.dumps(summary.model.to_dict(), indent=1) + "\n")
        summary.saved = target
