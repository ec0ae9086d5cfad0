"""The reward-design wrapper, ``make_env`` and the reward config's validation."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.wrappers.vector import DictInfoToList

from qeu_tune.core.names import EPISODE_INFO_KEY
from qeu_tune.envs import CLIFF_ENV_ID, make_base_env
from qeu_tune.reward import (
    RewardConfig,
    RewardDesignWrapper,
    build_metric,
    clear_metric_cache,
    episode_info_keys,
    make_env,
    parse_reward_config,
)

CONF_REWARD = Path(__file__).resolve().parents[2] / "conf" / "reward"
UP, RIGHT, DOWN, LEFT = range(4)
SHORTEST = [UP] + [RIGHT] * 11 + [DOWN]
XY = {"type": "callable", "path": "qeu_tune.envs.cliff_walking:obs_to_xy"}
# A reference set given in the config: the row above the cliff (y = 2).
ROW2 = {"type": "list", "points": [[x, 2] for x in range(12)]}
GAMMA = 0.9


def reward_yaml(name: str) -> dict:
    """A conf/reward file as the plain dict a trial receives (Hydra's defaults list dropped)."""
    data = yaml.safe_load((CONF_REWARD / f"{name}.yaml").read_text())
    data.pop("defaults", None)
    return data


def design(mode: str, weight: float = 0.5, **metric) -> dict:
    spec = {"kind": "reference", "weight": weight, "source": ROW2, "feature": XY, **metric}
    return {"name": "test", "mode": mode, "metrics": {"row2": spec}}


def rollout(env: gym.Env, actions, seed: int = 0):
    """Resets with ``seed`` and steps ``actions`` until the episode ends; returns the steps."""
    env.reset(seed=seed)
    steps = []
    for a in actions:
        steps.append(env.step(a))
        if steps[-1][2] or steps[-1][3]:
            break
    return steps


RANDOM_ACTIONS = np.random.default_rng(0).integers(0, 4, size=500).tolist()


@pytest.mark.parametrize("name", ["cliff_signed", "cliff_absolute", "cliff_potential"])
def test_components_add_up_to_the_returned_reward(name):
    env = make_env(CLIFF_ENV_ID, {"obs": "onehot"}, reward_yaml(name), gamma=GAMMA)
    steps = rollout(env, RANDOM_ACTIONS)
    assert len(steps) > 20
    for _, reward, _, _, info in steps:
        assert reward == info["reward/env"] + info["reward/route"]  # summed in this order
    assert any(info["reward/route"] != 0.0 for *_, info in steps)


@pytest.mark.parametrize("mode", ["additive", "potential"])
def test_unshaped_return_equals_the_unwrapped_envs_return(mode):
    base = make_base_env(CLIFF_ENV_ID, {"obs": "xy", "max_falls": 5})
    wrapped = make_env(CLIFF_ENV_ID, {"obs": "xy", "max_falls": 5}, design(mode), gamma=GAMMA)
    plain = rollout(base, RANDOM_ACTIONS, seed=7)
    shaped = rollout(wrapped, RANDOM_ACTIONS, seed=7)
    assert len(plain) == len(shaped)
    assert [s[1] for s in plain] == [s[4]["reward/env"] for s in shaped]
    for p, s in zip(plain, shaped):
        np.testing.assert_array_equal(p[0], s[0])  # no augmentation: same observations
    stats = shaped[-1][4][EPISODE_INFO_KEY]
    assert stats["return_env"] == pytest.approx(sum(s[1] for s in plain), abs=1e-9)
    assert stats["return_shaped"] == pytest.approx(sum(s[1] for s in shaped), abs=1e-9)


def test_additive_component_is_minus_weight_times_metric_of_the_next_state():
    env = make_env(CLIFF_ENV_ID, {"obs": "xy"}, design("additive", weight=2.0), gamma=GAMMA)
    steps = rollout(env, [UP, UP, UP])  # (0,2) on row 2, then (0,1) and (0,0): 1 and 2 rows off
    assert [s[4]["rt/row2"] for s in steps] == pytest.approx([0.0, 1 / math.sqrt(2), 2 / math.sqrt(2)])
    assert [s[4]["reward/row2"] for s in steps] == pytest.approx([0.0, -2 / math.sqrt(2), -4 / math.sqrt(2)])


def row2_distance(y: int) -> float:
    """minRT of any cell in row ``y`` to row 2: RMS over (x, y) of (0, y - 2)."""
    return abs(y - 2) / math.sqrt(2)


def test_potential_is_zero_at_a_terminal_state_and_telescopes():
    w = 3.0
    env = make_env(CLIFF_ENV_ID, {"obs": "xy"}, design("potential", weight=w), gamma=GAMMA)
    # Up to the top row, along it, down to the goal: rows 3, 2, 1, 0 x 12, 1, 2, 3.
    actions = [UP, UP, UP] + [RIGHT] * 11 + [DOWN] * 3
    rows = [3, 2, 1] + [0] * 12 + [1, 2, 3]
    steps = rollout(env, actions)
    assert steps[-1][2] and len(steps) == len(actions)  # terminated at the goal
    m = [row2_distance(y) for y in rows]
    assert [s[4]["rt/row2"] for s in steps] == pytest.approx(m[1:])
    phi = [-w * v for v in m[:-1]] + [0.0]  # Phi(terminal) = 0, though the goal is off row 2
    for t, (_, _, _, _, info) in enumerate(steps):
        assert info["reward/row2"] == pytest.approx(GAMMA * phi[t + 1] - phi[t])
    assert steps[-1][4]["reward/row2"] == pytest.approx(w * row2_distance(2))  # -Phi(s_T-1) only
    # The discounted shaping of a terminated episode telescopes to -Phi(s_0).
    discounted = sum(GAMMA**t * s[4]["reward/row2"] for t, s in enumerate(steps))
    assert discounted == pytest.approx(w * row2_distance(3))


def test_potential_keeps_the_true_potential_at_a_time_limit():
    w = 2.0
    env_config = {"obs": "xy", "max_episode_steps": 2}  # passed on to gymnasium.make
    env = make_env(CLIFF_ENV_ID, env_config, design("potential", weight=w), gamma=GAMMA)
    steps = rollout(env, [UP, UP])  # (0, 2) on row 2, then (0, 1): truncated there
    assert steps[-1][3] and not steps[-1][2]
    # gamma * Phi(s') - Phi(s) with the true Phi(s') = -w * m((0, 1)), and Phi((0, 2)) = 0.
    assert steps[-1][4]["reward/row2"] == pytest.approx(-GAMMA * w * row2_distance(1))


def design_keys(stats):
    """The reward design's keys of an episode's statistics (without the env's task/ ones)."""
    return [k for k in stats if not k.startswith("task/")]


def test_episode_info_has_every_key_with_consistent_statistics():
    env = make_env(CLIFF_ENV_ID, {"obs": "techno", "max_falls": 3}, design("additive", weight=0.7), gamma=GAMMA)
    steps = rollout(env, RANDOM_ACTIONS, seed=1)
    assert all(EPISODE_INFO_KEY not in s[4] for s in steps[:-1])
    stats = dict(steps[-1][4][EPISODE_INFO_KEY])
    # The base env's task statistics come first (qeu_tune.envs.task_stats), then the design's.
    adherence, goal = stats.pop("task/route_adherence"), stats.pop("task/goal_reached")
    assert 0.0 <= adherence <= 1.0 and goal in (0.0, 1.0)
    assert list(stats) == episode_info_keys(["row2"])
    assert all(type(v) is float for v in stats.values())
    values = [s[4]["rt/row2"] for s in steps]
    assert stats["episode/len"] == len(steps)
    assert stats["rt/row2/mean"] == pytest.approx(np.mean(values))
    assert (stats["rt/row2/min"], stats["rt/row2/max"]) == (min(values), max(values))
    assert stats["reward/row2/sum"] == pytest.approx(-0.7 * sum(values))
    assert stats["reward/env/sum"] == stats["return_env"]
    assert stats["return_shaped"] == pytest.approx(stats["return_env"] + stats["reward/row2/sum"])
    # The next episode starts from fresh statistics.
    steps = rollout(env, SHORTEST)
    assert steps[-1][4][EPISODE_INFO_KEY]["episode/len"] == len(SHORTEST)
    assert steps[-1][4][EPISODE_INFO_KEY]["return_env"] == pytest.approx(1997.6)


@pytest.mark.parametrize("obs_mode", ["onehot", "xy", "techno"])
def test_augmented_observations_match_the_declared_space(obs_mode):
    reward = {**reward_yaml("cliff_signed"), "augment_observation": True}
    env = make_env(CLIFF_ENV_ID, {"obs": obs_mode}, reward, gamma=GAMMA)
    base_dim = make_base_env(CLIFF_ENV_ID, {"obs": obs_mode}).observation_space.shape[0]
    assert env.observation_space.shape == (base_dim + 1,)
    assert env.observation_space.low[-1] == -np.inf  # a signed metric has no lower bound
    obs, _ = env.reset(seed=0)
    observations = [obs] + [s[0] for s in rollout(env, RANDOM_ACTIONS)]
    for o in observations:
        assert env.observation_space.contains(o), o
    signs = {np.sign(o[-1]) for o in observations}
    assert -1.0 in signs  # the cliff side of the route was visited: signed values appear


@pytest.mark.parametrize("mode", ["additive", "potential"])
def test_the_appended_value_is_the_metric_of_the_new_state(mode):
    env = make_env(CLIFF_ENV_ID, {"obs": "xy"}, {**design(mode), "augment_observation": True}, gamma=GAMMA)
    obs, _ = env.reset(seed=0)
    assert obs[-1] == pytest.approx(row2_distance(3))  # m(s_0) at the start (0, 3)
    # (0, 3) -> (0, 2) on row 2 -> (0, 1) -> (0, 0): m(s') differs from m(s) on every step.
    rows = [2, 1, 0]
    for y, (obs, _, _, _, info) in zip(rows, rollout(env, [UP, UP, UP])):
        assert tuple(obs[:2]) == (0.0, y)
        assert obs[-1] == pytest.approx(info["rt/row2"], rel=1e-6)  # float32 in the obs
        assert info["rt/row2"] == pytest.approx(row2_distance(y))
    assert obs[-1] == pytest.approx(2 / math.sqrt(2), rel=1e-6) and obs[-1] != 0.0


def test_augmenting_a_discrete_observation_one_hot_encodes_it():
    base = gym.make("CliffWalking-v1")
    env = RewardDesignWrapper(
        base,
        {"col": lambda s: float(s % 12)},
        {"col": 0.1},
        augment_observation=True,
        metric_bounds={"col": (0.0, 11.0)},
    )
    assert env.observation_space == gym.spaces.Box(
        np.zeros(49, np.float32), np.r_[np.ones(48), 11.0].astype(np.float32), dtype=np.float32
    )
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs[36] == 1.0 and obs[-1] == 0.0
    obs = env.step(0)[0]  # up: state 24
    assert obs[24] == 1.0 and obs[:48].sum() == 1.0 and obs[-1] == 0.0


def test_augmenting_an_unsupported_space_is_a_clear_error():
    class TupleObs(gym.Env):
        observation_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))
        action_space = gym.spaces.Discrete(2)

    with pytest.raises(ValueError, match="Box or Discrete"):
        RewardDesignWrapper(TupleObs(), {"m": lambda o: 0.0}, {"m": 1.0}, augment_observation=True)


