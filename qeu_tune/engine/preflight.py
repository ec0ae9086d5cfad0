"""Checks of a sweep that need the engine: RLlib's own validation, every sampled value, the metric.

* ``checked_algo_config``: builds the RLlib ``AlgorithmConfig`` and runs RLlib's own
  ``validate()`` on it (cheap: no Ray cluster, no env, a few ms).
* ``check_search_values``: every value a search space can sample (choice values,
  interval bounds) is applied to a trial config and checked like a fixed value.
* ``check_search_metric``: ``search.metric`` is a name trials report to Tune.

Each raises ``ConfigError`` with one paragraph that names the bad value and the fix.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Sequence, Tuple

from qeu_tune.analysis.stats import STAT_DIRECTIONS
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.config.rules import check_numeric, dotted_items
from qeu_tune.config.trial import resolve_trial_config, set_dotted
from qeu_tune.core import names
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine import synthetic
from qeu_tune.engine.trainable import build_algo_config

# ----------------------------------------------------------------------------- RLlib


@contextlib.contextmanager
def _quiet_rllib() -> Iterator[None]:
    """RLlib logs "You are running PPO on the new API stack!" from validate(): not for us."""
    logger = logging.getLogger("ray.rllib")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def checked_algo_config(config: Mapping[str, Any]) -> Any:
    """The trial's RLlib ``AlgorithmConfig``, checked by our rules and RLlib's ``validate()``.

    ``validate()`` runs on the driver on a copy; it needs neither Ray nor the env (a few
    ms), so invalid combinations (``minibatch_size`` > ``train_batch_size_per_learner``,
    negative ``entropy_coeff``, ...) fail here instead of in every trial.

    Returns:
        The built (unvalidated, unfrozen) ``AlgorithmConfig``; for ``algo=synthetic`` the
        checked ``qeu_tune.engine.synthetic.CurveModel`` instead (no RLlib).

    Raises:
        ConfigError: Unknown hyperparameter, a value out of range, or RLlib's objection.
    """

    algo = config["algo"]
    name = algo.get("name")
    for key, value in dotted_items({"algo": algo}):
        if not key.startswith("algo.smoke_params"):
            check_numeric(key, value)
    if name == synthetic.NAME:  # a learning-curve model: its own checks, no RLlib (has .gamma too)
        return synthetic.checked_config(config)
    with _quiet_rllib():
        try:
            algo_config = build_algo_config(config)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"algo={name}: RLlib rejects the config while building it: {_one_paragraph(err)} "
                "Fix the algo.* value named above (see `qeu-tune --cfg job`)."
            ) from None
        try:
            copy.deepcopy(algo_config).validate()
        except Exception as err:  # noqa: BLE001 - RLlib raises ValueError, sometimes others
            kind = "" if isinstance(err, ValueError) else f"{type(err).__name__}: "
            raise ConfigError(
                f"algo={name}: RLlib's {type(algo_config).__name__}.validate() rejects the "
                f"config: {kind}{_one_paragraph(err)} Fix the algo.params values named above "
                "(current values: `qeu-tune --cfg job`)."
            ) from None
    return algo_config


def _one_paragraph(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("To suppress all validation errors")]
    text = " ".join(lines) or type(err).__name__
    return text if text.endswith((".", "!", "?")) else text + "."


# ----------------------------------------------------------------------------- search space


def _candidates(dim: Any, limit: int = 8) -> List[Any]:
    """Values a dimension can produce, cheaply: every choice (evenly thinned to ``limit``,
    first and last kept), an interval's bounds, a constant."""
    if dim.kind in ("choice", "const"):
        values = list(dim.values)
        if len(values) > limit:
            step = (len(values) - 1) / (limit - 1)
            values = [values[round(i * step)] for i in range(limit)]
        return values
    if dim.kind == "int":
        return [int(dim.low), int(dim.high)]
    return [dim.low, dim.high]


