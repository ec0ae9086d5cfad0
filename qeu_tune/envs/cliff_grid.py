"""The QEU Cliff Walking grid: its size, start, goal and cliff, the standard route and the
two sides of signed minRT. Numpy only; the one definition, used by the know-how loaders
(``qeu_tune.reward.sources``, which re-exports these names) and by the environment
(``qeu_tune.envs.cliff_walking``), so neither imports the other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "CLIFF_WIDTH",
    "CLIFF_HEIGHT",
    "CLIFF_START",
    "CLIFF_GOAL",
    "CLIFF_CELLS",
    "CliffSides",
    "cliff_standard_route",
    "cliff_side_points",
    "safe_steps_table",
]

# --------------------------------------------------------------------------- Cliff Walking
# The grid, as ``(x, y)`` cells with ``y = 0`` the top row. The one definition, also used by
# ``qeu_tune.envs.cliff_walking`` (this module does not import Gymnasium, that one does).
CLIFF_WIDTH, CLIFF_HEIGHT = 12, 4
CLIFF_START = (0, CLIFF_HEIGHT - 1)
CLIFF_GOAL = (CLIFF_WIDTH - 1, CLIFF_HEIGHT - 1)
# The bottom row between start and goal: (1, 3) .. (10, 3).
CLIFF_CELLS = tuple((x, CLIFF_HEIGHT - 1) for x in range(1, CLIFF_WIDTH - 1))


def cliff_standard_route() -> np.ndarray:
    """QEU's standard Cliff Walking route as ``(x, y)`` cells, shape ``(16, 2)``.

    ``x`` is the column (0..11, left to right), ``y`` the row (0..3, from the top). The
    route leaves the start ``(0, 3)`` upwards to ``y = 1``, follows that row to ``x = 11``
    and comes down to the goal ``(11, 3)``: deliberately not the shortest path, it keeps a
    row between the agent and the cliff.

    Example:
        >>> route = cliff_standard_route()
        >>> route[:4].tolist(), route[-1].tolist()
        ([[0.0, 3.0], [0.0, 2.0], [0.0, 1.0], [1.0, 1.0]], [11.0, 3.0])
    """
    x0, y_start = CLIFF_START
    x_goal, _ = CLIFF_GOAL
    up = [(x0, y) for y in range(y_start, 0, -1)]  # (0,3), (0,2), (0,1)
    along = [(x, 1) for x in range(x0 + 1, x_goal + 1)]  # (1,1) .. (11,1)
    down = [(x_goal, y) for y in range(2, y_start + 1)]  # (11,2), (11,3)
    return np.array(up + along + down, dtype=np.float64)


def _cliff_cells() -> np.ndarray:
    return np.array(CLIFF_CELLS, dtype=np.float64)


def _cliff_top_row() -> np.ndarray:
    return np.array([(x, 0) for x in range(CLIFF_WIDTH)], dtype=np.float64)


class CliffSides(NamedTuple):
    """The two sides of the Cliff Walking route, as ``(x, y)`` cells."""

    negative_side: np.ndarray  # the cliff cells (1..10, 3)
    positive_side: np.ndarray  # the top row (0..11, 0)


def cliff_side_points() -> CliffSides:
    """The two sides of the Cliff Walking route for signed minRT.

    Returns:
        ``(negative_side, positive_side)``: the cliff cells ``(1..10, 3)`` and the top-row
        cells ``(0..11, 0)``, as ``(x, y)`` cells (also by name, e.g. ``.negative_side``).

    Example:
        >>> from qeu_tune.rt import ReferenceSet
        >>> neg, pos = cliff_side_points()
        >>> ref = ReferenceSet(cliff_standard_route(), negative_side=neg, positive_side=pos)
        >>> float(ref.signed_distance([5, 2])) < 0 < float(ref.signed_distance([5, 0]))
        True
    """
    return CliffSides(_cliff_cells(), _cliff_top_row())


def safe_steps_table() -> np.ndarray:
    """Steps of the shortest path from each cell to the goal that never enters the cliff.

    Returns:
        ``(CLIFF_HEIGHT, CLIFF_WIDTH)`` array indexed ``[y, x]``; cliff cells are ``inf``.
        From the start it is 13 (up, 11 right, down), not the 11 of the Manhattan distance.
    """
    steps = np.full((CLIFF_HEIGHT, CLIFF_WIDTH), np.inf)
    cliff = set(CLIFF_CELLS)
    frontier = [CLIFF_GOAL]
    steps[CLIFF_GOAL[1], CLIFF_GOAL[0]] = 0
    while frontier:  # breadth-first from the goal over the safe cells
        x, y = frontier.pop(0)
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if 0 <= nx < CLIFF_WIDTH and 0 <= ny < CLIFF_HEIGHT and (nx, ny) not in cliff and np.isinf(steps[ny, nx]):
                steps[ny, nx] = steps[y, x] + 1
                frontier.append((nx, ny))
    return steps
