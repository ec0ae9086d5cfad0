"""Route adherence and goal statistics of Cliff Walking, on hand-made policies."""

from __future__ import annotations

import pytest

from qeu_tune.core import names
from qeu_tune.envs import CLIFF_ENV_ID
from qeu_tune.reward import make_env

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
ROUTE_WALK = [UP, UP] + [RIGHT] * 11 + [DOWN, DOWN]  # the standard route, 15 moves
EDGE_WALK = [UP] + [RIGHT] * 11 + [DOWN]  # the shortest path, along the cliff's edge
ABSOLUTE = {
    "mode": "additive",
    "metrics": {
        "route": {
            "kind": "reference",
            "weight": 0.5,
            "source": {"type": "builtin", "name": "cliff_standard_route"},
            "feature": {"type": "callable", "path": "qeu_tune.envs.cliff_walking:obs_to_xy"},
        }
    },
}


def episode_end(actions, reward=None, **env_config):
    env = make_env(CLIFF_ENV_ID, {"obs": "xy", **env_config}, reward, gamma=0.99)
    env.reset(seed=0)
    for t, action in enumerate(actions):
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return t + 1, info[names.EPISODE_INFO_KEY]
    raise AssertionError("the episode did not end")


@pytest.mark.parametrize("reward", [None, ABSOLUTE], ids=["no design", "with a design"])
def test_walking_the_route_has_adherence_one(reward):
    steps, stats = episode_end(ROUTE_WALK, reward)
    assert steps == 15
    assert stats[names.ROUTE_ADHERENCE] == 1.0 and stats[names.GOAL_REACHED] == 1.0


def test_the_cliff_edge_walk_is_on_the_route_for_three_of_thirteen_steps():
    # (0, 2), (11, 2) and the goal (11, 3) are route cells; (1..10, 2) are not.
    steps, stats = episode_end(EDGE_WALK)
    assert steps == 13
    assert stats[names.ROUTE_ADHERENCE] == pytest.approx(3 / 13) and stats[names.GOAL_REACHED] == 1.0


def test_a_fall_is_off_the_route_although_it_lands_on_the_start():
    # Right from the start is the cliff: back to (0, 3), a route cell, but not followed.
    steps, stats = episode_end([RIGHT] * 2, max_falls=2)
    assert steps == 2
    assert stats[names.ROUTE_ADHERENCE] == 0.0 and stats[names.GOAL_REACHED] == 0.0


def test_a_truncated_episode_reports_too():
    # Up to (0, 1) on the route, then the time limit: 2 of 2 steps on the route.
    steps, stats = episode_end([UP, UP, UP], max_episode_steps=2)
    assert steps == 2
    assert stats[names.ROUTE_ADHERENCE] == 1.0 and stats[names.GOAL_REACHED] == 0.0
