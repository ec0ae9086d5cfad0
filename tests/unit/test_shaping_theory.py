"""Reward-shaping theory on a tiny deterministic MDP solved exactly by value iteration.

The MDP is a 3 x 4 cliff walk. The know-how is a "standard route" over the top row, longer
than the optimal path through the middle row. Shaped rewards come from the real machinery:
``build_metric`` (a ``list`` know-how source, the cliff ``obs_to_xy`` feature map, a QEU
minRT ``ReferenceSet``) inside ``RewardDesignWrapper``. The claims (Ng, Harada & Russell
1999; ``docs/rt_method.md`` section 3):

* potential-based shaping leaves the optimal policy unchanged for every weight, because
  ``Q'(s, a) = Q(s, a) - Phi(s)`` exactly;
* additive feedback ``r - w m(s')`` changes the task: a large enough weight makes the
  standard route optimal.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import gymnasium as gym
import numpy as np
import pytest

from qeu_tune.reward import FittedMetric, RewardDesignWrapper, build_metric

UP, RIGHT, DOWN, LEFT = range(4)
MOVES = ((0, -1), (1, 0), (0, 1), (-1, 0))
COLS, ROWS = 4, 3
START, GOAL = (0, 2), (3, 2)
CLIFF = {(1, 2), (2, 2)}
CELLS = [(x, y) for y in range(ROWS) for x in range(COLS) if (x, y) not in CLIFF]
GAMMA = 0.9
# Up the left edge, along the top row, down the right edge. The goal itself is left out,
# so Phi(goal) would be non-zero if the wrapper did not zero it at the terminal state.
ROUTE = [[0, 2], [0, 1], [0, 0], [1, 0], [2, 0], [3, 0], [3, 1]]
METRIC = {
    "kind": "reference",
    "source": {"type": "list", "points": ROUTE},
    "feature": {"type": "callable", "path": "qeu_tune.envs.cliff_walking:obs_to_xy"},
}


class TinyCliff(gym.Env):
    """3 x 4 cliff walk: step -1, cliff -10 (back to start), goal +10 (terminal).

    ``reset(options={"cell": (x, y)})`` starts anywhere, so every (state, action) pair's
    shaped reward can be read off the wrapper.
    """

    observation_space = gym.spaces.Box(0.0, 3.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(4)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self.cell = tuple((options or {}).get("cell", START))
        return np.array(self.cell, np.float32), {}

    def step(self, action: int):
        x, y = self.cell[0] + MOVES[action][0], self.cell[1] + MOVES[action][1]
        if not (0 <= x < COLS and 0 <= y < ROWS):
            return np.array(self.cell, np.float32), -1.0, False, False, {}
        if (x, y) in CLIFF:
            self.cell = START
            return np.array(START, np.float32), -10.0, False, False, {}
        self.cell = (x, y)
        terminated = self.cell == GOAL
        return np.array(self.cell, np.float32), 10.0 if terminated else -1.0, terminated, False, {}


def transition_table(env: gym.Env) -> Dict[Tuple[Tuple[int, int], int], Tuple[float, Tuple[int, int], bool]]:
    """(cell, action) -> (reward as the env returns it, next cell, terminated)."""
    table = {}
    for cell in CELLS:
        if cell == GOAL:
            continue
        for a in range(4):
            env.reset(options={"cell": cell})
            obs, reward, terminated, _, _ = env.step(a)
            table[cell, a] = (float(reward), (int(obs[0]), int(obs[1])), terminated)
    return table


def solve(env: gym.Env) -> np.ndarray:
    """Optimal Q values by value iteration, rows in ``CELLS`` order (goal row unused)."""
    table = transition_table(env)
    index = {cell: i for i, cell in enumerate(CELLS)}
    V = np.zeros(len(CELLS))
    Q = np.zeros((len(CELLS), 4))
    for _ in range(2000):
        for (cell, a), (reward, nxt, terminated) in table.items():
            Q[index[cell], a] = reward + (0.0 if terminated else GAMMA * V[index[nxt]])
        V_new = Q.max(axis=1)
        V_new[index[GOAL]] = 0.0
        if np.max(np.abs(V_new - V)) < 1e-13:
            break
        V = V_new
    return Q


def greedy_sets(Q: np.ndarray) -> List[frozenset]:
    """Optimal actions of each non-goal cell (ties within rounding kept together)."""
    tol = 1e-9 * max(1.0, float(np.abs(Q).max()))
    return [frozenset(np.flatnonzero(Q[i] >= Q[i].max() - tol)) for i, c in enumerate(CELLS) if c != GOAL]


def greedy_path(Q: np.ndarray) -> List[Tuple[int, int]]:
    index = {cell: i for i, cell in enumerate(CELLS)}
    env, path = TinyCliff(), [START]
    env.reset()
    while path[-1] != GOAL and len(path) < 20:
        obs = env.step(int(np.argmax(Q[index[path[-1]]])))[0]
        path.append((int(obs[0]), int(obs[1])))
    return path


def shaped(mode: str, weight: float) -> Tuple[RewardDesignWrapper, FittedMetric]:
    """TinyCliff with the route metric fed back in ``mode``, and the metric itself."""
    metric = build_metric("route", {**METRIC, "weight": weight})
    env = RewardDesignWrapper(TinyCliff(), {"route": metric}, {"route": weight}, mode=mode, gamma=GAMMA)
    return env, metric


Q_ENV = solve(TinyCliff())
SHORT_PATH = [(0, 2), (0, 1), (1, 1), (2, 1), (3, 1), (3, 2)]
ROUTE_PATH = [tuple(c) for c in ROUTE] + [GOAL]


def test_the_unshaped_optimum_is_the_short_path_off_the_route():
    assert greedy_path(Q_ENV) == SHORT_PATH


@pytest.mark.parametrize("weight", [0.01, 0.3, 1.0, 10.0, 1000.0])
def test_potential_shaping_keeps_the_optimal_policy_for_every_weight(weight):
    env, metric = shaped("potential", weight)
    Q = solve(env)
    phi = np.array([-weight * metric(np.array(c, np.float64)) for c in CELLS])
    phi[CELLS.index(GOAL)] = 0.0
    assert np.abs(phi).max() > 0  # the shaping is not trivially zero
    # Q'(s, a) = Q(s, a) - Phi(s): every action of a state shifts by the same amount.
    np.testing.assert_allclose(Q + phi[:, None], Q_ENV, rtol=0, atol=1e-9 * max(1.0, weight))
    assert greedy_sets(Q) == greedy_sets(Q_ENV)
    assert greedy_path(Q) == SHORT_PATH


def test_additive_feedback_with_a_large_weight_changes_the_optimal_policy():
    small = solve(shaped("additive", 0.01)[0])
    # A small weight only breaks ties (cells with two equally short ways to the goal):
    # the path from the start is still the short one.
    assert greedy_path(small) == SHORT_PATH
    large = solve(shaped("additive", 10.0)[0])
    assert greedy_sets(large) != greedy_sets(Q_ENV)
    assert greedy_path(large) == ROUTE_PATH  # the stakeholder's route has become optimal
