"""Reward design: RT metrics of the agent's state fed back into the reward.

* ``config``: the ``reward`` config group's dataclasses and ``parse_reward_config``.
* ``wrapper``: ``RewardDesignWrapper``, additive or potential-based shaping with
  per-step (unless ``step_info: false``) and per-episode reporting in ``info``.
* ``design``: ``make_env``, base env + fitted metrics + wrapper, from a config.
"""

from qeu_tune.reward.config import MetricConfig, RewardConfig, parse_reward_config
from qeu_tune.reward.design import (
    FittedMetric,
    build_metric,
    clear_metric_cache,
    fitted_metrics,
    install_fitted,
    make_env,
)
from qeu_tune.reward.wrapper import RewardDesignWrapper, episode_info_keys

__all__ = [
    "FittedMetric",
    "MetricConfig",
    "RewardConfig",
    "RewardDesignWrapper",
    "build_metric",
    "clear_metric_cache",
    "episode_info_keys",
    "fitted_metrics",
    "install_fitted",
    "make_env",
    "parse_reward_config",
]