def test_works_under_a_gymnasium_sync_vector_env_as_rllib_uses_it():
    reward = reward_yaml("cliff_absolute")
    # RLlib's SingleAgentEnvRunner: gym.make_vec(...) inside DictInfoToList.
    envs = DictInfoToList(
        gym.vector.SyncVectorEnv([lambda: make_env(CLIFF_ENV_ID, {"max_falls": 2}, reward, gamma=GAMMA)] * 2)
    )
    envs.reset(seed=[0, 1])
    # Env 0 falls twice (episode ends at step 2); env 1 walks up and stays alive.
    ended, done = [], np.zeros(2, bool)
    for t, actions in enumerate([[RIGHT, UP], [RIGHT, UP], [LEFT, DOWN]]):
        _, rewards, terms, truncs, infos = envs.step(np.array(actions))
        assert len(infos) == 2
        for i in range(2):
            if done[i]:  # Gymnasium's next-step autoreset: this step only reset env i
                assert "reward/env" not in infos[i] and rewards[i] == 0.0
                continue
            assert rewards[i] == infos[i]["reward/env"] + infos[i]["reward/route"]
            if EPISODE_INFO_KEY in infos[i]:
                ended.append((t, i, infos[i][EPISODE_INFO_KEY]))
        done = terms | truncs
    assert [(t, i) for t, i, _ in ended] == [(1, 0)]
    stats = ended[0][2]
    assert set(design_keys(stats)) == set(episode_info_keys(["route"]))
    assert stats["return_env"] == pytest.approx(-100.0) and stats["episode/len"] == 2.0
    envs.close()


