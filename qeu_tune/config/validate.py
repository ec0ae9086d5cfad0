"""Checks that stop bad input before Ray starts or an MLflow run is opened.

Every check raises ``qeu_tune.config.errors.ConfigError`` with one paragraph that names
the bad value and the fix; ``qeu-tune`` prints it and exits with code 2. The catalogue of
bad inputs and their messages is ``docs/errors.md`` (the end-to-end test runs every row).

* ``check_hydra_overrides``: composes the command line's overrides once, before
  ``@hydra.main`` runs, so Hydra's own errors (unknown option, wrong type, unknown key)
  become one paragraph and exit code 2 instead of Hydra's exit 1 and its
  ``HYDRA_FULL_ERROR`` hint.
* ``check_config``: numeric sanity of the composed config (budgets, RLlib
  hyperparameters RLlib does not check itself), one table: ``NUMERIC_RULES``.
* ``checked_algo_config``: builds the RLlib ``AlgorithmConfig`` and runs RLlib's own
  ``validate()`` on it (cheap: no Ray, no env, a few ms).
* ``check_search_values``: every value a search space can sample (choice values,
  interval bounds) is applied to a trial config and checked like a fixed value.
* ``check_search_metric``: ``search.metric`` is a name trials report to Tune.
* ``check_tracking_uri``, ``check_storage_path``, ``check_ray_address``: the outside
  world, with short timeouts and without creating anything.

Importing this module is cheap (standard library only); heavy imports happen inside the
functions that need them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import math
import numbers
import os
import re
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from qeu_tune.config.errors import ConfigError

# Connecting to a tracking server, database or Ray cluster: refused at once, or unanswered
# for this long, means unreachable.
NETWORK_TIMEOUT_S = 2.0
OFFLINE_HINT = "or record the sweep offline with tracking.mode=offline and upload it later"

__all__ = [
    "NETWORK_TIMEOUT_S",
    "NUMERIC_RULES",
    "Rule",
    "check_config",
    "check_hydra_overrides",
    "check_numeric",
    "check_ray_address",
    "check_search_metric",
    "check_search_values",
    "check_storage_path",
    "check_tracking_uri",
    "checked_algo_config",
    "redact_uri",
    "reported_metrics",
]


# ----------------------------------------------------------------------------- Hydra


def check_hydra_overrides(argv: Sequence[str]) -> None:
    """Composes the command line's overrides as ``@hydra.main`` will, and reports errors.

    Runs before ``hydra.main`` so an unknown option (``algo=foo``), a wrong type
    (``stop.env_steps=abc``) or an unknown key (``algo.params.nonsense=3``) gives exit
    code 2 and Hydra's explanation in one paragraph, without a traceback or the
    ``HYDRA_FULL_ERROR`` hint. With ``-m`` every job of the multirun is composed. Only
    Hydra's and OmegaConf's own exceptions are reported; anything else (or a command line
    this check does not understand) is left to ``hydra.main``, which reports it as before.

    Args:
        argv: The arguments after the program name.

    Raises:
        ConfigError: Hydra could not compose a job's config.
    """
    skip_flags = {"-h", "--help", "--hydra-help", "--version", "-i", "--info", "-sc",
                  "--shell-completion", "-cp", "--config-path", "-cn", "--config-name",
                  "-cd", "--config-dir", "--experimental-rerun"}
    if any(arg.split("=", 1)[0] in skip_flags for arg in argv):
        return
    try:
        from hydra._internal.utils import get_args_parser  # what hydra.main parses with

        args = get_args_parser().parse_args(list(argv))
    except (Exception, SystemExit):  # noqa: BLE001 - hydra.main reports bad flags itself
        return
    overrides: List[str] = list(args.overrides or [])
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        jobs = _jobs(overrides, multirun=bool(args.multirun))
    except HydraException as err:
        raise ConfigError(_hydra_message(err)) from None
    except Exception:  # noqa: BLE001 - e.g. a sweeper plugin's own grammar: leave it to Hydra
        return
    from qeu_tune.config.compose import compose

    for job in jobs[:64]:  # a huge multirun: the first 64 jobs cover every option in practice
        try:
            compose(job)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(_hydra_message(err)) from None


def _jobs(overrides: List[str], *, multirun: bool) -> List[List[str]]:
    """The override list of each job: one job, or the multirun's cartesian product."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)  # syntax errors raise here
    multirun = multirun or any(o.key_or_group == "hydra.mode" and o.value() == "MULTIRUN" for o in parsed)
    if not multirun or not any(o.is_sweep_override() for o in parsed):
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _hydra_message(err: BaseException) -> str:
    """Hydra's explanation (and OmegaConf's cause) as one paragraph."""

    def lines_of(part: BaseException) -> List[str]:
        out = []
        for line in str(part).splitlines():
            text = line.strip()
            if text.startswith("Config search path:"):
                break  # Hydra's search-path dump: noise for a typo
            if text and not text.startswith(("provider=", "reference_type=", "object_type=")):
                out.append(text)
        return out

    lines = lines_of(err)
    heads = [i for i, line in enumerate(lines) if line.startswith("Available options in")]
    if heads:  # one option per line -> a list; the base_<group> schemas are not options
        i = heads[0]
        options = [o for o in lines[i + 1:] if not o.startswith("base_")]
        lines = lines[:i] + [f"{lines[i]} {', '.join(options)}."]
    if err.__cause__ is not None:
        lines += lines_of(err.__cause__)
    lines = [line if line.endswith((".", ":", "!", "?")) else line + "." for line in lines]
    text = " ".join(lines)
    text = re.sub(r"\s*full_key: (\S+?)\.?$", r" (key \1)", text)
    text = re.sub(r"\s*full_key: (\S+?)\.? ", r" (key \1) ", text)
    text = re.sub(r"See (https://hydra\.cc/\S+) for details\.", r"(Syntax: \1)", text)
    if "To append to your config use" in text:
        text += " The composed config's keys: `qeu-tune --cfg job`."
    return text


