"""Per-episode task statistics of an environment, reported next to the reward design's.

A base environment that defines ``episode_statistics() -> {name: float}`` (e.g. Cliff
Walking's route adherence) gets them into the episode's last ``info`` under
``info["qeu_episode"]`` (``qeu_tune.core.names.EPISODE_INFO_KEY``), where the episode-metrics
callback logs every entry; names are ``task/<name>`` (``qeu_tune.core.names.TASK_PREFIX``).
The wrapper sits outside Gymnasium's ``TimeLimit``, so truncated episodes report too.
"""

from __future__ import annotations

from typing import Any, Dict, SupportsFloat, Tuple

import gymnasium as gym

from qeu_tune.core.names import EPISODE_INFO_KEY


class TaskStatisticsWrapper(gym.Wrapper):
    """Adds the base env's ``episode_statistics()`` to the last ``info`` of each episode."""

    def step(self, action: Any) -> Tuple[Any, SupportsFloat, bool, bool, Dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = dict(info)
            info[EPISODE_INFO_KEY] = {**(info.get(EPISODE_INFO_KEY) or {}), **self.env.unwrapped.episode_statistics()}
        return obs, reward, terminated, truncated, info


def with_task_statistics(env: gym.Env) -> gym.Env:
    """``env`` wrapped in ``TaskStatisticsWrapper`` if its base env has statistics."""
    if callable(getattr(env.unwrapped, "episode_statistics", None)):
        return TaskStatisticsWrapper(env)
    return env
