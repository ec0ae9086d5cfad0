"""The QEU Cliff Walking task: the grid, rewards and fall limit of the QEU blog.

Layout (Gymnasium's CliffWalking coordinates: ``x`` = column 0..11 from the left, ``y`` =
row 0..3 from the top, cell index ``y * 12 + x``)::

    y=0  .  .  .  .  .  .  .  .  .  .  .  .
    y=1  .  .  .  .  .  .  .  .  .  .  .  .     <- the QEU "standard route" runs along here
    y=2  .  .  .  .  .  .  .  .  .  .  .  .
    y=3  S  C  C  C  C  C  C  C  C  C  C  G     S start (0, 3), C cliff, G goal (11, 3)

Rewards (``docs/rt_method.md`` section 2). Each transition earns exactly one of them, as in
Gymnasium's CliffWalking where the cliff penalty replaces the step cost:

* reaching the goal: ``goal_reward`` (+2000), the episode terminates;
* stepping into the cliff: ``cliff_reward`` (-50), the agent is put back on the start;
* a move off the grid: ``off_grid_reward`` (-1), the agent stays where it is;
* any other move: ``step_reward`` (-0.2).

Fall limit: after ``max_falls`` falls (50) the episode ends with ``terminated=True``.
Running out of lives is a failure state of the task (a "game over"), not an interruption
by an outside time budget: nothing more can be earned after it, so learners must not
bootstrap from the start cell the agent was thrown back to, and potential-based shaping
must treat it as terminal (``Phi = 0``). ``truncated=True`` is reserved for the time limit
(``max_episode_steps``, 500 by default), applied by Gymnasium's ``TimeLimit`` on
``gymnasium.make("QEUCliffWalking-v0")``.

Observations (``obs``):

* ``"onehot"``: the cell as a 48-way one-hot vector, ``Box(0, 1, (48,), float32)``;
* ``"xy"``: ``[x, y]``, ``Box([0, 0], [11, 3], float32)``;
* ``"techno"``: QEU's techno-metric state ``[x, y, minRT to the standard route, distance
  to the start, distance to the goal]``; the three distances use the blog's measure,
  root-mean-square over coordinates (``qeu_tune.rt.ReferenceSet``).

``obs_to_xy`` maps any of the three back to ``(x, y)``: it is the feature map the built-in
cliff reward designs use (``{"type": "callable", "path":
"qeu_tune.envs.cliff_walking:obs_to_xy"}``), so one design works with every ``obs`` mode.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import gymnasium as gym
import numpy as np

from qeu_tune.core.names import GOAL_REACHED, ROUTE_ADHERENCE

# The grid is defined once, in qeu_tune.envs.cliff_grid (the know-how loaders use it too).
from qeu_tune.envs.cliff_grid import (
    CLIFF_CELLS,
    CLIFF_GOAL,
    CLIFF_HEIGHT,
    CLIFF_START,
    CLIFF_WIDTH,
    cliff_standard_route,
    safe_steps_table,
)
from qeu_tune.rt import ReferenceSet

ENV_ID = "QEUCliffWalking-v0"
MAX_EPISODE_STEPS = 500
N_CELLS = CLIFF_HEIGHT * CLIFF_WIDTH
_CLIFF = frozenset(CLIFF_CELLS)
OBS_MODES = ("onehot", "xy", "techno")
TECHNO_FEATURES = ("x", "y", "min_rt_route", "dist_start", "dist_goal")
_ROUTE_CELLS = frozenset((int(x), int(y)) for x, y in cliff_standard_route())
# Per cell index (cell_index): is it on the standard route?
_ON_ROUTE = tuple((x, y) in _ROUTE_CELLS for y in range(CLIFF_HEIGHT) for x in range(CLIFF_WIDTH))
# Action -> (dx, dy); Gymnasium's CliffWalking order: 0 up, 1 right, 2 down, 3 left.
MOVES = ((0, -1), (1, 0), (0, 1), (-1, 0))


def cell_index(x: int, y: int) -> int:
    """The cell index ``y * 12 + x`` of column ``x`` and row ``y`` (row 0 at the top)."""
    return y * CLIFF_WIDTH + x


def is_cliff(x: int, y: int) -> bool:
    """Whether ``(x, y)`` is a cliff cell: the bottom row between start and goal."""
    return (x, y) in _CLIFF


def obs_to_xy(obs: np.ndarray) -> np.ndarray:
    """The ``(x, y)`` cell of a QEU Cliff Walking observation, in any ``obs`` mode.

    The mode is told apart by length: 48 (one-hot), 2 (``xy``, returned as is) or 5
    (``techno``, whose first two entries are ``x, y``). Because ``(x, y)`` passes through
    unchanged, the same map serves observations and reference routes given as cells.

    Args:
        obs: One observation, shape ``(48,)``, ``(2,)`` or ``(5,)``.

    Returns:
        ``float64`` array ``[x, y]``.

    Raises:
        ValueError: The length matches no observation mode.
    """
    obs = np.asarray(obs)
    if obs.size == N_CELLS:  # one-hot: the cell index is the position of the 1
        y, x = divmod(int(obs.argmax()), CLIFF_WIDTH)
        return np.array((x, y), dtype=np.float64)
    if obs.size == 2 or obs.size == len(TECHNO_FEATURES):
        return obs.reshape(-1)[:2].astype(np.float64)
    raise ValueError(
        f"obs_to_xy got a vector of length {obs.size}; QEU Cliff Walking observations have "
        f"length {N_CELLS} (obs='onehot'), 2 (obs='xy') or {len(TECHNO_FEATURES)} "
        "(obs='techno'). Use this feature map only with QEUCliffWalking-v0 observations "
        "or (x, y) cells."
    )


_SAFE_STEPS = safe_steps_table()


def safe_steps_to_goal(obs: np.ndarray) -> np.ndarray:
    """``[steps of the shortest safe path to the goal]`` of an observation (any ``obs`` mode) or
    an ``(x, y)`` cell: a feature for a potential close to the optimal value (the positive
    control ``reward=cliff_goal_potential``). 0 at the goal; the cliff cells, never occupied,
    count as the start's 13."""
    x, y = (int(v) for v in obs_to_xy(obs))
    steps = _SAFE_STEPS[y, x]
    return np.array([steps if np.isfinite(steps) else _SAFE_STEPS[CLIFF_START[1], CLIFF_START[0]]], dtype=np.float64)