@pytest.mark.parametrize("mode", ["additive", "potential"])
def test_step_info_false_keeps_only_the_episode_statistics(mode):
    env_config = {"obs": "xy", "max_falls": 3}
    full = rollout(make_env(CLIFF_ENV_ID, env_config, design(mode), gamma=GAMMA), RANDOM_ACTIONS, seed=3)
    lean_env = make_env(CLIFF_ENV_ID, env_config, {**design(mode), "step_info": False}, gamma=GAMMA)
    assert lean_env.step_info is False
    lean = rollout(lean_env, RANDOM_ACTIONS, seed=3)
    plain = rollout(make_base_env(CLIFF_ENV_ID, env_config), RANDOM_ACTIONS, seed=3)
    assert len(full) == len(lean) == len(plain) > 5
    per_step = {"reward/env", "reward/row2", "rt/row2"}
    for f, s, p in zip(full, lean, plain):
        assert per_step <= set(f[4])  # the default (step_info: true) reports every step
        assert s[1] == f[1]  # same shaped reward
        np.testing.assert_array_equal(s[0], f[0])
        assert {k: v for k, v in s[4].items() if k != EPISODE_INFO_KEY} == p[4]  # the env's own info
    assert all(EPISODE_INFO_KEY not in s[4] for s in lean[:-1])
    assert lean[-1][4][EPISODE_INFO_KEY] == full[-1][4][EPISODE_INFO_KEY]
    assert design_keys(lean[-1][4][EPISODE_INFO_KEY]) == episode_info_keys(["row2"])


