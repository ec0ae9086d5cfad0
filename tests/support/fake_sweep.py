"""Record a sweep in MLflow through the real tracking callback, with simulated trials.

Lets tracking and report tests run in a second, without Ray: the callback sees the same
hooks Tune would call.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.config.trial import TrialTemplate
from qeu_tune.core import names, tags
from qeu_tune.engine.callback import MLflowTrialCallback
from qeu_tune.tracking import tracker as tracking


def make_template(overrides: Sequence[str] = ()) -> TrialTemplate:
    return TrialTemplate(base=to_plain(compose(list(overrides))))


def record_sweep(
    uri: str,
    configs: Dict[str, Dict],
    curve: Callable[[Dict, int, np.ndarray], np.ndarray],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    steps: Optional[np.ndarray] = None,
    overrides: Sequence[str] = ("stop.env_steps=10000",),
    fail: Sequence[str] = (),
    sweep_name: str = "fake-sweep",
) -> SimpleNamespace:
    """Records one parent run and a child run per (configuration, seed).

    Args:
        uri: Tracking URI.
        configs: Label -> sampled values (the trial's Tune config without seed).
        curve: (values, seed, steps) -> unshaped return at each step.
        fail: Labels whose trials end with an error.
    """
    steps = np.arange(1000, 10001, 1000) if steps is None else steps
    tracker = tracking.Tracker(tracking_uri=uri, experiment="qeu-tune")
    parent = tracker.create_run(run_name=sweep_name, tags={tags.TAG_KIND: "sweep", tags.TAG_SWEEP: sweep_name})
    template = make_template(overrides)
    callback = MLflowTrialCallback(
        tracker=tracker, parent_run_id=parent, template=template, sweep_name=sweep_name, flush_every_s=0.0
    )
    trials: List[SimpleNamespace] = []
    for label, values in configs.items():
        for seed in seeds:
            trial = SimpleNamespace(trial_id=f"{label}_{seed}", config={**values, "seed": seed}, error_file=None)
            callback.on_trial_start(0, [], trial)
            ys = curve(values, seed, steps)
            for i, (s, y) in enumerate(zip(steps, ys)):
                result = {
                    names.ENV_STEPS: float(s),
                    names.RETURN_ENV_MEAN: float(y),
                    names.RETURN_MEAN: float(y),
                    "rt/route/mean": float(1.0 / (1 + i)),
                    names.ITERATION: float(i + 1),
                }
                callback.on_trial_result(0, [], trial, result)
            if label in fail:
                callback.on_trial_error(0, [], trial)
            else:
                callback.on_trial_complete(0, [], trial)
            trials.append(trial)
    tracker.end_run(parent, tags.FINISHED)
    assert tracker.flush(timeout_s=60), "the tracker did not reach MLflow"
    return SimpleNamespace(parent_run_id=tracker.resolve(parent), tracker=tracker, callback=callback, trials=trials)