def _techno_table() -> np.ndarray:
    """``[x, y, minRT route, dist start, dist goal]`` for every cell, shape ``(48, 5)``."""
    cells = np.array([(x, y) for y in range(CLIFF_HEIGHT) for x in range(CLIFF_WIDTH)], dtype=np.float64)
    route = ReferenceSet(cliff_standard_route())
    start = ReferenceSet(np.array([CLIFF_START], dtype=np.float64))
    goal = ReferenceSet(np.array([CLIFF_GOAL], dtype=np.float64))
    columns = [cells, *(np.asarray(r.distance(cells)).reshape(-1, 1) for r in (route, start, goal))]
    return np.hstack(columns)


class QEUCliffWalkingEnv(gym.Env):
    """Cliff Walking with the QEU blog's rewards, fall limit and observation choices.

    Deterministic: the start cell is fixed and moves never slip, so the same actions give
    the same trajectory for any seed.

    Args:
        obs: Observation mode, ``"onehot"``, ``"xy"`` or ``"techno"`` (see the module doc).
        goal_reward: Reward for reaching the goal (the episode terminates).
        cliff_reward: Reward for stepping into the cliff (back to the start).
        off_grid_reward: Reward for a move off the grid (the agent stays).
        step_reward: Reward for any other move.
        max_falls: Falls after which the episode terminates; ``None`` for no limit.
        render_mode: ``None`` or ``"ansi"`` (a text picture of the grid).

    Example:
        >>> import gymnasium as gym, qeu_tune.envs
        >>> env = gym.make("QEUCliffWalking-v0", obs="xy")
        >>> env.reset(seed=0)[0]
        array([0., 3.], dtype=float32)
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        obs: str = "onehot",
        goal_reward: float = 2000.0,
        cliff_reward: float = -50.0,
        off_grid_reward: float = -1.0,
        step_reward: float = -0.2,
        max_falls: Optional[int] = 50,
        render_mode: Optional[str] = None,
    ) -> None:
        if obs not in OBS_MODES:
            raise ValueError(
                f"QEUCliffWalking-v0: obs={obs!r} is not an observation mode; valid choices: "
                f"{', '.join(OBS_MODES)} (set env.env_config.obs)."
            )
        if max_falls is not None and int(max_falls) < 1:
            raise ValueError(
                f"QEUCliffWalking-v0: max_falls={max_falls!r} must be a positive integer, or null for no fall limit."
            )
        if render_mode not in (None, "ansi"):
            raise ValueError(f"QEUCliffWalking-v0: render_mode={render_mode!r} is not supported; use None or 'ansi'.")
        self.obs_mode = obs
        self.goal_reward = float(goal_reward)
        self.cliff_reward = float(cliff_reward)
        self.off_grid_reward = float(off_grid_reward)
        self.step_reward = float(step_reward)
        self.max_falls = None if max_falls is None else int(max_falls)
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(4)

        # One precomputed observation per cell: a step is a table lookup.
        if obs == "onehot":
            self._table = np.eye(N_CELLS, dtype=np.float32)
            self.observation_space = gym.spaces.Box(0.0, 1.0, (N_CELLS,), np.float32)
        elif obs == "xy":
            self._table = np.array([(x, y) for y in range(CLIFF_HEIGHT) for x in range(CLIFF_WIDTH)], dtype=np.float32)
            self.observation_space = gym.spaces.Box(
                np.zeros(2, np.float32),
                np.array([CLIFF_WIDTH - 1, CLIFF_HEIGHT - 1], np.float32),
                dtype=np.float32,
            )
        else:
            self._table = _techno_table().astype(np.float32)
            self.observation_space = gym.spaces.Box(
                np.zeros(len(TECHNO_FEATURES), np.float32), self._table.max(axis=0), dtype=np.float32
            )
        self._x, self._y = CLIFF_START
        self._falls = 0
        self._steps = self._route_steps = 0
        self._reached_goal = False

    def _observation(self) -> np.ndarray:
        return self._table[cell_index(self._x, self._y)].copy()

    def _info(self) -> Dict[str, Any]:
        return {"x": self._x, "y": self._y, "falls": self._falls}

    def reset(
        self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None
    ) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Puts the agent on the start cell with no falls counted."""
        super().reset(seed=seed)
        self._x, self._y = CLIFF_START
        self._falls = 0
        self._steps = self._route_steps = 0
        self._reached_goal = False
        return self._observation(), self._info()

    def step(self, action: int) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        """Moves one cell; see the module doc for rewards and termination."""
        if not self.action_space.contains(action):
            raise ValueError(f"QEUCliffWalking-v0: action {action!r} is not in {self.action_space}.")
        dx, dy = MOVES[int(action)]
        x, y = self._x + dx, self._y + dy  # where the move leads from (self._x, self._y)
        # A fall is a fact of the move (its target is a cliff cell), never inferred from the
        # reward: configured rewards may coincide (cliff_reward == step_reward) and reward
        # designs wrap the env, so only the positions tell.
        fell = is_cliff(x, y)
        terminated = False
        if not (0 <= x < CLIFF_WIDTH and 0 <= y < CLIFF_HEIGHT):
            reward = self.off_grid_reward
        elif fell:
            reward = self.cliff_reward
            self._x, self._y = CLIFF_START
            self._falls += 1
            terminated = self.max_falls is not None and self._falls >= self.max_falls
        else:
            self._x, self._y = x, y
            if (x, y) == CLIFF_GOAL:
                reward, terminated = self.goal_reward, True
            else:
                reward = self.step_reward
        self._steps += 1
        # On the route: the step ends on a route cell without a fall (a fall ends on the
        # start cell, which is on the route, but is the opposite of following it).
        if not fell and _ON_ROUTE[cell_index(self._x, self._y)]:
            self._route_steps += 1
        self._reached_goal = self._reached_goal or (self._x, self._y) == CLIFF_GOAL
        return self._observation(), reward, terminated, False, self._info()

    def episode_statistics(self) -> Dict[str, float]:
        """The episode so far: route adherence (the fraction of steps that ended on the
        standard route without a fall) and whether it reached the goal (1 or 0).

        Example:
            >>> env = QEUCliffWalkingEnv(obs="xy")
            >>> _ = env.reset()
            >>> for action in [0, 0] + [1] * 11 + [2, 2]:  # up, up, right x 11, down, down
            ...     _ = env.step(action)
            >>> env.episode_statistics()
            {'task/route_adherence': 1.0, 'task/goal_reached': 1.0}
        """
        adherence = self._route_steps / self._steps if self._steps else float("nan")
        return {ROUTE_ADHERENCE: adherence, GOAL_REACHED: float(self._reached_goal)}

    def render(self) -> Optional[str]:
        """The grid as text (``render_mode="ansi"``): ``A`` agent, ``C`` cliff, ``G`` goal."""
        if self.render_mode != "ansi":
            return None
        rows = []
        for y in range(CLIFF_HEIGHT):
            cells = []
            for x in range(CLIFF_WIDTH):
                if (x, y) == (self._x, self._y):
                    cells.append("A")
                elif is_cliff(x, y):
                    cells.append("C")
                elif (x, y) == CLIFF_GOAL:
                    cells.append("G")
                else:
                    cells.append(".")
            rows.append(" ".join(cells))
        return "\n".join(rows) + "\n"
