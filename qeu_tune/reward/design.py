"""Builds a trial's environment: the base env, its reward design's metrics, the wrapper.

``make_env`` is what RLlib's env runners call (through the trainable's env creator) and
what the driver calls once to validate a config before Ray starts, so every problem it
can find surfaces as one ``ValueError`` naming the bad value.

Each metric is fitted once per process: know-how sources can be costly (rollouts of an
expert policy), and an env runner builds several environments. The cache holds only the
fitted parts (feature map and RT model), keyed by a hash of the metric's config without
its ``weight`` and ``absolute`` label, which do not change them, so a weight sweep reuses
one fit; every ``build_metric`` call wraps them in a fresh ``FittedMetric`` with its own
name.

A sweep fits each metric once, on the driver (``plan_sweep`` builds every reward design
to validate it), and ships the fitted parts to its trials: ``fitted_metrics`` exports
them from the driver's cache, ``install_fitted`` puts them into a trial's (and a remote
env runner's) cache, so no trial or env runner fits them again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

import gymnasium as gym
import numpy as np

from qeu_tune.envs import make_base_env
from qeu_tune.envs.cliff_grid import cliff_side_points
from qeu_tune.envs.task_stats import with_task_statistics
from qeu_tune.reward.config import MetricConfig, RewardConfig, parse_reward_config
from qeu_tune.reward.sources import load_reference_data
from qeu_tune.reward.wrapper import RewardDesignWrapper
from qeu_tune.rt import ReferenceSet, UnitSpace, make_feature_map

__all__ = ["FittedMetric", "build_metric", "clear_metric_cache", "fitted_metrics", "install_fitted", "make_env"]

# Config hash -> (feature map, fitted model); both are read-only once built.
_CACHE: Dict[str, Tuple[Any, Any]] = {}


class FittedMetric:
    """One metric ready for use: observation -> feature map -> RT model -> float.

    Args:
        name: The metric's name in the reward design.
        feature_map: The ``qeu_tune.rt`` feature map applied to each observation.
        model: A fitted ``UnitSpace`` or ``ReferenceSet``.
        signed: Use the reference set's signed distance (otherwise the distance, >= 0).
    """

    __slots__ = ("name", "feature_map", "model", "signed", "_score")

    def __init__(self, name: str, feature_map: Any, model: Any, *, signed: bool) -> None:
        self.name = name
        self.feature_map = feature_map
        self.model = model
        self.signed = signed
        # Resolved once: the per-step call is two bound-method calls and a float().
        self._score: Callable[[Any], Any] = model.signed_distance if signed else model.distance

    def __call__(self, obs: Any) -> float:
        """The metric value of one observation."""
        return float(self._score(self.feature_map(obs)))

    @property
    def bounds(self) -> Tuple[float, float]:
        """The range of values: ``(-inf, inf)`` if signed, else ``(0, inf)`` (a distance)."""
        return (-math.inf, math.inf) if self.signed else (0.0, math.inf)


def _cache_key(metric: MetricConfig) -> str:
    fields = dataclasses.asdict(metric)
    fields.pop("weight")
    fields.pop("absolute")  # a label: the fitted parts are the same either way
    text = json.dumps(fields, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def clear_metric_cache() -> None:
    """Forgets every fitted metric of this process (know-how files that changed; tests)."""
    _CACHE.clear()


def fitted_metrics(rewards: Iterable[Union[Mapping[str, Any], RewardConfig, None]]) -> Dict[str, Tuple[Any, Any]]:
    """The fitted parts of every metric of these reward designs, keyed as in the cache.

    Metrics not fitted yet in this process are fitted now (on the driver, ``plan_sweep``
    has already fitted them while validating). The result is plain picklable data for
    ``install_fitted`` in another process.

    Raises:
        ValueError: A metric cannot be fitted (as ``build_metric``).
    """
    out: Dict[str, Tuple[Any, Any]] = {}
    for reward in rewards:
        cfg = parse_reward_config(reward)
        if cfg.mode == "none":
            continue
        for name, metric in cfg.metrics.items():
            build_metric(name, metric)  # fits into the cache when missing
            key = _cache_key(metric)
            out[key] = _CACHE[key]
    return out


def install_fitted(fitted: Optional[Mapping[str, Tuple[Any, Any]]]) -> None:
    """Adds fitted metric parts (from ``fitted_metrics``) to this process's cache."""
    for key, parts in (fitted or {}).items():
        _CACHE.setdefault(key, tuple(parts))


def build_metric(name: str, metric: Union[MetricConfig, Mapping[str, Any]]) -> FittedMetric:
    """Fits one metric from its config, or returns the process's cached fit.

    The source data (and the side points of a signed metric) go through the metric's
    feature map, then a ``UnitSpace`` is fitted (``unit_space`` kind) or a
    ``ReferenceSet`` built (``reference`` kind).

    Args:
        name: The metric's name (for messages).
        metric: Its config (a ``MetricConfig`` or a plain mapping, validated here).

    Returns:
        A new ``FittedMetric`` named ``name``, a callable observation -> float; its
        feature map and model may be shared with other calls' metrics (the cache).

    Raises:
        ValueError: The source cannot be loaded or the model cannot be fitted; the
            message starts with ``reward.metrics.<name>``.
    """
    if not isinstance(metric, MetricConfig):
        metric = parse_reward_config({"mode": "additive", "metrics": {name: metric}}).metrics[name]
    key = _cache_key(metric)
    fitted = _CACHE.get(key)
    if fitted is None:
        try:
            fitted = _fit(metric)
        except ValueError as err:
            raise ValueError(f"reward.metrics.{name} ({metric.kind}, source {metric.source}): {err}") from None
        except (OSError, ImportError, AttributeError, KeyError, TypeError) as err:
            raise ValueError(
                f"reward.metrics.{name} ({metric.kind}, source {metric.source}): building the "
                f"metric failed with {type(err).__name__}: {err}"
            ) from None
        _CACHE[key] = fitted
    feature_map, model = fitted
    return FittedMetric(name, feature_map, model, signed=metric.signed)


