"""The reward-design config: plain dataclasses, and the validation of plain dicts.

The dataclasses are Hydra's structured schema for the ``reward`` config group (see
``qeu_tune.config.schema``) and, through ``parse_reward_config``, the validator of the
plain dicts that reach Ray workers. A reward design is a set of named metrics, each a
distance of the agent's state from human know-how, fed back into the reward:

* ``mode: additive`` (QEU feedback): ``r' = r - sum_i w_i m_i(s')``; changes the task.
* ``mode: potential`` (Ng et al. 1999): ``r' = r + gamma Phi(s') - Phi(s)`` with
  ``Phi(s) = -sum_i w_i m_i(s)`` and ``Phi = 0`` at terminal states; keeps the optimal
  policies, so the weights only change how fast learning goes.
* ``mode: none``: the environment's own reward; ``metrics`` are not built.

Example (``conf/reward/cliff_signed.yaml``)::

    name: cliff_signed
    mode: additive
    metrics:
      route:
        kind: reference
        weight: 0.3
        source: {type: builtin, name: cliff_standard_route}
        feature: {type: callable, path: "qeu_tune.envs.cliff_walking:obs_to_xy"}
        signed: true
        side_points: {builtin: cliff}
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

# The valid choices are defined where they are implemented (numpy-only modules, cheap to
# import on the driver, and none of them imports qeu_tune.reward).
from qeu_tune.reward.sources import SOURCE_KEYS, SOURCE_TYPES
from qeu_tune.rt.features import FEATURE_KEYS, FEATURE_TYPES
from qeu_tune.rt.unit_space import RESIDUALS

MODES = ("none", "additive", "potential")
KINDS = ("unit_space", "reference")
BUILTIN_SIDE_POINTS = ("cliff",)


def normalize_typed_spec(spec: Any, valid_keys: Mapping[str, Any]) -> Any:
    """A ``{"type": ..., ...}`` spec without ``None`` values and without the fields that
    belong only to *other* types.

    This is what lets the command line switch a know-how source's (or a feature map's)
    type: ``reward.metrics.balance.source.type=file reward.metrics.balance.source.path=d.csv``
    merges into the design's ``{type: builtin, name: cartpole_balance, episodes: 10}``, and
    the builtin's ``name``/``episodes`` are dropped here. Keys that no type knows stay, so
    a misspelt key is still reported, with the type's valid keys, when the source loads.

    Example:
        >>> normalize_typed_spec({"type": "file", "path": "d.csv", "name": "cartpole_balance",
        ...                       "episodes": 10, "columns": None}, SOURCE_KEYS)
        {'type': 'file', 'path': 'd.csv'}
    """
    spec = _plain(spec)
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        spec = dataclasses.asdict(spec)
    if not isinstance(spec, Mapping):
        return spec
    kind = spec.get("type")
    own = set(valid_keys.get(kind, ())) if kind in valid_keys else None
    known = set().union(*valid_keys.values())
    out = {}
    for key, value in spec.items():
        if value is None:
            continue
        if own is not None and key != "type" and key in known and key not in own:
            continue  # a field of another type
        out[key] = value
    return out


def normalize_metric(metric: Mapping[str, Any], *, defaults: bool = False) -> Dict[str, Any]:
    """A metric config with its ``source`` and ``feature`` specs normalised.

    Args:
        metric: One entry of ``reward.metrics``.
        defaults: Fill in ``MetricConfig``'s defaults for missing fields (the composed
            config then shows every field, as MLflow params and in ``--cfg job``).
    """
    out = {**dataclasses.asdict(MetricConfig()), **metric} if defaults else dict(metric)
    if "source" in out:
        out["source"] = normalize_typed_spec(out["source"], SOURCE_KEYS)
    if "feature" in out:
        out["feature"] = normalize_typed_spec(out["feature"], FEATURE_KEYS)
    return out


@dataclass
class MetricConfig:
    """One metric: where its know-how comes from, how states become patterns, its weight.

    Attributes:
        kind: ``"unit_space"`` (RT distance D against a unit space) or ``"reference"``
            (QEU minRT: distance to the nearest point of a reference set).
        weight: Feedback weight ``w_i`` (the value users sweep); ``>= 0``.
        source: Know-how source, passed to ``qeu_tune.reward.sources.load_reference_data``;
            ``type`` is ``file``, ``policy``, ``list`` or ``builtin``.
        feature: Feature map spec, passed to ``qeu_tune.rt.make_feature_map``; applied to
            observations, to the source data and to side points alike.
        signed: ``reference`` kind only: signed minRT (needs ``side_points``).
        absolute: A label only, with no effect on the values: QEU's name for feedback
            with the unsigned distance ``|m|``, which every metric but a signed one
            already is (distances are ``>= 0``). Validated (a boolean, not with
            ``signed``) and kept so configs can say which QEU feedback they mean.
        residual: ``unit_space`` kind: ``"sqrt_ve"`` (textbook ``sqrt(V_e)``) or ``"mae"``
            (QEU newRT).
        ddof: Divisor offset of the unit space's ``(Y1, Y2)`` covariance (0 or 1).
        side_points: For ``signed``: ``{"negative": [[...]], "positive": [[...]]}`` in the
            source's coordinates, or ``{"builtin": "cliff"}``.
    """

    kind: str = "unit_space"
    weight: float = 0.0
    source: Dict[str, Any] = field(default_factory=dict)
    feature: Dict[str, Any] = field(default_factory=lambda: {"type": "identity"})
    signed: bool = False
    # Label only (see above): unsigned metrics are distances >= 0 already, and
    # signed + absolute is rejected, so nothing reads it after validation.
    absolute: bool = False
    residual: str = "sqrt_ve"
    ddof: int = 0
    side_points: Optional[Dict[str, Any]] = None


@dataclass
class RewardConfig:
    """A reward design: named metrics, their weights and how they enter the reward.

    Attributes:
        name: The design's name (the config file's name), recorded with every run.
        mode: ``"none"``, ``"additive"`` or ``"potential"`` (see the module doc).
        metrics: Metric name -> ``MetricConfig``. Names appear in logged keys
            (``rt/<name>/mean``), so they contain no ``/``.
        augment_observation: Append the metric values to the observation.
        gamma: Discount of the potential; ``None`` takes the algorithm's gamma, which
            potential-based shaping needs to keep optimal policies unchanged.
        step_info: Report every step's reward components and metric values in
            ``info`` (``reward/env``, ``reward/<m>``, ``rt/<m>``). ``false`` keeps only
            the per-episode statistics (``info["qeu_episode"]`` at episode ends, all that
            training logs) and saves RLlib's per-step handling of those entries.
    """

    name: str = "none"
    mode: str = "none"
    # Metric name -> MetricConfig fields. Typed ``Any`` for Hydra on purpose: OmegaConf
    # cannot add an entry to a ``Dict[str, <dataclass>]`` from the command line
    # (``+reward.metrics.extra={kind: unit_space, ...}``); every metric is validated
    # against ``MetricConfig`` by ``parse_reward_config`` (unknown keys listed with the
    # valid ones) and gets its defaults in ``qeu_tune.config.compose.to_plain``.
    metrics: Dict[str, Any] = field(default_factory=dict)
    augment_observation: bool = False
    gamma: Optional[float] = None
    step_info: bool = True


_REWARD_FIELDS = tuple(f.name for f in dataclasses.fields(RewardConfig))
_METRIC_FIELDS = tuple(f.name for f in dataclasses.fields(MetricConfig))


def parse_reward_config(d: Union[Mapping[str, Any], RewardConfig, None]) -> RewardConfig:
    """Validates a reward design given as a plain mapping and returns its dataclass.

    Args:
        d: A mapping with ``RewardConfig``'s fields (missing ones take their defaults),
            an OmegaConf ``DictConfig``, a ``RewardConfig`` (returned as it is: only this
            function makes them), or ``None`` (no reward design).

    Returns:
        The validated ``RewardConfig``; metrics are ``MetricConfig`` instances. Equal mappings
        give the same object (each distinct design is parsed once per process: a sweep
        validates, fits and builds environments from the same few designs many times), so
        treat it as read-only.

    Raises:
        ValueError: One paragraph naming the bad value and the valid choices.

    Example:
        >>> cfg = parse_reward_config({"mode": "additive", "metrics": {"route": {
        ...     "kind": "reference", "weight": 0.5, "absolute": True,
        ...     "source": {"type": "builtin", "name": "cliff_standard_route"}}}})
        >>> cfg.metrics["route"].weight
        0.5
    """
    if d is None:
        return RewardConfig()
    if isinstance(d, RewardConfig):
        return d
    d = _plain(d)
    try:
        key = json.dumps(d, sort_keys=True)
    except (TypeError, ValueError):  # not plain data: validate it (and report it) uncached
        return _parse(d)
    return _parse_cached(key)


@functools.lru_cache(maxsize=256)
def _parse_cached(key: str) -> RewardConfig:
    return _parse(json.loads(key))


def _parse(d: Any) -> RewardConfig:
    if not isinstance(d, Mapping):
        raise ValueError(
            f"reward must be a mapping with keys {', '.join(_REWARD_FIELDS)}; got "
            f"{type(d).__name__} {d!r}. Pick a design with reward=<name> (e.g. reward=none)."
        )
    _reject_unknown("reward", d, _REWARD_FIELDS)
    name = d.get("name", "none")
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward.name={name!r} must be a non-empty string (the design's file name).")
    mode = d.get("mode", "none")
    if mode not in MODES:
        raise ValueError(
            f"reward.mode={mode!r} is not a reward mode; valid choices: {', '.join(MODES)} "
            "(additive: r - sum w_i m_i(s'); potential: r + gamma Phi(s') - Phi(s))."
        )
    augment = _boolean("reward.augment_observation", d.get("augment_observation", False))
    step_info = _boolean("reward.step_info", d.get("step_info", True))
    gamma = d.get("gamma")
    if gamma is not None:
        gamma = _number("reward.gamma", gamma)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(
                f"reward.gamma={gamma} must lie in (0, 1], or be null to use the "
                "algorithm's gamma (what potential-based shaping needs)."
            )
    raw_metrics = d.get("metrics") or {}
    if not isinstance(raw_metrics, Mapping):
        raise ValueError(
            f"reward.metrics must map metric names to metric configs; got {type(raw_metrics).__name__} {raw_metrics!r}."
        )
    sourceless = [str(k) for k, v in raw_metrics.items() if isinstance(v, Mapping) and not v.get("source")]
    if sourceless:  # typically a misspelt metric name in an override, which added it
        others = [str(k) for k in raw_metrics if str(k) not in sourceless]
        name = sourceless[0]
        raise ValueError(
            f"reward.metrics.{name} has no know-how source. "
            + (f"This design's metrics are {', '.join(others)}: a misspelt name? " if others else "")
            + f"A metric added with overrides needs kind, weight, source and feature, e.g. "
            f"+reward.metrics.{name}={{kind: unit_space, weight: 0.1, source: {{type: file, "
            "path: demos.csv}, feature: {type: identity}}."
        )
    metrics = {_metric_name(key): _parse_metric(str(key), value) for key, value in raw_metrics.items()}
    if mode != "none" and not metrics:
        raise ValueError(
            f"reward.mode={mode!r} needs at least one metric under reward.metrics; for the "
            "environment's own reward use reward=none (mode: none)."
        )
    if mode == "none" and augment:
        raise ValueError(
            "reward.augment_observation=true needs metrics to append, but reward.mode is "
            "'none'. To observe metrics without feedback use mode: additive with weight 0."
        )
    return RewardConfig(
        name=name, mode=mode, metrics=metrics, augment_observation=augment, gamma=gamma, step_info=step_info
    )


def _plain(value: Any) -> Any:
    """OmegaConf containers become plain dicts and lists (omegaconf imported only then)."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def _reject_unknown(where: str, d: Mapping[str, Any], valid: tuple) -> None:
    unknown = sorted(str(k) for k in d if k not in valid)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}.")


