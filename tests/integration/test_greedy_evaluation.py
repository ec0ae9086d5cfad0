"""Greedy evaluation through RLlib on a hand-made policy: returns and route adherence.

A DQN whose advantage head is set to prefer "up" in every state: greedily it walks from
the start (0, 3) up to the top wall and bumps into it until the 500-step limit, so its
return, route adherence and goal rate are known exactly. Training would explore (epsilon
starts at 1); evaluation must not.
"""

from __future__ import annotations

import numpy as np
import pytest

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core import names

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*Overriding environment:UserWarning")]

UP = 0


def _always_up(algo) -> None:
    """Zero the advantage head and bias it to action 0 (up) in the learner's module."""
    weights = algo.learner_group.get_weights()
    (module_weights,) = weights.values()
    for name, value in module_weights.items():
        if name.startswith("af."):
            module_weights[name] = np.zeros_like(value)
            if name.endswith("bias"):
                module_weights[name][UP] = 10.0
    algo.learner_group.set_weights(weights)


def test_greedy_evaluation_of_a_hand_made_policy(ray_session):
    import torch

    from qeu_tune.engine.episode_metrics import flatten_evaluation
    from qeu_tune.engine.trainable import build_algo_config, register_env

    torch.set_num_threads(1)
    config = to_plain(
        compose(
            ["env=qeu_cliff", "algo=dqn", "reward=cliff_absolute", "evaluation.interval=1", "evaluation.episodes=2"]
        )
    )
    config["seed"] = 0
    register_env()
    algo = build_algo_config(config).build_algo()
    try:
        _always_up(algo)
        metrics = flatten_evaluation(algo.evaluate(), iteration=7)
    finally:
        algo.stop()
    # Up, up, up to (0, 0): 3 x -0.2; then 497 moves off the grid: -1 each.
    assert metrics[names.EVAL_RETURN_ENV_MEAN] == pytest.approx(3 * -0.2 + 497 * -1.0)
    assert metrics[names.EVAL_EPISODE_LEN_MEAN] == 500
    assert metrics[names.EVAL_EPISODES] == 2  # this evaluation's episodes, no more
    assert metrics[names.EVAL_ITERATION] == 7
    # (0, 2) and (0, 1) are on the standard route, (0, 0) is not: 2 of 500 steps.
    assert metrics[names.EVAL_PREFIX + names.ROUTE_ADHERENCE] == pytest.approx(2 / 500)
    assert metrics[names.EVAL_PREFIX + names.GOAL_REACHED] == 0.0
    # The design's statistics come along: the shaped return has the feedback in it.
    assert metrics["eval/reward/route/sum"] < 0
    assert metrics["eval/return_shaped"] == pytest.approx(
        metrics[names.EVAL_RETURN_ENV_MEAN] + metrics["eval/reward/route/sum"]
    )


def test_a_trial_evaluates_at_its_first_every_nth_and_last_iteration(ray_session, monkeypatch):
    """The trainable's cadence: iteration 1, multiples of the interval, and the last."""
    import qeu_tune.engine.trainable as trainable

    calls = []

    class FakeAlgo:
        def evaluate(self):
            calls.append("evaluate")
            return {"env_runners": {"episode_return_mean": -5.0, "episode_len_mean": 5.0, "num_episodes": 1}}

    in_train = {"evaluation": {"env_runners": {"episode_return_mean": 3.0, "episode_len_mean": 3.0, "num_episodes": 1}}}
    seen = {}
    for iteration in range(1, 8):
        done = iteration == 7
        seen[iteration] = trainable._evaluation(FakeAlgo(), in_train, iteration, 3, first=iteration == 1, done=done)
    assert [i for i, m in seen.items() if m] == [1, 3, 6, 7]
    assert calls == ["evaluate", "evaluate"]  # RLlib itself evaluated in train() at 3 and 6
    assert seen[3][names.EVAL_RETURN_ENV_MEAN] == 3.0 and seen[7][names.EVAL_RETURN_ENV_MEAN] == -5.0
