"""The search-space grammar and its one conversion into Ray Tune objects.

A search space is a mapping from a dotted config key to an expression in Hydra's sweep
grammar (https://hydra.cc/docs/advanced/override_grammar/extended/):

================================  =============================================
``choice(a, b, c)``               one of the listed values (any YAML value)
``range(start, stop[, step])``    ``start, start+step, ...`` excluding ``stop``
``interval(lo, hi)``              a float uniformly in [lo, hi]
``int(interval(lo, hi))``         an integer uniformly in [lo, hi]
``tag(log, interval(lo, hi))``    log-uniform (also with ``int(...)``)
a plain value                     a constant set on every trial
================================  =============================================

Keys name any config value (``algo.params.lr``, ``reward.metrics.route.weight``,
``env.env_config.max_falls``) or a whole config group (``algo``, ``env``, ``reward``),
whose choices are option names such as ``choice(ppo, dqn)``. ``when`` holds conditional
dimensions: ``{"algo=ppo": {"algo.params.clip_param": "interval(0.1, 0.3)"}}`` is sampled
only for trials whose ``algo`` is ``ppo``. Seeds are a dimension of their own: every
configuration runs ``num_seeds`` times, with seeds ``seed, seed+1, ...``.

``build_tune_search`` is the one place the spec becomes Tune's param_space, search
algorithm and scheduler.

The module stays whole: the grammar and its one conversion into Tune change together (a
new expression means a new Tune domain), and half of its length is this documentation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ray.tune.search import Repeater

from qeu_tune.config.trial import SEED_KEY, TRIAL_INDEX_KEY, seeds
from qeu_tune.core import names
from qeu_tune.core.errors import ConfigError

SEARCH_ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")


@dataclass(frozen=True)
class Dimension:
    """One searched (or constant) config key.

    Attributes:
        key: Dotted config key, e.g. ``algo.params.lr``.
        kind: ``choice``, ``int``, ``float`` or ``const``.
        values: The options of a ``choice`` (ranges are expanded to choices), or the
            single value of a ``const``.
        low, high: Bounds of ``int``/``float`` (inclusive).
        log: Sample on a log scale.
        condition: ``(key, value)`` that must hold for this dimension to apply.
    """

    key: str
    kind: str
    values: Tuple[Any, ...] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    condition: Optional[Tuple[str, Any]] = None

    @property
    def is_discrete(self) -> bool:
        return self.kind in ("choice", "const")


@dataclass
class TuneSearch:
    """What ``Tuner`` needs, built from the search spec."""

    param_space: Dict[str, Any]
    search_alg: Any  # a Tune SearchAlgorithm / Searcher, or None for grid and PBT
    scheduler: Any
    num_samples: int  # Tuner num_samples (already multiplied by seeds where needed)
    dimensions: List[Dimension]


# --------------------------------------------------------------------------- parsing


def _parse_expression(key: str, expression: Any) -> Dimension:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    if not isinstance(expression, str):  # a YAML number, list or mapping: a constant
        return Dimension(key=key, kind="const", values=(expression,))
    try:
        value = OverridesParser.create().parse_override(f"{key}={expression}").value()
    except HydraException as err:
        raise ConfigError(
            f"search space: cannot parse {key}: {expression!r} ({err}). Use Hydra's sweep "
            "grammar: choice(a, b), range(start, stop[, step]), interval(lo, hi), "
            "int(interval(lo, hi)), tag(log, interval(lo, hi)), or a plain value."
        ) from None
    if isinstance(value, ChoiceSweep):
        if not value.list:
            raise ConfigError(f"search space: {key}: choice() needs at least one value.")
        return Dimension(key=key, kind="choice", values=tuple(value.list))
    if isinstance(value, RangeSweep):
        values = _expand_range(key, value.start, value.stop, value.step)
        return Dimension(key=key, kind="choice", values=values)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if not low < high:
            raise ConfigError(f"search space: {key}: {expression!r} needs lo < hi, got lo={low}, hi={high}.")
        log = "log" in value.tags
        if log and low <= 0:
            raise ConfigError(
                f"search space: {key}: {expression!r} is log-scaled, so its bounds must be "
                f"> 0 (got lo={low}); drop tag(log, ...) or use a positive lower bound."
            )
        is_int = isinstance(low, int) and isinstance(high, int)
        return Dimension(key=key, kind="int" if is_int else "float", low=low, high=high, log=log)
    if hasattr(value, "is_sweep") or type(value).__name__ == "Glob":
        raise ConfigError(f"search space: {key}: {expression!r} is not supported here; use choice, range or interval.")
    return Dimension(key=key, kind="const", values=(value,))


def _expand_range(key: str, start: float, stop: float, step: float) -> Tuple[Any, ...]:
    if step == 0 or (stop - start) / step <= 0:
        raise ConfigError(
            f"search space: {key}: range({start}, {stop}, {step}) is empty; stop is "
            "exclusive and step must move from start towards stop."
        )
    count = math.ceil((stop - start) / step - 1e-9)
    if all(isinstance(v, int) for v in (start, stop, step)):
        return tuple(start + i * step for i in range(count))
    return tuple(round(start + i * step, 12) for i in range(count))


def _parse_condition(text: str) -> Tuple[str, Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "=" not in text:
        raise ConfigError(f"search.when: condition {text!r} must look like key=value, e.g. 'algo=ppo'.")
    key = text.split("=", 1)[0].strip()
    try:
        value = OverridesParser.create().parse_override(text).value()
    except Exception:  # noqa: BLE001 - any parse failure gets the same clear message
        raise ConfigError(f"search.when: cannot parse condition {text!r}; use key=value.") from None
    return key, value


def parse_space(space: Mapping[str, Any], when: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[Dimension]:
    """Parses a search spec into dimensions (unconditional first).

    Args:
        space: Dotted config key -> expression.
        when: ``"key=value"`` -> {dotted key: expression}, applied only when the
            condition holds. The condition key must be a choice dimension of ``space``.

    Returns:
        The dimensions, in a stable order.

    Example:
        >>> [d.kind for d in parse_space({"algo": "choice(ppo, dqn)", "algo.params.lr": "interval(1e-4, 1e-3)"})]
        ['choice', 'float']
    """
    dims = [_parse_expression(str(k), v) for k, v in space.items()]
    by_key = {d.key: d for d in dims}
    if SEED_KEY in by_key:
        raise ConfigError(
            "search space: 'seed' is set by search.num_seeds (and search.seed for the "
            "first one); remove it from search.space."
        )
    for condition_text, sub_space in (when or {}).items():
        cond_key, cond_value = _parse_condition(str(condition_text))
        parent = by_key.get(cond_key)
        if parent is None or parent.kind != "choice":
            raise ConfigError(
                f"search.when: condition {condition_text!r} refers to {cond_key!r}, which "
                "is not a choice(...) in search.space; conditions select between the "
                f"values of a choice dimension (choice keys: {_choice_keys(dims)})."
            )
        if cond_value not in parent.values:
            raise ConfigError(
                f"search.when: {condition_text!r}: {cond_value!r} is not one of "
                f"{cond_key}'s choices {list(parent.values)}."
            )
        for key, expression in (sub_space or {}).items():
            dim = _parse_expression(str(key), expression)
            dims.append(
                Dimension(
                    key=dim.key,
                    kind=dim.kind,
                    values=dim.values,
                    low=dim.low,
                    high=dim.high,
                    log=dim.log,
                    condition=(cond_key, cond_value),
                )
            )
    return dims


def _choice_keys(dims: Iterable[Dimension]) -> List[str]:
    return [d.key for d in dims if d.kind == "choice"]


# ------------------------------------------------------------- conversion into Tune


def _tune_domain(dim: Dimension) -> Any:
    from ray import tune

    if dim.kind == "const":
        return dim.values[0]
    if dim.kind == "choice":
        return tune.choice(list(dim.values))
    if dim.kind == "int":
        return (tune.lograndint if dim.log else tune.randint)(int(dim.low), int(dim.high) + 1)
    return (tune.loguniform if dim.log else tune.uniform)(dim.low, dim.high)


def grid_points(dims: Sequence[Dimension]) -> List[Dict[str, Any]]:
    """Every combination of discrete values, honouring conditions (grid search).

    Example:
        >>> grid_points(parse_space({"a": "choice(1, 2)"}, {"a=1": {"b": "choice(x, y)"}}))
        [{'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'}, {'a': 2}]
    """
    for dim in dims:
        if not dim.is_discrete:
            raise ConfigError(
                f"search space: {dim.key} is a continuous interval, but grid search needs "
                "discrete values. Use choice(...) or range(...), or sample it with "
                "search=random or search=optuna."
            )
    unconditional = [d for d in dims if d.condition is None]
    conditional = [d for d in dims if d.condition is not None]
    points = []
    for combo in itertools.product(*(d.values for d in unconditional)):
        base = {d.key: v for d, v in zip(unconditional, combo)}
        active = [d for d in conditional if base.get(d.condition[0]) == d.condition[1]]
        for extra in itertools.product(*(d.values for d in active)):
            points.append({**base, **{d.key: v for d, v in zip(active, extra)}})
    return points


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class OptunaSpace:
    """Optuna define-by-run space: conditional dimensions are suggested only when active.

    A class, not a closure, because Tune pickles the searcher with its experiment state.
    """

    def __init__(self, dims: Sequence[Dimension]) -> None:
        self.dims = list(dims)

    def __call__(self, trial: Any) -> Dict[str, Any]:
        chosen: Dict[str, Any] = {}
        constants: Dict[str, Any] = {}
        for dim in self.dims:
            if dim.condition is not None and chosen.get(dim.condition[0]) != dim.condition[1]:
                continue
            if dim.kind == "const":
                constants[dim.key] = chosen[dim.key] = dim.values[0]
            elif dim.kind == "choice":
                if all(_primitive(v) for v in dim.values):
                    chosen[dim.key] = trial.suggest_categorical(dim.key, list(dim.values))
                else:  # Optuna stores only primitives: suggest an index, return the value
                    index = trial.suggest_categorical(f"{dim.key}#index", list(range(len(dim.values))))
                    chosen[dim.key] = constants[dim.key] = dim.values[index]
            elif dim.kind == "int":
                chosen[dim.key] = trial.suggest_int(dim.key, int(dim.low), int(dim.high), log=dim.log)
            else:
                chosen[dim.key] = trial.suggest_float(dim.key, dim.low, dim.high, log=dim.log)
        return constants  # Tune adds the suggested values itself


def build_tune_search(
    *,
    space: Mapping[str, Any],
    when: Optional[Mapping[str, Mapping[str, Any]]] = None,
    algorithm: str,
    num_samples: int,
    num_seeds: int,
    first_seed: int,
    metric: str,
    mode: str,
    scheduler: str,
    searcher_seed: Optional[int] = None,
    scheduler_params: Optional[Mapping[str, Any]] = None,
    max_env_steps: Optional[int] = None,
) -> TuneSearch:
    """Converts a search spec into Tune's ``param_space``, search algorithm and scheduler.

    Args:
        space: Dotted config key -> expression (see the module docstring).
        when: Conditional dimensions, ``"key=value"`` -> {key: expression}.
        algorithm: ``grid`` (every combination), ``random`` (Optuna's RandomSampler) or
            ``optuna`` (TPE).
        num_samples: Configurations to sample (grid: ignored, it enumerates).
        num_seeds: Runs per configuration, with seeds ``first_seed + i``.
        first_seed: The first seed; also seeds the search algorithm unless ``searcher_seed``.
        searcher_seed: The search algorithm's own seed (independent searches on the same trial seeds).
        metric: Metric the searcher and scheduler optimise.
        mode: ``max`` or ``min``.
        scheduler: ``fifo``, ``asha`` or ``pbt``.
        scheduler_params: Keyword arguments for the scheduler's constructor.
        max_env_steps: The trial budget, used as ASHA's ``max_t``.

    Returns:
        A ``TuneSearch`` with everything ``Tuner`` needs.

    Example:
        >>> s = build_tune_search(space={"algo.params.lr": "choice(0.001, 0.01)"},
        ...     algorithm="grid", num_samples=1, num_seeds=2, first_seed=0,
        ...     metric="return_env/mean", mode="max", scheduler="fifo")
        >>> s.num_samples, s.param_space["seed"]
        (1, {'grid_search': [0, 1]})
    """
    if algorithm not in SEARCH_ALGORITHMS:
        raise ConfigError(f"search.algorithm={algorithm!r} is unknown; valid choices: {', '.join(SEARCH_ALGORITHMS)}.")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler={scheduler!r} is unknown; valid choices: {', '.join(SCHEDULERS)}.")
    if mode not in ("max", "min"):
        raise ConfigError(f"search.mode={mode!r} is unknown; valid choices: max, min.")
    if num_samples < 1:
        raise ConfigError(f"search.num_samples must be >= 1, got {num_samples}.")
    from ray import tune

    dims = parse_space(space, when)
    seed_list = seeds(first_seed, num_seeds)
    sched = _build_scheduler(scheduler, dict(scheduler_params or {}), dims, metric, mode, max_env_steps)

    if algorithm == "grid":
        points = grid_points(dims)
        has_conditions = any(d.condition for d in dims)
        if has_conditions:  # Tune cannot grid over conditional keys: enumerate points here
            param_space: Dict[str, Any] = {"_point": tune.grid_search(points)} if points else {}
        else:
            param_space = {d.key: tune.grid_search(list(d.values)) if d.kind == "choice" else d.values[0] for d in dims}
        param_space[SEED_KEY] = tune.grid_search(seed_list)
        return TuneSearch(param_space, None, sched, 1, dims)

    if scheduler == "pbt":
        # PBT needs Tune's own variant generator; it cannot follow conditional spaces.
        if any(d.condition for d in dims):
            raise ConfigError(
                "scheduler=pbt cannot follow conditional (search.when) dimensions; "
                "use scheduler=asha or fifo, or move the keys to search.space."
            )
        param_space = {d.key: _tune_domain(d) for d in dims}
        param_space[SEED_KEY] = tune.grid_search(seed_list)
        return TuneSearch(param_space, None, sched, num_samples, dims)

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler_seed = first_seed if searcher_seed is None else int(searcher_seed)
    sampler = (
        optuna.samplers.RandomSampler(seed=sampler_seed)
        if algorithm == "random"
        else optuna.samplers.TPESampler(seed=sampler_seed)
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(space=OptunaSpace(dims), metric=metric, mode=mode, sampler=sampler)
    # Each sampled configuration runs num_seeds times; the searcher sees their mean, so a
    # lucky seed does not steer the search.
    search_alg = SeededRepeater(searcher, repeat=num_seeds, first_seed=first_seed)
    if all(d.kind == "const" for d in dims):
        num_samples = 1  # nothing to sample: one configuration (on num_seeds seeds)
    return TuneSearch({}, search_alg, sched, num_samples * num_seeds, dims)


class SeededRepeater(Repeater):
    """Tune's ``Repeater`` that also writes each repeat's seed into the trial config."""

    def __init__(self, searcher: Any, *, repeat: int, first_seed: int) -> None:
        super().__init__(searcher, repeat=repeat, set_index=True)
        self.first_seed = first_seed

    def suggest(self, trial_id: str) -> Optional[Dict[str, Any]]:
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config[SEED_KEY] = self.first_seed + int(config.get(TRIAL_INDEX_KEY, 0))
        return config


def _build_scheduler(
    name: str,
    params: Dict[str, Any],
    dims: Sequence[Dimension],
    metric: str,
    mode: str,
    max_env_steps: Optional[int],
) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    try:
        if name == "fifo":
            return FIFOScheduler()
        if name == "asha":
            params.setdefault("max_t", max_env_steps or 100_000)
            if float(params.get("grace_period", 1)) > float(params["max_t"]):
                raise ConfigError(
                    f"scheduler.params.grace_period={params['grace_period']} env steps exceeds the budget "
                    f"stop.env_steps={params['max_t']}, so ASHA could never stop a trial early; lower it, "
                    f"e.g. scheduler.params.grace_period={max(1, int(params['max_t']) // 8)}, or use scheduler=fifo."
                )
            return ASHAScheduler(time_attr=names.ENV_STEPS, metric=metric, mode=mode, **params)
        mutations = {d.key: _tune_domain(d) for d in dims if d.kind != "const"}
        if not mutations:
            raise ConfigError(
                "scheduler=pbt mutates the search space, but search.space has no "
                "choice/interval dimension; add one (e.g. algo.params.lr) or use fifo/asha."
            )
        return PopulationBasedTraining(
            time_attr=names.ENV_STEPS, metric=metric, mode=mode, hyperparam_mutations=mutations, **params
        )
    except TypeError as err:
        raise ConfigError(
            f"scheduler={name}: bad parameter in scheduler.params {sorted(params)} ({err}); "
            "see the constructor of the Tune scheduler for valid arguments."
        ) from None