def _metric_name(key: Any) -> str:
    if not isinstance(key, str) or not key or "/" in key:
        raise ValueError(
            f"reward.metrics key {key!r} is not a valid metric name: use a non-empty string "
            "without '/' (it becomes part of logged names such as rt/<name>/mean)."
        )
    return key


def _boolean(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}={value!r} must be true or false.")
    return value


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{where}={value!r} must be a finite number.")
    return float(value)


def _parse_metric(name: str, raw: Any) -> MetricConfig:
    where = f"reward.metrics.{name}"
    if isinstance(raw, MetricConfig):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{where} must be a mapping with keys {', '.join(_METRIC_FIELDS)}; got {type(raw).__name__} {raw!r}."
        )
    _reject_unknown(where, raw, _METRIC_FIELDS)
    m = MetricConfig(**normalize_metric(raw))
    if m.kind not in KINDS:
        raise ValueError(
            f"{where}.kind={m.kind!r} is not a metric kind; valid choices: {', '.join(KINDS)} "
            "(unit_space: RT distance D to a unit space; reference: QEU minRT to a reference set)."
        )
    m.weight = _number(f"{where}.weight", m.weight)
    if m.weight < 0:
        raise ValueError(
            f"{where}.weight={m.weight} is negative; weights are >= 0 (a metric is a distance "
            "from know-how and w > 0 penalises it; w = 0 only logs it). To flip a signed "
            "metric, swap its negative and positive side points."
        )
    if not isinstance(m.source, Mapping) or m.source.get("type") not in SOURCE_TYPES:
        got = m.source.get("type") if isinstance(m.source, Mapping) else m.source
        raise ValueError(
            f"{where}.source.type={got!r} is not a know-how source; valid choices: "
            f"{', '.join(SOURCE_TYPES)} (e.g. source: {{type: builtin, name: cliff_standard_route}})."
        )
    if not isinstance(m.feature, Mapping) or m.feature.get("type") not in FEATURE_TYPES:
        raise ValueError(
            f"{where}.feature={m.feature!r} needs a 'type', one of {', '.join(FEATURE_TYPES)}, "
            "e.g. feature: {type: identity}."
        )
    m.signed = _boolean(f"{where}.signed", m.signed)
    m.absolute = _boolean(f"{where}.absolute", m.absolute)
    if m.residual not in RESIDUALS:
        raise ValueError(
            f"{where}.residual={m.residual!r} is not a residual; valid choices: "
            f"{', '.join(RESIDUALS)} (sqrt_ve: textbook sqrt(V_e); mae: QEU newRT)."
        )
    if isinstance(m.ddof, bool) or m.ddof not in (0, 1):
        raise ValueError(
            f"{where}.ddof={m.ddof!r} must be 0 (unit space averages D^2 = 1) or 1 (divisor n-1: averages (n-1)/n)."
        )
    m.ddof = int(m.ddof)
    if m.signed and m.kind != "reference":
        raise ValueError(
            f"{where}.signed=true needs kind: reference (a signed minRT); a unit-space RT "
            "distance has no sides. Set kind: reference or signed: false."
        )
    if m.signed and m.absolute:
        raise ValueError(
            f"{where} sets both signed and absolute; |signed minRT| is the plain minRT, so "
            "set signed: false for absolute feedback, or absolute: false for signed feedback."
        )
    if m.signed and m.side_points is None:
        raise ValueError(
            f"{where}.signed=true needs side_points to tell the sides apart: "
            "{negative: [[...]], positive: [[...]]} in the source's coordinates, or "
            f"{{builtin: cliff}} (valid builtins: {', '.join(BUILTIN_SIDE_POINTS)})."
        )
    if m.side_points is not None:
        _check_side_points(where, m.side_points)
    return m


def _check_side_points(where: str, sides: Any) -> None:
    if not isinstance(sides, Mapping):
        raise ValueError(
            f"{where}.side_points={sides!r} must be a mapping: {{builtin: cliff}} or "
            "{negative: [[...]], positive: [[...]]}."
        )
    if "builtin" in sides:
        if set(sides) != {"builtin"} or sides["builtin"] not in BUILTIN_SIDE_POINTS:
            raise ValueError(
                f"{where}.side_points={dict(sides)!r}: builtin side points are "
                f"{', '.join(BUILTIN_SIDE_POINTS)}, given alone as {{builtin: <name>}}."
            )
        return
    if set(sides) != {"negative", "positive"}:
        raise ValueError(
            f"{where}.side_points has keys {sorted(sides)}; give exactly negative and positive "
            "(lists of points), or builtin."
        )
    for side in ("negative", "positive"):
        points = sides[side]
        if not isinstance(points, (list, tuple)) or not points:
            raise ValueError(
                f"{where}.side_points.{side}={points!r} must be a non-empty list of points, e.g. [[1, 3], [2, 3]]."
            )
