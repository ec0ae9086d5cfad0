"""The QEU Cliff Walking task: layout, rewards, falls, fall limit, observations, determinism."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qeu_tune.envs import CLIFF_ENV_ID, make_base_env
from qeu_tune.envs.cliff_walking import N_CELLS, QEUCliffWalkingEnv, cell_index, is_cliff, obs_to_xy

UP, RIGHT, DOWN, LEFT = range(4)
# The shortest safe path: up, eleven steps right along the row above the cliff, down.
SHORTEST = [UP] + [RIGHT] * 11 + [DOWN]


def run(env: gym.Env, actions):
    """Steps through ``actions``; returns the list of (obs, reward, terminated, truncated, info)."""
    return [env.step(a) for a in actions]


def test_layout_start_goal_and_cliff_cells():
    assert [x for x in range(12) if is_cliff(x, 3)] == list(range(1, 11))
    assert not any(is_cliff(x, y) for x in range(12) for y in range(3))
    assert not is_cliff(0, 3) and not is_cliff(11, 3)  # start and goal
    assert cell_index(0, 3) == 36 and cell_index(11, 3) == 47  # Gymnasium's state = y*12 + x
    env = QEUCliffWalkingEnv(obs="xy")
    obs, info = env.reset(seed=0)
    assert obs.tolist() == [0.0, 3.0] and info["falls"] == 0


def test_env_and_knowhow_share_one_grid():
    from qeu_tune.envs.cliff_grid import CLIFF_CELLS, CLIFF_GOAL, CLIFF_START, cliff_side_points, cliff_standard_route

    cells = [(x, y) for y in range(4) for x in range(12)]
    assert [c for c in cells if is_cliff(*c)] == list(CLIFF_CELLS)
    assert cliff_side_points().negative_side.tolist() == [list(c) for c in CLIFF_CELLS]
    route = cliff_standard_route().tolist()
    assert tuple(route[0]) == CLIFF_START and tuple(route[-1]) == CLIFF_GOAL
    assert not any(is_cliff(int(x), int(y)) for x, y in route)
    env = QEUCliffWalkingEnv(obs="xy")
    assert tuple(env.reset(seed=0)[0].tolist()) == CLIFF_START
    assert tuple(env.observation_space.high.tolist()) == (11.0, 3.0)
    assert env.step(DOWN)[0].tolist() == list(CLIFF_START)  # off the grid: stays on the start


def test_registered_with_a_time_limit():
    env = gym.make(CLIFF_ENV_ID)
    assert env.spec.max_episode_steps == 500
    env.reset(seed=0)
    # Bumping into the bottom edge at the start forever: truncated (time limit), not terminated.
    for _ in range(500):
        _, reward, terminated, truncated, _ = env.step(DOWN)
        assert reward == -1.0 and not terminated
    assert truncated


def test_rewards_of_each_kind_of_move():
    env = QEUCliffWalkingEnv(obs="xy")
    env.reset(seed=0)
    steps = run(env, [LEFT, UP, RIGHT])
    assert [s[1] for s in steps] == [-1.0, -0.2, -0.2]  # off grid, then two plain moves
    assert steps[0][0].tolist() == [0.0, 3.0]  # an off-grid move stays put
    assert steps[2][0].tolist() == [1.0, 2.0]


def test_shortest_path_reaches_the_goal_and_terminates():
    env = QEUCliffWalkingEnv(obs="xy")
    env.reset(seed=0)
    steps = run(env, SHORTEST)
    rewards = [s[1] for s in steps]
    assert rewards[:-1] == [-0.2] * 12 and rewards[-1] == 2000.0
    assert [s[2] for s in steps] == [False] * 12 + [True]
    assert steps[-1][0].tolist() == [11.0, 3.0]
    assert sum(rewards) == pytest.approx(1997.6)


def test_a_fall_costs_the_cliff_reward_and_returns_to_start():
    env = QEUCliffWalkingEnv(obs="xy")
    env.reset(seed=0)
    run(env, [UP, RIGHT, RIGHT])  # at (2, 2), above the cliff
    obs, reward, terminated, truncated, info = env.step(DOWN)
    assert reward == -50.0 and obs.tolist() == [0.0, 3.0]
    assert info["falls"] == 1 and not terminated and not truncated


def test_the_fall_limit_terminates_the_episode():
    env = QEUCliffWalkingEnv(obs="xy", max_falls=3)
    env.reset(seed=0)
    steps = run(env, [RIGHT] * 3)  # from the start, RIGHT is the cliff
    assert [s[1] for s in steps] == [-50.0] * 3
    assert [s[2] for s in steps] == [False, False, True]  # game over is terminal
    assert [s[3] for s in steps] == [False] * 3
    env.reset()
    assert env.step(RIGHT)[4]["falls"] == 1  # reset clears the count


def test_no_fall_limit():
    env = QEUCliffWalkingEnv(obs="xy", max_falls=None)
    env.reset(seed=0)
    assert not any(s[2] for s in run(env, [RIGHT] * 200))


def test_configurable_rewards():
    env = QEUCliffWalkingEnv(obs="xy", goal_reward=10.0, cliff_reward=-100.0, off_grid_reward=-2.0, step_reward=-1.0)
    env.reset(seed=0)
    assert [s[1] for s in run(env, [DOWN, RIGHT])] == [-2.0, -100.0]
    env.reset(seed=0)
    assert [s[1] for s in run(env, SHORTEST)][-2:] == [-1.0, 10.0]


@pytest.mark.parametrize("cliff_reward", [-0.2, -1.0, -50.0], ids=["= step", "= off grid", "default"])
def test_a_fall_is_told_by_the_move_not_by_the_reward(cliff_reward):
    # Rewards may coincide: a fall is known from where the move came from and went to.
    env = QEUCliffWalkingEnv(obs="xy", cliff_reward=cliff_reward)
    env.reset(seed=0)
    off_grid, fall = env.step(LEFT), env.step(RIGHT)  # both from the start cell (0, 3)
    assert off_grid[0].tolist() == fall[0].tolist() == [0.0, 3.0]
    assert off_grid[4]["falls"] == 0 and fall[4]["falls"] == 1 and fall[1] == cliff_reward
    run(env, [UP, UP] + [RIGHT] * 11 + [DOWN, DOWN])  # the standard route to the goal
    # 17 steps; on the route: all but the fall (the off-grid move stays on the start cell, a route cell)
    assert env.episode_statistics()["task/route_adherence"] == pytest.approx(16 / 17)


@pytest.mark.parametrize("obs_mode, dim", [("onehot", 48), ("xy", 2), ("techno", 5)])
def test_observations_match_their_space_on_every_cell(obs_mode, dim):
    env = QEUCliffWalkingEnv(obs=obs_mode)
    assert env.observation_space.shape == (dim,)
    obs, _ = env.reset(seed=0)
    seen = [obs]
    # A serpentine over the three safe rows visits every non-cliff cell.
    for row in range(3):
        seen += [s[0] for s in run(env, [UP])]
        seen += [s[0] for s in run(env, [RIGHT if row % 2 == 0 else LEFT] * 11)]
    for o in seen:
        assert o.dtype == np.float32 and env.observation_space.contains(o), o
    xy = {tuple(obs_to_xy(o)) for o in seen}
    assert len(xy) == 1 + 36  # the start cell and the 36 cells of rows 0..2


def test_onehot_observation_is_the_cell_index():
    env = QEUCliffWalkingEnv(obs="onehot")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (N_CELLS,) and obs.sum() == 1.0 and int(np.argmax(obs)) == 36


def test_techno_observation_holds_the_qeu_distances():
    env = QEUCliffWalkingEnv(obs="techno")
    obs, _ = env.reset(seed=0)
    # At the start: on the standard route (minRT 0), at the start, and 11 columns from
    # the goal: RMS over coordinates sqrt((11^2 + 0^2) / 2).
    np.testing.assert_allclose(obs, [0, 3, 0, 0, 11 / np.sqrt(2)], rtol=1e-6)
    obs = env.step(UP)[0]  # (0, 2): one row below the route's y=1 row, still on the route
    np.testing.assert_allclose(obs[:3], [0, 2, 0])
    run(env, [RIGHT, RIGHT])  # (2, 2): off the route by one row
    obs = env.step(UP)[0]  # (2, 1): back on the route
    assert obs[2] == 0.0
    obs = env.step(UP)[0]  # (2, 0): above the route by one row
    assert obs[2] == pytest.approx(1 / np.sqrt(2))


def test_obs_to_xy_handles_every_mode_and_rejects_others():
    onehot = np.zeros(48)
    onehot[cell_index(5, 1)] = 1
    assert obs_to_xy(onehot).tolist() == [5.0, 1.0]
    assert obs_to_xy([5, 1]).tolist() == [5.0, 1.0]
    assert obs_to_xy([5, 1, 0.0, 3.5, 4.0]).tolist() == [5.0, 1.0]
    with pytest.raises(ValueError, match="length 3"):
        obs_to_xy([1, 2, 3])


def test_deterministic_given_seed():
    def trajectory(seed):
        env = make_base_env(CLIFF_ENV_ID, {"obs": "techno"})
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs]
        for _ in range(300):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            out += [obs, reward, terminated]
            if terminated or truncated:
                obs, _ = env.reset()
        return out

    a, b = trajectory(3), trajectory(3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, trajectory(4)))  # the actions differ


@pytest.mark.filterwarnings("ignore:.*render_mode='human'")  # Gymnasium warns before we raise
@pytest.mark.parametrize(
    "kwargs, match",
    [({"obs": "pixels"}, "onehot, xy, techno"), ({"max_falls": 0}, "max_falls"), ({"render_mode": "human"}, "ansi")],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_base_env(CLIFF_ENV_ID, kwargs)


def test_ansi_render_shows_agent_cliff_and_goal():
    env = QEUCliffWalkingEnv(obs="xy", render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text.splitlines()[3] == "A " + "C " * 10 + "G"


def test_make_base_env_errors_name_the_id_and_the_fix():
    with pytest.raises(ValueError, match=r"'CartPol-v1'.*CartPole-v1.*module:Class"):
        make_base_env("CartPol-v1")
    with pytest.raises(ValueError, match=r"cannot import module 'no_such_module'"):
        make_base_env("no_such_module:Env")
    with pytest.raises(ValueError, match=r"no attribute 'QEUCliffWalkingEnvv'.*QEUCliffWalkingEnv"):
        make_base_env("qeu_tune.envs.cliff_walking:QEUCliffWalkingEnvv")
    with pytest.raises(ValueError, match="env_config"):
        make_base_env("CartPole-v1", {"no_such_kwarg": 1})


def test_make_base_env_builds_module_class_and_gymnasium_ids():
    env = make_base_env("qeu_tune.envs.cliff_walking:QEUCliffWalkingEnv", {"obs": "xy"})
    assert isinstance(env, QEUCliffWalkingEnv) and env.obs_mode == "xy"
    assert make_base_env("CartPole-v1").spec.id == "CartPole-v1"
