"""A reward design on a vectorised env runner: its metrics reach the trial's results.

The trial's own path (``qeu_tune.engine.trainable.build_algo_config`` -> ``Algorithm.train`` ->
``flatten_result``) with ``num_envs_per_env_runner=4``, the Cliff task with short
episodes and the ``cliff_absolute`` design, metrics shipped fitted as a sweep does.
"""

from __future__ import annotations

import math
import threading

import pytest
from ray.tune.utils.util import UtilMonitor
from rewards import CLIFF_ABSOLUTE

from qeu_tune.core import names

REWARD = CLIFF_ABSOLUTE


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*Overriding environment:UserWarning")
def test_reward_metrics_reach_results_with_several_envs_per_runner(ray_session):
    import torch

    from qeu_tune.engine.episode_metrics import flatten_result
    from qeu_tune.engine.trainable import build_algo_config, register_env
    from qeu_tune.reward import clear_metric_cache, fitted_metrics
    from qeu_tune.reward.design import _CACHE

    torch.set_num_threads(1)
    fitted = fitted_metrics([REWARD])  # what a sweep ships from the driver
    assert len(fitted) == 1
    config = {
        "algo": {
            "name": "ppo",
            "num_env_runners": 0,
            "num_envs_per_env_runner": 4,
            "rollout_fragment_length": "auto",
            "params": {"train_batch_size_per_learner": 400, "minibatch_size": 100, "num_epochs": 1},
            "model": {"fcnet_hiddens": [16]},
        },
        "env": {"id": "QEUCliffWalking-v0", "env_config": {"obs": "techno", "max_falls": 3, "max_episode_steps": 40}},
        "reward": REWARD,
        "seed": 0,
    }
    register_env()
    algo_config = build_algo_config(config, fitted=fitted)
    assert algo_config.num_envs_per_env_runner == 4
    clear_metric_cache()
    from qeu_tune.reward import install_fitted

    install_fitted(fitted)
    algo = algo_config.build_algo()
    try:
        metrics = flatten_result(algo.train())
        # No psutil monitor thread: Algorithm.stop() would wait up to 0.7 s for it, idle,
        # at the end of every trial.
        assert algo_config.log_sys_usage is False
        assert not any(isinstance(t, UtilMonitor) and t.is_alive() for t in threading.enumerate())
    finally:
        algo.stop()
    assert set(_CACHE) == set(fitted), "a sub-environment fitted its metric again"
    assert metrics[names.ENV_STEPS] >= 400
    for key in ("rt/route/mean", "rt/route/min", "rt/route/max", "reward/route/sum"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["rt/route/min"] <= metrics["rt/route/mean"] <= metrics["rt/route/max"]
    assert metrics["reward/route/sum"] <= 0.0  # absolute feedback only subtracts
    # Episodes of 40 steps at most, 4 sub-envs x 100 steps: many finished episodes.
    assert metrics[names.EPISODES] >= 10
    assert math.isfinite(metrics[names.RETURN_ENV_MEAN])


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["appo", "impala"])
@pytest.mark.filterwarnings("ignore:.*Overriding environment:UserWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_shipped_vectorised_defaults_train_with_a_reward_design(ray_session, algo):
    """APPO and IMPALA ship with 4 sub-environments per runner: a design's metrics still
    reach the results, each sub-environment wrapped by the design."""
    import torch

    from qeu_tune.config.compose import compose, to_plain
    from qeu_tune.config.trial import TrialTemplate, resolve_trial_config
    from qeu_tune.engine.episode_metrics import flatten_result
    from qeu_tune.engine.trainable import build_algo_config, register_env

    torch.set_num_threads(1)
    base = to_plain(compose([f"algo={algo}", "reward=cartpole_rt", "algo.reporting.min_time_s_per_iteration=0"]))
    config, _ = resolve_trial_config(TrialTemplate(base=base, group_options={}), {"seed": 0})
    assert config["algo"]["num_envs_per_env_runner"] == 4
    register_env()
    algo_config = build_algo_config(config)
    algo = algo_config.build_algo()
    try:
        assert algo.env_runner.num_envs == 4
        metrics = {}
        for _ in range(20):  # async learners: the first iterations may report no episode yet
            metrics = flatten_result(algo.train())
            if "rt/balance/mean" in metrics:
                break
    finally:
        algo.stop()
    for key in ("rt/balance/mean", "reward/balance/sum"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["reward/balance/sum"] < 0.0  # additive feedback subtracts w * D > 0
