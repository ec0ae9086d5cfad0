"""MountainCar-v0's mechanical energy, as a feature for reward designs (numpy only).

Gymnasium's dynamics, ``v' = v + (a - 1) * 0.001 - 0.0025 * cos(3 x)``, conserve (without
the engine) ``E = v^2 / 2 + 0.0025 * sin(3 x) / 3``. ``energy_to_go`` normalises it so that
the valley's resting state is 1 and the flag at rest is 0: potential-based shaping with
``Phi = -w * energy_to_go`` (``reward=mountaincar_energy_potential``, the textbook positive
control) pays for pumping energy, which is what reaching the flag takes.
"""

from __future__ import annotations

import math

import numpy as np

GRAVITY = 0.0025  # gymnasium's MountainCarEnv.gravity
GOAL_POSITION = 0.5


def energy(position: float, velocity: float) -> float:
    """Mechanical energy per unit mass in the env's units."""
    return 0.5 * velocity**2 + GRAVITY * math.sin(3 * position) / 3


_E_MIN = -GRAVITY / 3  # at rest at the bottom of the valley (sin(3x) = -1)
_E_GOAL = energy(GOAL_POSITION, 0.0)


def energy_to_go(obs: np.ndarray) -> np.ndarray:
    """``[1 - (E - E_min) / (E_goal - E_min)]`` clipped to [0, 1] for an observation ``[x, v]``."""
    x, v = (float(o) for o in np.asarray(obs, dtype=np.float64)[:2])
    fraction = (energy(x, v) - _E_MIN) / (_E_GOAL - _E_MIN)
    return np.array([min(1.0, max(0.0, 1.0 - fraction))], dtype=np.float64)