# ----------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Rule:
    """The valid range of one numeric config value.

    Attributes:
        low, high: Bounds (None: unbounded); ``low_open``/``high_open`` exclude them.
        integer: The value must be an integer.
        nullable: ``null`` is valid (means "no limit" or "use the default").
        schedule: A list of ``[timestep, value]`` pairs (RLlib schedules) is valid too.
        example: A valid setting, shown as the fix.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    nullable: bool = False
    schedule: bool = False
    example: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            where = f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            where = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            where = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            where = ""
        text = f"{kind} {where}".strip()
        return text + (" (or null)" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.schedule and isinstance(value, (list, tuple)):
            return bool(value) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and self.accepts(p[1]) for p in value
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_POS = dict(low=0, low_open=True)
_NONNEG = dict(low=0)
_UNIT = dict(low=0, high=1)

# Dotted config key -> valid range. Budgets and run settings, then RLlib hyperparameters
# that RLlib's AlgorithmConfig.validate() accepts out of range (checked on RLlib 2.60: it
# takes lr=-1, gamma=2, num_epochs=0, n_step=0, train_batch_size_per_learner=0 silently).
NUMERIC_RULES: Dict[str, Rule] = {
    "stop.env_steps": Rule(**_POS, integer=True, example="stop.env_steps=50000"),
    "stop.time_s": Rule(**_POS, nullable=True, example="stop.time_s=600 (or null: no limit)"),
    "search.num_samples": Rule(low=1, integer=True, example="search.num_samples=4"),
    "search.num_seeds": Rule(low=1, integer=True, example="search.num_seeds=3"),
    "search.max_concurrent_trials": Rule(low=1, integer=True, nullable=True,
                                         example="search.max_concurrent_trials=2 (or null: as many as CPUs allow)"),
    "checkpoint_every": Rule(**_NONNEG, integer=True, example="checkpoint_every=10 (0: only at the end)"),
    "max_failures": Rule(low=-1, integer=True, example="max_failures=2 (-1: retry forever)"),
    "tracking.flush_every_s": Rule(**_NONNEG, example="tracking.flush_every_s=0 (journal every result at once)"),
    "cluster.num_cpus": Rule(low=1, integer=True, nullable=True, example="cluster.num_cpus=2 (or null: all cores)"),
    "convergence.window": Rule(low=1, integer=True, example="convergence.window=5"),
    "convergence.sustain": Rule(low=1, integer=True, example="convergence.sustain=3"),
    "convergence.last_k": Rule(low=1, integer=True, example="convergence.last_k=5"),
    "evaluation.interval": Rule(**_NONNEG, integer=True, example="evaluation.interval=5 (0: no evaluation)"),
    "evaluation.episodes": Rule(low=1, integer=True, example="evaluation.episodes=5"),
    "algo.num_env_runners": Rule(**_NONNEG, integer=True, example="algo.num_env_runners=0"),
    "algo.num_envs_per_env_runner": Rule(low=1, integer=True, example="algo.num_envs_per_env_runner=1"),
    # RLlib hyperparameters (AlgorithmConfig.training): only checked when present.
    "algo.params.lr": Rule(**_POS, nullable=True, schedule=True, example="algo.params.lr=0.0003"),
    "algo.params.actor_lr": Rule(**_POS, schedule=True, example="algo.params.actor_lr=0.0003"),
    "algo.params.critic_lr": Rule(**_POS, schedule=True, example="algo.params.critic_lr=0.0003"),
    "algo.params.alpha_lr": Rule(**_POS, schedule=True, example="algo.params.alpha_lr=0.0003"),
    "algo.params.gamma": Rule(**_UNIT, low_open=True, example="algo.params.gamma=0.99"),
    "algo.params.lambda_": Rule(**_UNIT, example="algo.params.lambda_=0.95"),
    "algo.params.tau": Rule(**_UNIT, low_open=True, example="algo.params.tau=0.005"),
    "algo.params.train_batch_size_per_learner": Rule(low=1, integer=True,
                                                     example="algo.params.train_batch_size_per_learner=2000"),
    "algo.params.minibatch_size": Rule(low=1, integer=True, nullable=True, example="algo.params.minibatch_size=128"),
    "algo.params.num_epochs": Rule(low=1, integer=True, example="algo.params.num_epochs=6"),
    "algo.params.n_step": Rule(low=1, integer=True, example="algo.params.n_step=3"),
    "algo.params.clip_param": Rule(**_POS, example="algo.params.clip_param=0.2"),
    "algo.params.vf_clip_param": Rule(**_POS, example="algo.params.vf_clip_param=10.0"),
    "algo.params.vf_loss_coeff": Rule(**_NONNEG, example="algo.params.vf_loss_coeff=0.5"),
    "algo.params.entropy_coeff": Rule(**_NONNEG, schedule=True, example="algo.params.entropy_coeff=0.01"),
    "algo.params.kl_coeff": Rule(**_NONNEG, example="algo.params.kl_coeff=0.2"),
    "algo.params.kl_target": Rule(**_POS, example="algo.params.kl_target=0.01"),
    "algo.params.grad_clip": Rule(**_POS, nullable=True, example="algo.params.grad_clip=40.0 (or null)"),
    "algo.params.target_network_update_freq": Rule(**_NONNEG, integer=True,
                                                   example="algo.params.target_network_update_freq=500"),
    "algo.params.num_steps_sampled_before_learning_starts": Rule(
        **_NONNEG, integer=True, example="algo.params.num_steps_sampled_before_learning_starts=1000"),
}


def check_numeric(key: str, value: Any, *, origin: str = "") -> None:
    """Checks one value against ``NUMERIC_RULES`` (keys without a rule pass).

    Args:
        key: Dotted config key, e.g. ``algo.params.lr``.
        value: The value (a fixed one, or one a search space can sample).
        origin: Where the value comes from, for the message (e.g. a search expression).

    Raises:
        ConfigError: The value is out of range or not a number.
    """
    rule = NUMERIC_RULES.get(key)
    if rule is None or rule.accepts(value):
        return
    where = f"{key}={value!r}" + (f" ({origin})" if origin else "")
    raise ConfigError(f"{where}: {key} must be {rule.describe()}; e.g. {rule.example}.")


def _dotted_items(config: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _dotted_items(value, path + ".")
        else:
            yield path, value


def check_config(config: Mapping[str, Any]) -> None:
    """Numeric sanity of a composed (or trial) config: every key of ``NUMERIC_RULES``.

    Raises:
        ConfigError: The first value out of range, with its valid range and an example.
    """
    for key, value in _dotted_items(config):
        if key in NUMERIC_RULES:
            check_numeric(key, value)


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
        The built (unvalidated, unfrozen) ``AlgorithmConfig``.

    Raises:
        ConfigError: Unknown hyperparameter, a value out of range, or RLlib's objection.
    """
    from qeu_tune.trainable import build_algo_config

    algo = config["algo"]
    name = algo.get("name")
    for key, value in _dotted_items({"algo": algo}):
        if not key.startswith("algo.smoke_params"):
            check_numeric(key, value)
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
    from qeu_tune.config.groups import GROUP_NAMES
    from qeu_tune.trial_config import resolve_trial_config, set_dotted

    for params in representatives:
        base, _ = resolve_trial_config(template, params)
        search = base["search"]
        for dim in dimensions:
            if dim.key in GROUP_NAMES:
                continue  # each option is a representative already
            if dim.condition is not None:
                cond_key, cond_value = dim.condition
                if cond_key in GROUP_NAMES and str(params.get(cond_key, _group_name(base, cond_key))) != str(cond_value):
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