def _expression(search: Mapping[str, Any], dim: Any) -> str:
    if dim.condition is None:
        expr = (search.get("space") or {}).get(dim.key)
        return f"search.space {dim.key}: {expr}"
    for text, sub in (search.get("when") or {}).items():
        if dim.key in (sub or {}) and str(text).split("=", 1)[0].strip() == dim.condition[0]:
            return f"search.when '{text}' {dim.key}: {sub[dim.key]}"
    return f"search space {dim.key}"


def check_search_values(
    template: Any,
    dimensions: Sequence[Any],
    representatives: Sequence[Mapping[str, Any]],
    *,
    validate_config: Callable[[Mapping[str, Any]], None],
) -> None:
    """Checks every value the search space can sample, like a fixed config value.

    For each representative trial (one per combination of searched config-group options)
    and each dimension that applies to it, each candidate value (choices; interval bounds)
    is set in a copy of the trial's config and checked: ``NUMERIC_RULES``, then RLlib
    (``checked_algo_config``) for ``algo.*`` keys, or the whole trial
    (``validate_config``: env and reward design built once) for other keys.

    Raises:
        ConfigError: Prefixed with the dimension's expression and the bad sample.
    """

    for params in representatives:
        base, _ = resolve_trial_config(template, params)
        search = base["search"]
        for dim in dimensions:
            if dim.key in GROUP_NAMES:
                continue  # each option is a representative already
            if dim.condition is not None:
                cond_key, cond_value = dim.condition
                if cond_key in GROUP_NAMES and str(params.get(cond_key, _group_name(base, cond_key))) != str(
                    cond_value
                ):
                    continue
            for value in _candidates(dim):
                trial = copy.deepcopy(base)
                if dim.condition is not None and dim.condition[0] not in GROUP_NAMES:
                    set_dotted(trial, dim.condition[0], dim.condition[1])
                if not set_dotted(trial, dim.key, value):
                    continue  # the key does not exist in this trial (e.g. another reward)
                origin = f"sampled by {_expression(search, dim)}"
                try:
                    check_numeric(dim.key, value, origin=origin)
                    if dim.key.startswith("algo."):
                        checked_algo_config(trial)
                    else:
                        validate_config(trial)
                except ConfigError as err:
                    message = str(err)
                    if message.startswith(f"{dim.key}={value!r} ("):
                        raise  # the numeric rule already names the expression
                    raise ConfigError(f"{dim.key}={value!r} ({origin}): {message}") from None


def _group_name(config: Mapping[str, Any], group: str) -> Any:
    node = config.get(group)
    return node.get("name") if isinstance(node, Mapping) else None


# ----------------------------------------------------------------------------- metrics

# Besides qeu_tune.core.names: Tune's own bookkeeping keys, which every result has too.
_TUNE_KEYS = ("training_iteration", "time_total_s", "time_this_iter_s")


def reported_metrics(
    reward_configs: Iterable[Mapping[str, Any]], *, evaluation: bool = False
) -> Tuple[List[str], List[str]]:
    """The metric names a trial reports to Tune: ``(exact names, prefixes)``.

    Exact names: the per-iteration names of ``qeu_tune.core.names``, Tune's own keys and, for
    each reward design with metrics, ``return_shaped``, ``episode/len``,
    ``reward/env/sum``, ``reward/<metric>/sum``, ``rt/<metric>/{mean,min,max}``; with
    ``evaluation``, ``eval/`` names for the returns and the episode statistics.
    Prefixes: ``learner/`` (RLlib's learner statistics), ``rllib/`` (RLlib's raw keys) and
    ``task/`` (statistics the environment defines; ``eval/task/`` with evaluation).
    """

    exact = [
        value
        for key, value in vars(names).items()
        if key.isupper()
        and isinstance(value, str)
        and "/" in value
        and not value.endswith("/")
        and not value.startswith((names.EVAL_PREFIX, names.TASK_PREFIX))
    ]
    episode_stats = []
    for reward in reward_configs:
        metrics = (reward or {}).get("metrics") or {}
        if (reward or {}).get("mode", "none") == "none" or not metrics:
            continue
        episode_stats += ["return_shaped", "episode/len", "reward/env/sum"]
        for metric in metrics:
            episode_stats += [f"reward/{metric}/sum", f"rt/{metric}/mean", f"rt/{metric}/min", f"rt/{metric}/max"]
    exact += episode_stats
    prefixes = [names.LEARNER_PREFIX, names.RLLIB_PREFIX, names.TASK_PREFIX]
    if evaluation:
        exact += [
            value
            for key, value in vars(names).items()
            if key.startswith("EVAL_") and isinstance(value, str) and value != names.EVAL_PREFIX
        ]
        exact += [names.EVAL_PREFIX + k for k in episode_stats]
        prefixes.append(names.EVAL_PREFIX + names.TASK_PREFIX)
    exact += list(_TUNE_KEYS)
    return list(dict.fromkeys(exact)), prefixes