def test_step_info_false_under_a_sync_vector_env():
    reward = {**reward_yaml("cliff_absolute"), "step_info": False}
    envs = DictInfoToList(
        gym.vector.SyncVectorEnv([lambda: make_env(CLIFF_ENV_ID, {"max_falls": 2}, reward, gamma=GAMMA)] * 2)
    )
    envs.reset(seed=[0, 1])
    for actions in ([RIGHT, UP], [RIGHT, UP]):  # env 0 falls twice: its episode ends on step 2
        _, _, terms, _, infos = envs.step(np.array(actions))
    assert terms.tolist() == [True, False]
    assert set(infos[0]) == {"x", "y", "falls", EPISODE_INFO_KEY} and set(infos[1]) == {"x", "y", "falls"}
    stats = infos[0][EPISODE_INFO_KEY]
    assert design_keys(stats) == episode_info_keys(["route"]) and stats["return_env"] == pytest.approx(-100.0)
    envs.close()


def test_mode_none_returns_the_base_env_unwrapped():
    for reward in (None, {"name": "none", "mode": "none", "metrics": {}}, RewardConfig()):
        env = make_env("CartPole-v1", {}, reward, gamma=0.99)
        assert not isinstance(env, RewardDesignWrapper) and env.spec.id == "CartPole-v1"


def test_a_design_sets_its_own_gamma_over_the_algorithms():
    env = make_env(CLIFF_ENV_ID, {}, {**design("potential"), "gamma": 0.5}, gamma=0.99)
    assert env.gamma == 0.5
    assert make_env(CLIFF_ENV_ID, {}, design("potential"), gamma=0.99).gamma == 0.99


def test_fitted_metrics_are_cached_across_weights_and_envs():
    a = build_metric("row2", design("additive", weight=0.1)["metrics"]["row2"])
    b = build_metric("row2", design("additive", weight=5.0, absolute=True)["metrics"]["row2"])
    assert a.model is b.model and a.feature_map is b.feature_map
    # absolute is a label: an unsigned metric is a distance >= 0 with or without it.
    cell = np.array([4.0, 0.0])
    assert a(cell) == b(cell) == pytest.approx(row2_distance(0)) and a.bounds == b.bounds == (0.0, math.inf)
    c = build_metric(
        "row2", {**design("additive")["metrics"]["row2"], "source": {"type": "list", "points": [[0, 0], [1, 0]]}}
    )
    assert c.model is not a.model


def test_a_cached_fit_is_shared_but_each_metric_keeps_its_own_name():
    clear_metric_cache()
    spec = design("additive")["metrics"]["row2"]
    first = build_metric("first", spec)
    second = build_metric("second", spec)
    assert (first.name, second.name) == ("first", "second")
    assert second.model is first.model and second.feature_map is first.feature_map  # one fit
    # An error about the second metric names the second metric, not the cached first one.
    with pytest.raises(ValueError, match=r"^reward\.metrics\.second: the feature map"):
        make_env("CartPole-v1", {}, {"mode": "additive", "metrics": {"second": spec}}, gamma=0.99)
    clear_metric_cache()
    assert build_metric("first", spec).model is not first.model  # refitted after clearing