# Besides qeu_tune.names: Tune's own bookkeeping keys, which every result has too.
_TUNE_KEYS = ("training_iteration", "time_total_s", "time_this_iter_s")


def reported_metrics(reward_configs: Iterable[Mapping[str, Any]], *,
                     evaluation: bool = False) -> Tuple[List[str], List[str]]:
    """The metric names a trial reports to Tune: ``(exact names, prefixes)``.

    Exact names: the per-iteration names of ``qeu_tune.names``, Tune's own keys and, for
    each reward design with metrics, ``return_shaped``, ``episode/len``,
    ``reward/env/sum``, ``reward/<metric>/sum``, ``rt/<metric>/{mean,min,max}``; with
    ``evaluation``, ``eval/`` names for the returns and the episode statistics.
    Prefixes: ``learner/`` (RLlib's learner statistics), ``rllib/`` (RLlib's raw keys) and
    ``task/`` (statistics the environment defines; ``eval/task/`` with evaluation).
    """
    from qeu_tune import names

    exact = [
        value for key, value in vars(names).items()
        if key.isupper() and isinstance(value, str) and "/" in value and not value.endswith("/")
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
        exact += [value for key, value in vars(names).items()
                  if key.startswith("EVAL_") and isinstance(value, str) and value != names.EVAL_PREFIX]
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
    from qeu_tune import names

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
        from qeu_tune.stats import STAT_DIRECTIONS

        stat = metric[len(names.CONV_PREFIX):]
        by = stat if stat in STAT_DIRECTIONS else f"<{'|'.join(STAT_DIRECTIONS)}>"
        raise ConfigError(
            f"{key}={metric!r}: conv/* statistics are computed by the tracker from "
            "each trial's curve and logged to MLflow, but not reported to Tune, so its "
            "searcher and scheduler cannot read them. Optimise a reported metric (e.g. "
            f"{key}=return_env/mean) and rank by the statistic afterwards with "
            f"`qeu-tune report SWEEP --by {by}`."
        )
    if metric.removeprefix(names.EVAL_PREFIX).startswith((names.RT_PREFIX, names.REWARD_PREFIX)):
        why = (f" Reward designs of this sweep: {designs}; rt/<metric>/... and "
               "reward/<metric>/sum exist only for the metrics of a design with mode additive or potential.")
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


# ----------------------------------------------------------------------------- outside world


def redact_uri(uri: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` (for messages)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", str(uri))


def _tcp_error(host: str, port: int, timeout: float) -> Optional[str]:
    """None if a TCP connection to ``host:port`` opens within ``timeout``, else why not.

    Runs in a daemon thread so a slow DNS lookup cannot stretch the timeout either.
    """
    outcome: Dict[str, str] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["ok"] = ""
        except OSError as err:
            outcome["error"] = err.strerror or str(err) or type(err).__name__

    thread = threading.Thread(target=attempt, daemon=True, name="qeu-tune-reachability")
    thread.start()
    thread.join(timeout + 0.5)
    if "ok" in outcome:
        return None
    return outcome.get("error") or f"no answer within {timeout:g} s"


def _probe_writable(directory: Path) -> Optional[str]:
    """None if a new directory can be created in ``directory`` (removed again at once)."""
    try:
        probe = tempfile.mkdtemp(prefix=".qeu-tune-write-check-", dir=directory)
    except OSError as err:
        return err.strerror or str(err)
    try:
        os.rmdir(probe)
    except OSError:
        pass
    return None


def _writable_dir_error(path: Path) -> Optional[str]:
    """Why ``path`` cannot be used as (or created as) a directory, or None. Creates nothing."""
    path = path.expanduser()
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        error = _probe_writable(path)
        return None if error is None else f"cannot write in {path} ({error})"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory, so {path} cannot be created"
    error = _probe_writable(ancestor)
    return None if error is None else f"cannot create {path}: {ancestor} does not allow it ({error})"


def check_storage_path(configured: Optional[str]) -> None:
    """The Ray Tune storage path can be created or written to (nothing is left behind).

    Args:
        configured: ``cluster.storage_path`` (None: ``$QEU_TUNE_HOME/ray_results``).
            A ``scheme://`` URI other than ``file://`` (s3, gs, ...) is not checked.

    Raises:
        ConfigError: Not a directory, or not writable.
    """
    from qeu_tune.paths import qeu_home

    if configured and "://" in configured:
        parts = urlsplit(configured)
        if parts.scheme != "file":
            return
        path = Path(parts.path)
    else:
        path = Path(configured).expanduser() if configured else qeu_home() / "ray_results"
    error = _writable_dir_error(path.absolute())
    if error:
        shown = f"cluster.storage_path={configured!r}" if configured else f"the default storage path {path}"
        raise ConfigError(
            f"{shown}: Ray Tune cannot store results there: {error}. Use a writable "
            "directory, e.g. cluster.storage_path=~/ray_results, or leave it unset for "
            "$QEU_TUNE_HOME/ray_results (set QEU_TUNE_HOME to move it)."
        )


# SQLAlchemy driver name -> (module it imports, pip package). Which driver a URI means is
# SQLAlchemy's decision (plain postgresql:// is psycopg 3 with SQLAlchemy 2.1).
_DB_DRIVERS: Dict[str, Tuple[str, str]] = {
    "psycopg": ("psycopg", "psycopg[binary]"),
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "pg8000": ("pg8000", "pg8000"),
    "mysqldb": ("MySQLdb", "mysqlclient"),
    "pymysql": ("pymysql", "PyMySQL"),
    "pyodbc": ("pyodbc", "pyodbc"),
    "pymssql": ("pymssql", "pymssql"),
}
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_UNCHECKED_SCHEMES = ("databricks", "databricks-uc", "uc")


def check_tracking_uri(uri: str, *, timeout: float = NETWORK_TIMEOUT_S) -> None:
    """The MLflow tracking URI can be used: reachable, its driver installed, writable.

    * ``http(s)://``: a TCP connection to the server opens within ``timeout``.
    * ``postgresql://``, ``mysql://``, ``mssql://`` (``+driver`` too): the driver module
      imports (found, not imported) and the database port answers within ``timeout``.
    * ``sqlite:///path`` and plain paths / ``file://``: the file's directory can be
      created or written to (nothing is created).
    * ``databricks``/``uc`` are not checked; other schemes must be registered by an MLflow
      plugin (entry point ``mlflow.tracking_store``).

    Messages show the URI with its password replaced by ``***``.

    Raises:
        ConfigError: One paragraph naming the URI and the fix.
    """
    uri = str(uri).strip()
    shown = redact_uri(uri)
    if uri.split(":", 1)[0].lower() in _UNCHECKED_SCHEMES:
        return  # "databricks", "databricks://profile", "uc:...": not checked here
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ("file" if uri.startswith("file:") else "")
    if scheme in ("", "file"):
        path = Path(urlsplit(uri).path if scheme == "file" else uri)
        error = _writable_dir_error(path.absolute())
        if error:
            raise ConfigError(
                f"tracking.uri={shown}: MLflow cannot write its file store there: {error}. "
                "Use a writable directory, or leave tracking.uri unset for "
                "sqlite:///$QEU_TUNE_HOME/mlflow.db."
            )
        return
    if scheme == "sqlite":
        path_text = uri.split(":///", 1)[1] if ":///" in uri else ""
        if path_text in ("", ":memory:"):
            return
        path = Path(path_text).expanduser().absolute()
        if path.exists() and not path.is_file():
            error: Optional[str] = f"{path} exists and is not a file"
        elif path.exists():
            error = None if os.access(path, os.W_OK) else f"{path} is read-only"
        else:
            error = _writable_dir_error(path.parent)
        if error:
            raise ConfigError(
                f"tracking.uri={shown}: MLflow cannot create or write the SQLite database: "
                f"{error}. Point it at a writable location (sqlite:////absolute/path/mlflow.db) "
                "or leave tracking.uri unset for sqlite:///$QEU_TUNE_HOME/mlflow.db."
            )
        return
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            host, port = None, None
        if not host or port is None:
            raise ConfigError(f"tracking.uri={shown} is not a valid URL; e.g. http://127.0.0.1:5000.")
        error = _tcp_error(host, port, timeout)
        if error:
            raise ConfigError(
                f"tracking.uri={shown}: cannot reach the MLflow tracking server at "
                f"{host}:{port} ({error}). Start it (`qeu-tune ui`, or `mlflow server --host "
                f"{host} --port {port}`), fix the URI, use the local store (tracking=local, "
                f"no tracking.uri), {OFFLINE_HINT}."
            )
        return
    dialect = scheme.split("+", 1)[0]
    if dialect in _DB_PORTS:
        driver = _sqlalchemy_driver(scheme)
        module, package = _DB_DRIVERS.get(driver, (driver, driver))
        if module and importlib.util.find_spec(module) is None:
            default = "" if "+" in scheme else f" (SQLAlchemy's default driver for {scheme}://)"
            if dialect == "postgresql":
                fix = (f"pip install 'qeu-tune[server]' (psycopg 3) and write the URI as "
                       f"{redact_uri('postgresql+psycopg://' + uri.split('://', 1)[1])}, or "
                       "pip install psycopg2-binary ('psycopg2') and write postgresql+psycopg2://")
            else:
                fix = f"pip install {package}"
            raise ConfigError(
                f"tracking.uri={shown}: the database driver module {module!r}{default} is not "
                f"installed. Install it: {fix}; or use the local store (tracking=local, no "
                f"tracking.uri), {OFFLINE_HINT}."
            )
        parts = urlsplit(uri)
        try:
            host, port = parts.hostname, parts.port or _DB_PORTS[dialect]
        except ValueError:
            host, port = None, None
        if host:  # no host: a local socket, which the driver finds itself
            error = _tcp_error(host, port, timeout)
            if error:
                raise ConfigError(
                    f"tracking.uri={shown}: cannot reach the {dialect} database at {host}:{port} "
                    f"({error}). Start the database or fix the URI; or use the local store "
                    f"(tracking=local, no tracking.uri), {OFFLINE_HINT}."
                )
        return
    if scheme in _UNCHECKED_SCHEMES or scheme.startswith("databricks") or scheme in _plugin_schemes():
        return
    raise ConfigError(
        f"tracking.uri={shown}: MLflow has no tracking store for the scheme {scheme!r}. Use "
        "http(s)://HOST:PORT (a tracking server), sqlite:////path/mlflow.db, "
        "postgresql+psycopg://USER@HOST/DB, mysql+pymysql://..., a directory path, or "
        "leave tracking.uri unset for sqlite:///$QEU_TUNE_HOME/mlflow.db."
    )


def _sqlalchemy_driver(scheme: str) -> str:
    """The DBAPI driver SQLAlchemy uses for ``dialect[+driver]`` (without importing it)."""
    from sqlalchemy.engine import make_url

    try:
        return str(make_url(f"{scheme}://").get_dialect().driver)
    except Exception:  # noqa: BLE001 - unknown dialect or driver: SQLAlchemy names it at connect
        return scheme.split("+", 1)[-1]


def _plugin_schemes() -> List[str]:
    from importlib.metadata import entry_points

    try:
        return [ep.name for ep in entry_points(group="mlflow.tracking_store")]
    except Exception:  # noqa: BLE001 - broken metadata: no plugins
        return []


_RAY_GCS_PORT = 6379
_RAY_CLIENT_PORT = 10001


def check_ray_address(address: Optional[str], *, timeout: float = NETWORK_TIMEOUT_S) -> None:
    """A Ray address answers, checked with one TCP connection (``ray.init`` itself retries
    an unreachable GCS for minutes before it fails).

    ``None`` and ``local`` start a new local Ray: nothing to check. ``auto`` is checked
    only when ``$RAY_ADDRESS`` names the cluster (otherwise Ray's own lookup fails fast).

    Raises:
        ConfigError: The address does not parse or nothing listens there.
    """
    if address is None or str(address).strip() in ("", "local"):
        return
    text = str(address).strip()
    target = text
    if text == "auto":
        target = os.environ.get("RAY_ADDRESS", "").strip()
        if not target or target in ("auto", "local"):
            return
    if target.startswith("ray://"):
        hostport, default_port, kind = target[len("ray://"):], _RAY_CLIENT_PORT, "Ray Client server"
    elif "://" in target:
        raise ConfigError(
            f"cluster.address={text!r}: unknown address scheme; use 'auto' on a node of a "
            "running cluster, HOST:PORT of its GCS (default port 6379), ray://HOST:10001 for "
            "a Ray Client server, or cluster=local."
        )
    else:
        hostport, default_port, kind = target, _RAY_GCS_PORT, "Ray GCS"
    hostport = hostport.split("/", 1)[0]
    host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ConfigError(
            f"cluster.address={text!r} is not HOST:PORT; use e.g. 10.0.0.5:6379, "
            "ray://10.0.0.5:10001, 'auto', or cluster=local."
        )
    error = _tcp_error(host.strip("[]"), port, timeout)
    if error:
        via = f" (from $RAY_ADDRESS={target!r})" if text == "auto" else ""
        raise ConfigError(
            f"cluster.address={text!r}{via}: no {kind} answers at {host}:{port} ({error}). "
            "Start the cluster (`ray start --head`, then use its address or 'auto' on that "
            "node), use ray://HOST:10001 for a Ray Client server, or run locally with "
            "cluster=local."
        )


def check_outside_world(config: Mapping[str, Any]) -> None:
    """Tracking URI, storage path and Ray address of a composed config.

    ``tracking.mode=offline`` (when that setting exists) skips the tracking check: such a
    sweep does not talk to the tracking store while it runs.
    """
    from qeu_tune.paths import resolve_tracking_uri

    tracking = config.get("tracking") or {}
    if tracking.get("mode", "online") not in ("online", "offline"):
        raise ConfigError(
            f"tracking.mode={tracking.get('mode')!r} is not a tracking mode; use tracking.mode=online "
            "(write to MLflow as the sweep runs) or tracking.mode=offline (journal only; `qeu-tune sync` later)."
        )
    if tracking.get("mode") != "offline":
        check_tracking_uri(resolve_tracking_uri(tracking.get("uri")))
    cluster = config.get("cluster") or {}
    check_storage_path(cluster.get("storage_path"))
    check_ray_address(cluster.get("address"))
