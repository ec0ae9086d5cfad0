"""algo=synthetic end to end: a real Ray Tune sweep of the learning-curve model, read back from MLflow."""

from __future__ import annotations

import numpy as np
import pytest
from sweeps import children, run

from qeu_tune.analysis.runs import load_config_artifact, metric_history
from qeu_tune.core import names, tags
from qeu_tune.engine import synthetic

pytestmark = pytest.mark.slow

ITERATIONS = 20


def test_a_synthetic_sweep_reports_through_the_trial_path_on_the_env_step_axis(ray_session, tmp_path):
    result, client = run(
        [
            "algo=synthetic",
            "search.num_samples=4",
            f"stop.env_steps={ITERATIONS * 1000}",
            "evaluation.interval=5",
            "evaluation.episodes=2",
        ],
        tmp_path,
    )
    assert result.num_trials == 4 and result.num_errors == 0
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    runs = children(client, result)
    assert len(runs) == 4
    # Tune's per-trial files are there, without TensorBoard's (MLflow has every result).
    trial_dirs = [p.parent for p in (tmp_path / "ray").rglob("result.json")]
    assert len(trial_dirs) == 4 and all((d / "progress.csv").exists() for d in trial_dirs)
    assert not list((tmp_path / "ray").rglob("events.out.tfevents*"))
    expected_steps = [1000.0 * i for i in range(1, ITERATIONS + 1)]
    for run_ in runs:
        run_id = run_.info.run_id
        assert run_.info.status == "FINISHED"
        assert run_.data.tags[tags.TAG_ALGO] == "synthetic"
        steps, values = metric_history(client, run_id, names.ENV_STEPS)
        assert steps == expected_steps and values == expected_steps  # the step axis is env steps
        for key in (
            names.RETURN_ENV_MEAN,
            names.RETURN_MEAN,
            names.EPISODE_LEN_MEAN,
            names.ITERATION,
            names.ENV_STEPS_PER_S,
        ):
            assert metric_history(client, run_id, key)[0] == expected_steps, key
        # Evaluations: the first iteration, every 5th (the last is one of them).
        eval_steps, _ = metric_history(client, run_id, names.EVAL_RETURN_ENV_MEAN)
        assert eval_steps == [1000.0, 5000.0, 10000.0, 15000.0, 20000.0]
        assert "conv/final_mean" in run_.data.metrics  # computed by the driver, as for RLlib trials
        # The logged curve is exactly the model's for the trial's resolved config and seed.
        config = load_config_artifact(client, run_id)
        learner = synthetic.SyntheticAlgorithm(config)
        model_curve = [learner.train()["env_runners"]["qeu"]["return_env"] for _ in range(ITERATIONS)]
        _, logged = metric_history(client, run_id, names.RETURN_ENV_MEAN)
        assert logged == pytest.approx(model_curve, rel=1e-9)
        assert float(run_.data.params["algo.params.lr"]) == config["algo"]["params"]["lr"]
        # conv/final_mean (the mean of the last 5 points) estimates the seed's true curve there.
        truth = synthetic.true_curve(config, synthetic.reported_steps(config)[-5:], seed=config["seed"]).mean()
        noise = synthetic.model(config).noise / np.sqrt(5)
        assert abs(run_.data.metrics["conv/final_mean"] - truth) < 5 * noise