@pytest.mark.parametrize("path", sorted(CONF_REWARD.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_reward_file_validates_and_is_named_after_itself(path):
    data = reward_yaml(path.stem)
    cfg = parse_reward_config(data)
    assert cfg.name == path.stem


@pytest.mark.parametrize(
    "name, env_id",
    [("cliff_signed", CLIFF_ENV_ID), ("cartpole_rt", "CartPole-v1"), ("mountaincar_rt", "MountainCar-v0")],
)
def test_builtin_designs_build_on_their_env(name, env_id):
    env = make_env(env_id, {}, reward_yaml(name), gamma=0.99)
    steps = rollout(env, [env.action_space.sample() for _ in range(50)])
    assert all(math.isfinite(s[1]) for s in steps)
    env.close()


def test_a_feature_map_that_does_not_fit_the_observations_is_a_clear_error():
    reward = design("additive")
    reward["metrics"]["row2"]["feature"] = {"type": "identity"}  # CartPole obs: 4 values, route: 2
    with pytest.raises(ValueError, match=r"reward\.metrics\.row2: the feature map .*identity.*Box"):
        make_env("CartPole-v1", {}, reward, gamma=0.99)


def test_a_source_that_cannot_be_loaded_is_a_clear_error():
    reward = design("additive")
    reward["metrics"]["row2"]["source"] = {"type": "file", "path": "/no/such/route.csv"}
    with pytest.raises(ValueError, match=r"reward\.metrics\.row2 .*route\.csv"):
        make_env(CLIFF_ENV_ID, {}, reward, gamma=0.99)


def _metric(**changes):
    return {"name": "x", "mode": "additive", "metrics": {"m": {**design("additive")["metrics"]["row2"], **changes}}}


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"mode": "multiplicative", "metrics": {}}, r"reward\.mode='multiplicative'.*none, additive, potential"),
        ({"mode": "additive", "metrics": {}}, r"needs at least one metric.*reward=none"),
        ({"mode": "none", "augment_observation": True}, "augment_observation"),
        ({"mode": "none", "weights": {}}, r"unknown key\(s\) weights; valid keys: name, mode"),
        ({"mode": "potential", "gamma": 1.5, "metrics": {}}, r"reward\.gamma=1\.5 .*\(0, 1\]"),
        (_metric(kind="mahalanobis"), r"reward\.metrics\.m\.kind='mahalanobis'.*unit_space, reference"),
        (_metric(weight=-0.3), r"reward\.metrics\.m\.weight=-0\.3 is negative"),
        (_metric(weight="high"), r"reward\.metrics\.m\.weight='high' must be a finite number"),
        (_metric(residual="rmse"), r"residual='rmse'.*sqrt_ve, mae"),
        (_metric(ddof=2), r"ddof=2 must be 0"),
        (_metric(signed=True), r"signed=true needs side_points.*builtin: cliff"),
        (_metric(signed=True, kind="unit_space", side_points={"builtin": "cliff"}), "needs kind: reference"),
        (_metric(signed=True, absolute=True, side_points={"builtin": "cliff"}), "both signed and absolute"),
        (_metric(side_points={"builtin": "lava"}), r"builtin side points are cliff"),
        (
            _metric(side_points={"negative": [], "positive": [[0, 0]]}),
            r"side_points\.negative=\[\] must be a non-empty list",
        ),
        (_metric(source={"type": "web"}), r"source\.type='web'.*file, policy, list, builtin"),
        (_metric(feature={"kind": "rbf"}), r"feature=.*needs a 'type'"),
        (_metric(signed="yes"), r"signed='yes' must be true or false"),
        (_metric(absolute=1), r"absolute=1 must be true or false"),
        (_metric(feature={"type": "fourier"}), r"feature=.*needs a 'type', one of identity, onehot, rbf, callable"),
        ({"mode": "none", "step_info": "no"}, r"reward\.step_info='no' must be true or false"),
        (_metric(wieght=1.0), r"reward\.metrics\.m has unknown key\(s\) wieght"),
        ({"mode": "additive", "metrics": {"a/b": _metric()["metrics"]["m"]}}, r"'a/b' is not a valid metric name"),
    ],
)
def test_config_validation_errors_name_the_value_and_the_choices(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_reward_config(bad)
    assert "\n" not in str(err.value)  # one paragraph


def test_parse_accepts_a_dataclass_and_omegaconf_and_fills_defaults():
    from omegaconf import OmegaConf

    cfg = parse_reward_config(OmegaConf.create(reward_yaml("cliff_absolute")))
    assert cfg.metrics["route"].absolute and cfg.metrics["route"].residual == "sqrt_ve"
    assert parse_reward_config(cfg) == cfg
    assert parse_reward_config(None) == RewardConfig()
    assert RewardConfig().step_info is True and cfg.step_info is True  # per-step info by default
    assert parse_reward_config({**reward_yaml("cliff_absolute"), "step_info": False}).step_info is False