def _fit(metric: MetricConfig) -> Tuple[Any, Any]:
    """The metric's feature map and fitted RT model (the expensive, cacheable parts)."""
    feature_map, model, _ = fit_metric_parts(metric)
    return feature_map, model


def fit_metric_parts(metric: MetricConfig) -> Tuple[Any, Any, np.ndarray]:
    """Feature map, fitted model and the know-how patterns it was fitted on (uncached).

    ``qeu-tune knowhow`` uses the patterns to describe the unit space / reference set.
    """
    # Imported here: the numpy-only RT code and know-how loaders are needed only when a
    # reward design is active.

    feature_map = make_feature_map(dict(metric.feature))
    patterns = feature_map.map_batch(np.asarray(load_reference_data(dict(metric.source))))
    if metric.kind == "unit_space":
        model: Any = UnitSpace.fit(patterns, ddof=metric.ddof, residual=metric.residual)
    else:
        negative = positive = None
        if metric.side_points is not None:
            if metric.side_points.get("builtin") == "cliff":
                negative, positive = cliff_side_points()
            else:
                negative, positive = metric.side_points["negative"], metric.side_points["positive"]
            negative = feature_map.map_batch(np.asarray(negative, dtype=np.float64))
            positive = feature_map.map_batch(np.asarray(positive, dtype=np.float64))
        model = ReferenceSet(patterns, negative_side=negative, positive_side=positive)
    return feature_map, model, patterns


def _check_metric_accepts(metric: FittedMetric, metric_cfg: MetricConfig, space: gym.Space) -> None:
    """Evaluates the metric on one observation of ``space``: a mismatch fails here, clearly."""
    probe = copy.deepcopy(space)
    probe.seed(0)  # a private copy: the env's own spaces and RNG are left untouched
    try:
        metric(probe.sample())
    except Exception as err:  # noqa: BLE001 - any failure here is a config mismatch
        raise ValueError(
            f"reward.metrics.{metric.name}: the feature map {dict(metric_cfg.feature)} and "
            f"{metric_cfg.kind} cannot score observations of the env's space {space}: "
            f"{type(err).__name__}: {err}. Pick a feature map that turns this env's "
            "observations into the same pattern as the know-how source's samples."
        ) from None


def make_env(
    env_id: str,
    env_config: Optional[Dict[str, Any]],
    reward: Union[Mapping[str, Any], RewardConfig, None],
    *,
    gamma: float,
) -> gym.Env:
    """Builds an environment with a reward design.

    Args:
        env_id: A Gymnasium id or ``module:Class`` (see ``qeu_tune.envs.make_base_env``).
        env_config: Keyword arguments for the environment.
        reward: The reward design (a plain mapping, ``RewardConfig`` or ``None``). Mode
            ``none`` (or ``None``) returns the base environment without a design.
        gamma: The algorithm's discount; used by ``potential`` mode unless the design
            sets its own ``gamma``.

    Returns:
        The environment, wrapped in ``RewardDesignWrapper`` when a design is active, and
        in ``TaskStatisticsWrapper`` when the base env reports task statistics
        (``qeu_tune.envs.task_stats``).

    Raises:
        ValueError: A bad reward config, env id or env_config, a know-how source that
            cannot be loaded, or a feature map that does not fit the observations.

    Example:
        >>> env = make_env("QEUCliffWalking-v0", {"obs": "xy"}, {"mode": "additive",
        ...     "metrics": {"route": {"kind": "reference", "weight": 0.5,
        ...         "source": {"type": "builtin", "name": "cliff_standard_route"},
        ...         "feature": {"type": "callable",
        ...                     "path": "qeu_tune.envs.cliff_walking:obs_to_xy"}}}},
        ...     gamma=0.99)
    """
    cfg = parse_reward_config(reward)
    env = with_task_statistics(make_base_env(env_id, env_config))
    if cfg.mode == "none":
        return env
    try:
        metrics = {name: build_metric(name, m) for name, m in cfg.metrics.items()}
        for name, metric in metrics.items():
            _check_metric_accepts(metric, cfg.metrics[name], env.observation_space)
        shaping_gamma = cfg.gamma if cfg.gamma is not None else float(gamma)
        return RewardDesignWrapper(
            env,
            metrics,
            {name: m.weight for name, m in cfg.metrics.items()},
            mode=cfg.mode,
            gamma=shaping_gamma,
            augment_observation=cfg.augment_observation,
            step_info=cfg.step_info,
            metric_bounds={name: metric.bounds for name, metric in metrics.items()},
        )
    except BaseException:
        env.close()
        raise
