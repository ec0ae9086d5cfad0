"""Episode metrics from RLlib's env runners, and the mapping of RLlib results to our names.

``EpisodeMetricsCallback`` runs inside RLlib's env runners: at every episode end it logs
the unshaped return and, when a reward design is active, the per-episode statistics the
reward wrapper left in the last ``info`` (reward components, RT metric values).
``flatten_result`` turns RLlib's nested result into the flat, documented names of
``qeu_tune.core.names``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

from ray.rllib.callbacks.callbacks import RLlibCallback

from qeu_tune.core import names

# Our values live under env_runners/<this>/ in RLlib's results.
RLLIB_NAMESPACE = "qeu"
_RETURN_ENV = "return_env"


class EpisodeMetricsCallback(RLlibCallback):
    """Logs the reward wrapper's per-episode statistics (unshaped return, components, RT)."""

    def on_episode_end(
        self, *, episode: Any, env_runner: Any = None, metrics_logger: Any = None, **kwargs: Any
    ) -> None:
        if metrics_logger is None:
            return
        stats: Mapping[str, float] = {}
        try:
            last_info = episode.get_infos(-1)
            if isinstance(last_info, Mapping):
                stats = last_info.get(names.EPISODE_INFO_KEY) or {}
        except (IndexError, KeyError, TypeError):  # an episode without infos
            stats = {}
        # Without a reward design there is nothing to add: the env's own return is
        # RLlib's episode return (``episode.get_return()`` here would cover only the
        # episode's last chunk, so it must not be used).
        # RLlib's own smoothing window: 100 episodes in training; an evaluation runner
        # uses its episodes per evaluation, so each evaluation reports only its own.
        window = getattr(getattr(env_runner, "config", None), "metrics_num_episodes_for_smoothing", 100)
        for key, value in stats.items():
            metrics_logger.log_value((RLLIB_NAMESPACE, key), float(value), reduce="mean", window=window)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def flatten_result(result: Mapping[str, Any], *, previous_env_steps: float = 0.0) -> Dict[str, float]:
    """Maps one ``Algorithm.train()`` result to the documented metric names.

    Args:
        result: RLlib's nested result dict.
        previous_env_steps: Env steps sampled before this iteration, for throughput.

    Returns:
        Flat ``{name: float}``: returns, episode length, progress, throughput, learner
        statistics (``learner/<key>`` for the default module, ``learner/<module>/<key>``
        for others), reward components and RT metrics. Missing values (no episode ended
        yet) are NaN, never absent, so every iteration has the same keys.
    """
    runners = result.get("env_runners", {}) or {}
    ours = runners.get(RLLIB_NAMESPACE, {}) or {}
    env_steps = float(
        result.get("num_env_steps_sampled_lifetime", runners.get("num_env_steps_sampled_lifetime", 0.0)) or 0.0
    )
    iter_time = float(result.get("time_this_iter_s", 0.0) or 0.0)
    nan = float("nan")

    def get(mapping: Mapping[str, Any], key: str) -> float:
        value = _number(mapping.get(key, nan))
        return nan if value is None else value

    flat: Dict[str, float] = {
        names.RETURN_MEAN: get(runners, "episode_return_mean"),
        names.RETURN_MIN: get(runners, "episode_return_min"),
        names.RETURN_MAX: get(runners, "episode_return_max"),
        # No reward design: the unshaped return is the return.
        names.RETURN_ENV_MEAN: get(ours, _RETURN_ENV) if _RETURN_ENV in ours else get(runners, "episode_return_mean"),
        names.EPISODE_LEN_MEAN: get(runners, "episode_len_mean"),
        names.EPISODES: get(runners, "num_episodes_lifetime"),
        names.ENV_STEPS: env_steps,
        names.ITERATION: float(result.get("training_iteration", 0) or 0),
        names.TIME_TOTAL_S: float(result.get("time_total_s", 0.0) or 0.0),
        names.ENV_STEPS_PER_S: (env_steps - previous_env_steps) / iter_time if iter_time > 0 else nan,
    }
    for key, value in _flatten(ours).items():
        if key != _RETURN_ENV and (number := _number(value)) is not None:
            flat[key] = number
    for module, stats in (result.get("learners", {}) or {}).items():
        if module.startswith("__") or not isinstance(stats, Mapping):
            continue
        prefix = names.LEARNER_PREFIX if module == "default_policy" else f"{names.LEARNER_PREFIX}{module}/"
        for key, value in stats.items():
            if _is_learner_stat(key) and (number := _number(value)) is not None and math.isfinite(number):
                flat[prefix + key] = number
    return flat


def flatten_evaluation(evaluation: Optional[Mapping[str, Any]], iteration: int) -> Dict[str, float]:
    """Maps RLlib's evaluation results (``result["evaluation"]`` or ``Algorithm.evaluate()``)
    to ``eval/`` names.

    Returns:
        ``eval/return_env/mean`` (unshaped), ``eval/episode/len_mean``, ``eval/episodes``,
        ``eval/iteration`` (the training iteration it belongs to) and ``eval/<key>`` for each
        episode statistic (reward components, RT metrics, ``task/*``); empty without results.
    """
    runners = (evaluation or {}).get("env_runners", {}) or {}
    if not runners:
        return {}
    ours = runners.get(RLLIB_NAMESPACE, {}) or {}
    nan = float("nan")

    def get(mapping: Mapping[str, Any], key: str) -> float:
        value = _number(mapping.get(key, nan))
        return nan if value is None else value

    flat = {
        names.EVAL_RETURN_ENV_MEAN: get(ours, _RETURN_ENV)
        if _RETURN_ENV in ours
        else get(runners, "episode_return_mean"),
        names.EVAL_EPISODE_LEN_MEAN: get(runners, "episode_len_mean"),
        names.EVAL_EPISODES: get(runners, "num_episodes"),
        names.EVAL_ITERATION: float(iteration),
    }
    for key, value in _flatten(ours).items():
        if key != _RETURN_ENV and (number := _number(value)) is not None:
            flat[names.EVAL_PREFIX + key] = number
    return flat


_NOT_LEARNER_STATS = ("weights_seq_no", "throughput", "timer", "module_train_batch_size")


def _is_learner_stat(key: str) -> bool:
    # Losses and optimisation diagnostics; counters, throughputs and timers stay in rllib/.
    return not key.startswith("num_") and not any(s in key for s in _NOT_LEARNER_STATS)


def rllib_metrics(result: Mapping[str, Any]) -> Dict[str, float]:
    """Every numeric key of RLlib's result, flattened under ``rllib/`` (optional logging)."""
    out = {}
    # RLlib's echo of its own config is not a metric (and is hundreds of keys).
    tree = {k: v for k, v in result.items() if k != "config"}
    for key, value in _flatten(tree).items():
        number = _number(value)
        if number is not None and math.isfinite(number) and not isinstance(value, str):
            out[names.RLLIB_PREFIX + key] = number
    return out