def check_search_metric(config: Mapping[str, Any], reward_configs: Iterable[Mapping[str, Any]]) -> None:
    """``search.metric`` must be a name every trial reports to Tune (its searcher,
    scheduler and the best-trial pick read it from each result), and
    ``convergence.metric`` one whose curve the tracker records.

    Raises:
        ConfigError: Unknown name, with the valid names.
    """
    rewards = list(reward_configs)
    _check_reported("search.metric", str(config["search"]["metric"]), config, rewards)
    conv = (config.get("convergence") or {}).get("metric")
    if conv is not None:
        _check_reported("convergence.metric", str(conv), config, rewards)


def _check_reported(key: str, metric: str, config: Mapping[str, Any], rewards: List[Mapping[str, Any]]) -> None:

    evaluation = int(((config.get("evaluation") or {}).get("interval")) or 0) > 0
    exact, prefixes = reported_metrics(rewards, evaluation=evaluation)
    if metric in exact or any(metric.startswith(p) and len(metric) > len(p) for p in prefixes):
        return
    designs = ", ".join(sorted({str((r or {}).get("name")) for r in rewards})) or "none"
    if metric.startswith(names.EVAL_PREFIX) and not evaluation:
        raise ConfigError(
            f"{key}={metric!r}: eval/* metrics come from greedy evaluation, which is off "
            "(evaluation.interval=0). Turn it on, e.g. evaluation.interval=5 "
            "evaluation.episodes=5 (every 5 training iterations), or use the training "
            "return, e.g. return_env/mean."
        )
    if metric.startswith(names.CONV_PREFIX):
        stat = metric[len(names.CONV_PREFIX) :]
        by = stat if stat in STAT_DIRECTIONS else f"<{'|'.join(STAT_DIRECTIONS)}>"
        raise ConfigError(
            f"{key}={metric!r}: conv/* statistics are computed by the tracker from "
            "each trial's curve and logged to MLflow, but not reported to Tune, so its "
            "searcher and scheduler cannot read them. Optimise a reported metric (e.g. "
            f"{key}=return_env/mean) and rank by the statistic afterwards with "
            f"`qeu-tune report SWEEP --by {by}`."
        )
    if metric.removeprefix(names.EVAL_PREFIX).startswith((names.RT_PREFIX, names.REWARD_PREFIX)):
        why = (
            f" Reward designs of this sweep: {designs}; rt/<metric>/... and "
            "reward/<metric>/sum exist only for the metrics of a design with mode additive or potential."
        )
    else:
        why = ""
    raise ConfigError(
        f"{key}={metric!r} is not a metric the trials report.{why} Valid: "
        f"{', '.join(exact)}, learner/<RLlib learner key> (e.g. learner/total_loss), "
        "rllib/<RLlib result key>, task/<statistic the environment reports> (e.g. "
        "task/route_adherence on Cliff Walking), with a reward design rt/<metric>/mean "
        "(/min, /max) and reward/<metric>/sum, and with evaluation.interval > 0 the same "
        f"under eval/; e.g. {key}=return_env/mean (the unshaped return). conv/* statistics "
        "are logged to MLflow only: rank by them with `qeu-tune report SWEEP --by <statistic>`."
    )
