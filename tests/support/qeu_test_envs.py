"""Environments for failure-path tests (importable in Ray workers via PYTHONPATH)."""

from __future__ import annotations

import gymnasium as gym


class CrashingCartPole(gym.Wrapper):
    """CartPole that raises after ``crash_after`` steps: a trial that crashes mid-training.

    Counted per sub-environment: with ``num_envs_per_env_runner`` copies each steps only
    its share of the trial's env steps, so the default is low enough for a smoke trial.
    """

    def __init__(self, crash_after: int = 100) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.crash_after = crash_after
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps > self.crash_after:
            raise RuntimeError(f"injected crash after {self.crash_after} steps")
        return self.env.step(action)
