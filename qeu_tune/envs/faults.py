"""Fault injection: an environment wrapper that raises in ``step``, to test trial retries.

Configured by ``env.fault`` (``qeu_tune.config.schema.FaultConfig``), e.g.
``env.fault.at_step=300`` makes every environment instance raise at its 300th step. By
default only a trial's first attempt faults, so Tune's retry from the last checkpoint
succeeds; ``env.fault.retries_too=true`` makes every attempt fault (the trial ends FAILED
once ``max_failures`` is used up).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import gymnasium as gym
import numpy as np


class InjectedFault(RuntimeError):
    """Raised by ``FaultInjection``: a deliberate, configured environment crash."""


class FaultInjection(gym.Wrapper):
    """Raises ``InjectedFault`` at a given step of this instance's life or with a probability.

    Args:
        env: The environment to wrap.
        at_step: Raise on this step (1-based, counted over all episodes of this instance).
        probability: Else raise on each step with this probability.
        seed: Seeds the probability draws.
    """

    def __init__(
        self, env: gym.Env, *, at_step: Optional[int] = None, probability: float = 0.0, seed: Optional[int] = None
    ) -> None:
        super().__init__(env)
        self.at_step = at_step
        self.probability = float(probability)
        self.steps = 0
        self._rng = np.random.default_rng(seed)

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.at_step is not None and self.steps == self.at_step:
            raise InjectedFault(f"injected environment fault at step {self.steps} (env.fault.at_step)")
        if self.probability > 0 and self._rng.random() < self.probability:
            raise InjectedFault(
                f"injected environment fault at step {self.steps} (env.fault.probability={self.probability})"
            )
        return self.env.step(action)


def fault_settings(fault: Optional[Mapping[str, Any]], *, restored: bool) -> Optional[dict]:
    """The fault wrapper's arguments for this attempt of a trial, or None for no faults."""
    if not fault or (fault.get("at_step") is None and not fault.get("probability")):
        return None
    if restored and not fault.get("retries_too", False):
        return None  # a retry from a checkpoint: the fault was transient
    return {"at_step": fault.get("at_step"), "probability": float(fault.get("probability") or 0.0)}
