"""Plan a sweep: validate a composed config and build Tune's search from it. Never starts Ray.

``plan_sweep`` does every check that can fail without Ray (numbers, the outside world, the
RLlib config, every value the search can sample, the environment and the reward design),
so bad input stops before a cluster starts or an MLflow run is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from qeu_tune.config.compose import compose_group_options, group_options
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.config.reachability import check_outside_world
from qeu_tune.config.rules import check_config
from qeu_tune.config.trial import TrialTemplate, resolve_trial_config, unknown_keys
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import resolve_storage_path, resolve_tracking_uri
from qeu_tune.engine.preflight import check_search_metric, check_search_values, checked_algo_config
from qeu_tune.engine.search_space import TuneSearch, build_tune_search, grid_points, parse_space
from qeu_tune.reward import make_env, parse_reward_config


@dataclass
class SweepPlan:
    """Everything needed to run a sweep, validated."""

    config: Dict[str, Any]
    template: TrialTemplate
    search: TuneSearch
    tracking_uri: str
    storage_path: str
    overrides: List[str] = field(default_factory=list)


def _group_choices(
    config: Mapping[str, Any], recorded: Optional[Mapping[str, Mapping[str, Any]]] = None
) -> Dict[str, List[str]]:
    """Config-group options a search space chooses between (``algo: choice(ppo, dqn)``).

    Option names are checked against the config directories, or against the ``recorded``
    options of a sweep being resumed.
    """
    search = config["search"]
    dims = parse_space(search.get("space") or {}, search.get("when") or {})
    choices: Dict[str, List[str]] = {}
    for dim in dims:
        if dim.key in GROUP_NAMES:
            valid = sorted(recorded.get(dim.key) or {}) if recorded is not None else group_options(dim.key)
            if dim.kind not in ("choice", "const"):
                raise ConfigError(
                    f"search space: {dim.key} selects a config group, so it needs "
                    f"choice(...) of option names; valid options: {', '.join(valid)}."
                )
            for value in dim.values:
                if str(value) not in valid:
                    raise ConfigError(
                        f"search space: {dim.key}={value!r} is not a {dim.key} option; valid "
                        f"choices: {', '.join(valid)}."
                    )
            choices.setdefault(dim.key, [])
            choices[dim.key] += [str(v) for v in dim.values if str(v) not in choices[dim.key]]
    return choices


def _representative_params(search: TuneSearch) -> List[Dict[str, Any]]:
    """One parameter set per combination of group options, to validate each variant."""
    group_dims = [d for d in search.dimensions if d.key in GROUP_NAMES and d.condition is None]
    if not group_dims:
        return [{}]
    return grid_points(group_dims)


def validate_trial_config(config: Mapping[str, Any]) -> None:
    """Builds the RLlib config and the environment once, on the driver, without Ray.

    Raises:
        ConfigError: with one paragraph naming the bad value and the fix.
    """

    # Unknown algorithm / hyperparameter, values out of range, RLlib's own validate().
    algo_config = checked_algo_config(config)
    try:
        parse_reward_config(config.get("reward"))  # reward errors get a reward label
    except ValueError as err:
        raise ConfigError(f"reward={config.get('reward', {}).get('name')}: {err}") from None
    env = config["env"]
    try:
        instance = make_env(
            env["id"],
            dict(env.get("env_config") or {}),
            config.get("reward"),
            gamma=float(algo_config.gamma),
        )
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"env={env.get('name')} (id {env['id']!r}): {err}") from None
    except Exception as err:  # noqa: BLE001 - user env code can raise anything
        raise ConfigError(
            f"env={env.get('name')}: building {env['id']!r} with env_config "
            f"{env.get('env_config')} failed: {type(err).__name__}: {err}"
        ) from None
    try:
        _check_action_space(config["algo"]["name"], instance.action_space)
    finally:
        instance.close()


def _check_action_space(algo: str, space: Any) -> None:
    import gymnasium as gym

    if algo == "dqn" and not isinstance(space, gym.spaces.Discrete):
        raise ConfigError(
            f"algo=dqn needs a discrete action space, but the env has {space}; use "
            "algo=sac, ppo, appo or impala, or a discrete env."
        )


def plan_sweep(
    config: Dict[str, Any],
    overrides: Sequence[str] = (),
    *,
    recorded_options: Optional[Mapping[str, Mapping[str, Dict[str, Any]]]] = None,
) -> SweepPlan:
    """Validates a composed config and plans its sweep. Never starts Ray.

    Args:
        config: The composed, resolved config (plain dict).
        overrides: The Hydra overrides it was composed with (to compose group options).
        recorded_options: ``{group: {option: subtree}}`` as a sweep recorded them at its start
            (``qeu-tune resume``): used as they are instead of composing the searched groups'
            options again, so the config directories' current files play no part.

    Returns:
        A ``SweepPlan``.

    Raises:
        ConfigError: Any invalid value, with the valid choices.
    """
    search_cfg, stop = config["search"], config["stop"]
    check_config(config)  # numeric sanity: budgets, RLlib values RLlib does not check
    check_outside_world(config)  # tracking URI, storage path, Ray address (short timeouts)
    if int(stop["env_steps"]) <= 0:
        raise ConfigError(f"stop.env_steps must be > 0, got {stop['env_steps']}.")
    search = build_tune_search(
        space=search_cfg.get("space") or {},
        when=search_cfg.get("when") or {},
        algorithm=search_cfg["algorithm"],
        num_samples=int(search_cfg["num_samples"]),
        num_seeds=int(search_cfg["num_seeds"]),
        first_seed=int(search_cfg["seed"]),
        searcher_seed=search_cfg.get("searcher_seed"),
        metric=search_cfg["metric"],
        mode=search_cfg["mode"],
        scheduler=config["scheduler"]["name"],
        scheduler_params=config["scheduler"].get("params") or {},
        max_env_steps=int(stop["env_steps"]),
    )
    choices = _group_choices(config, recorded_options)
    options = compose_group_options(overrides, choices) if recorded_options is None else dict(recorded_options)
    template = TrialTemplate(base=config, group_options=options)
    if config["scheduler"]["name"] == "pbt":
        template.base["checkpoint_every"] = 1  # PBT exploits from the latest checkpoint
    check_search_metric(config, [config["reward"], *template.group_options.get("reward", {}).values()])
    bad = unknown_keys(template, [d.key for d in search.dimensions])
    if bad:
        raise ConfigError(
            f"search space: {', '.join(bad)} match no config value in any trial. Keys are "
            "dotted paths into the composed config (see `qeu-tune --cfg job`), e.g. "
            "algo.params.lr, env.env_config.<kwarg>, reward.metrics.<name>.weight."
        )
    representatives = _representative_params(search)
    for params in representatives:
        trial_config, _ = resolve_trial_config(template, {**params, "seed": search_cfg["seed"]})
        validate_trial_config(trial_config)
    check_search_values(template, search.dimensions, representatives, validate_config=validate_trial_config)
    return SweepPlan(
        config=config,
        template=template,
        search=search,
        tracking_uri=resolve_tracking_uri(config["tracking"].get("uri")),
        storage_path=resolve_storage_path(config["cluster"].get("storage_path")),
        overrides=list(overrides),
    )
