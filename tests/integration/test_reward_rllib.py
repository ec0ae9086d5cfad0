"""The reward wrapper inside RLlib's new-API-stack env runner (no Ray cluster needed).

RLlib's ``SingleAgentEnvRunner`` steps a ``gym.make_vec`` vector env wrapped in
``DictInfoToList`` (next-step autoreset), so each sub-env's final-step ``info`` reaches the
episode object; ``on_episode_end`` runs before the episode is finalised, and
``episode.get_infos(-1)["qeu_episode"]`` is the wrapper's per-episode statistics.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from rewards import CLIFF_ABSOLUTE

from qeu_tune.core.names import EPISODE_INFO_KEY
from qeu_tune.reward import episode_info_keys, make_env

ENV_NAME = "qeu_test_reward_env"
REWARD = CLIFF_ABSOLUTE
# Short episodes of both kinds: a random walk falls 3 times (terminated) or runs out of
# its 40 steps (truncated).
ENV_CONFIG = {"obs": "techno", "max_falls": 3, "max_episode_steps": 40}

CAPTURED: List[Dict[str, Any]] = []


def env_creator(ctx: Dict[str, Any]) -> Any:
    return make_env(ctx["env_id"], dict(ctx["env_config"]), ctx["reward"], gamma=float(ctx["gamma"]))


def make_runner(reward: Dict[str, Any]) -> Any:
    """A local ``SingleAgentEnvRunner`` (2 sub-envs) on the cliff with this reward design."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.callbacks.callbacks import RLlibCallback
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.tune.registry import register_env

    class CaptureEpisodeInfo(RLlibCallback):
        """What the sweep's callback reads: the last info of every finished episode."""

        def on_episode_end(self, *, episode: Any, **kwargs: Any) -> None:
            info = episode.get_infos(-1)
            CAPTURED.append(
                {
                    "stats": info.get(EPISODE_INFO_KEY),
                    "return": episode.get_return(),
                    "len": len(episode),
                    "terminated": episode.is_terminated,
                    "truncated": episode.is_truncated,
                    "complete": episode.t_started == 0,
                }
            )

    register_env(ENV_NAME, env_creator)
    config = (
        PPOConfig()
        .environment(
            ENV_NAME,
            env_config={"env_id": "QEUCliffWalking-v0", "env_config": ENV_CONFIG, "reward": reward, "gamma": 0.99},
        )
        .env_runners(num_env_runners=0, num_envs_per_env_runner=2, rollout_fragment_length=50)
        .callbacks(CaptureEpisodeInfo)
        .debugging(seed=0)
    )
    return SingleAgentEnvRunner(config=config)


@pytest.fixture(scope="module")
def runner():
    env_runner = make_runner(REWARD)
    yield env_runner
    env_runner.stop()


EPISODE_KEYS = set(episode_info_keys(["route"])) | {"task/route_adherence", "task/goal_reached"}


@pytest.mark.slow
def test_every_finished_episode_carries_the_wrapper_statistics(runner):
    CAPTURED.clear()
    # Fragments of 50 steps cut episodes in chunks: the statistics must survive that.
    for _ in range(6):
        runner.sample(num_timesteps=100, random_actions=True)
    assert len(CAPTURED) >= 6
    assert any(c["terminated"] for c in CAPTURED) and any(c["truncated"] for c in CAPTURED)
    for c in CAPTURED:
        stats = c["stats"]
        assert stats is not None, "episode.get_infos(-1) lacks the 'qeu_episode' key"
        # The design's statistics, and the Cliff task's own (route adherence, goal).
        assert set(stats) == EPISODE_KEYS
        assert 0.0 <= stats["task/route_adherence"] <= 1.0
        assert stats["return_shaped"] == pytest.approx(stats["return_env"] + stats["reward/route/sum"])
        assert stats["rt/route/min"] <= stats["rt/route/mean"] <= stats["rt/route/max"]
        if c["truncated"]:
            assert stats["episode/len"] == 40.0
        if c["complete"]:  # a single chunk: RLlib's own bookkeeping must agree
            assert stats["return_shaped"] == pytest.approx(c["return"])
            assert stats["episode/len"] == c["len"]


@pytest.mark.slow
def test_whole_episodes_sampled_by_episode_count(runner):
    CAPTURED.clear()
    episodes = runner.sample(num_episodes=4, random_actions=True)
    assert len(CAPTURED) == len(episodes) >= 4
    for c, episode in zip(CAPTURED, episodes):
        assert c["complete"] and c["stats"]["return_shaped"] == pytest.approx(episode.get_return())
        assert c["stats"]["episode/len"] == len(episode)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*Overriding environment:UserWarning")  # a second runner
def test_step_info_false_still_delivers_the_episode_statistics():
    env_runner = make_runner({**REWARD, "step_info": False})
    try:
        CAPTURED.clear()
        episodes = env_runner.sample(num_episodes=4, random_actions=True)
    finally:
        env_runner.stop()
    assert len(CAPTURED) == len(episodes) >= 4
    for c, episode in zip(CAPTURED, episodes):
        assert set(c["stats"]) == EPISODE_KEYS
        assert c["complete"] and c["stats"]["return_shaped"] == pytest.approx(episode.get_return())
        # Only the env's own entries on every step, the statistics on the last one.
        infos = episode.get_infos()
        assert all(set(info) <= {"x", "y", "falls"} for info in infos[:-1])
        assert set(infos[-1]) == {"x", "y", "falls", EPISODE_INFO_KEY}
