"""The quiet console: noise filtered, the progress line's arithmetic."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from qeu_tune.commands.console import NOISE, loud_console, quiet_console
from qeu_tune.engine.progress import progress_line, total_trials


def trial(status, steps=None):
    return SimpleNamespace(status=status, last_result={} if steps is None else {"progress/env_steps": steps})


def test_progress_line_counts_finished_trials_with_their_budget_and_estimates_time_left():
    line = progress_line(
        [trial("TERMINATED", 900), trial("RUNNING", 250), trial("PENDING")],
        total_trials=4,
        steps_per_trial=1000,
        elapsed_s=50,
        steps_key="progress/env_steps",
    )
    assert line.startswith("Progress: 1/4 trials done | 1,250/4,000 env steps (31%) | elapsed 0:00:50")
    assert line.endswith("~0:01:50 left")  # 50 s for 1250 steps -> 110 s for the other 2750
    assert progress_line([], total_trials=2, steps_per_trial=10, elapsed_s=0, steps_key="x").endswith("n/a")


def test_total_trials_multiplies_grid_searches():
    assert total_trials({"_point": {"grid_search": [1, 2, 3]}, "seed": {"grid_search": [0, 1]}}, 1) == 6
    assert total_trials({"lr": object(), "seed": {"grid_search": [0, 1]}}, 4) == 8


def test_known_noise_is_filtered_and_other_lines_pass(caplog):
    quiet_console()
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
            logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
                "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out."
            )
            logging.getLogger("matplotlib.font_manager").warning(
                "Matplotlib is building the font cache; this may take a moment."
            )
            logging.getLogger("mlflow.store.db.utils").info("something else")
        assert [r.getMessage() for r in caplog.records] == ["something else"]
    finally:
        loud_console()


def test_tunes_own_resume_hint_is_dropped_beside_qeu_tunes():
    # ray/tune/tune.py logs it on an interrupt; `qeu-tune resume SWEEP` is the way to continue.
    import importlib.util

    tune_source = Path(importlib.util.find_spec("ray.tune.tune").origin).read_text()
    (prefix,) = NOISE["ray.tune.tune"]
    assert prefix == "Experiment has been interrupted, but the most recent state was saved"
    assert '"Experiment has been interrupted, but the most recent state was "' in tune_source  # Ray's wording
    assert 'f"saved.\\nResume experiment with: {restore_entrypoint}"' in tune_source
    hint = (
        "Experiment has been interrupted, but the most recent state was saved.\n"
        'Resume experiment with: Tuner.restore(path="/tmp/x", trainable=...)'
    )
    logger = logging.getLogger("ray.tune.tune")  # Ray's "ray" logger does not propagate to caplog's root
    seen = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        quiet_console()
        try:
            logger.warning(hint)
            logger.info("Total run time: 3.00 seconds")
        finally:
            loud_console()
        logger.warning(hint)  # verbose=2: everything
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["Total run time: 3.00 seconds", hint]


def test_the_last_status_table_lists_every_trial_only_for_small_sweeps(monkeypatch):
    from ray.tune.experiment import Trial
    from ray.tune.utils import log as tune_log

    # Tune's verbosity is process-global and a sweep run earlier in the session may have lowered it.
    monkeypatch.setattr(tune_log, "verbosity", tune_log.Verbosity.V1_EXPERIMENT)

    from qeu_tune.engine.progress import FULL_FINAL_TABLE, make_progress_reporter

    class StubTrial(Trial):  # a trial without storage: Tune's table only asks for its paths
        local_experiment_path = local_path = "/tmp/sweep"

    def status_rows(n: int) -> int:
        trials = []
        for i in range(n):
            t = StubTrial("__fake", config={"lr": 0.001 * (i + 1)}, stub=True, trial_id=f"t{i:05d}")
            t.status = "TERMINATED"
            t.update_last_result({"progress/env_steps": 1000, "training_iteration": 1})
            trials.append(t)
        reporter = make_progress_reporter(
            total=n, steps_per_trial=1000, steps_key="progress/env_steps", print_intermediate_tables=True
        )
        return reporter._progress_str(trials, True).count("| TERMINATED")

    assert status_rows(5) == 5
    assert status_rows(FULL_FINAL_TABLE) == FULL_FINAL_TABLE
    assert status_rows(FULL_FINAL_TABLE + 50) <= 20  # cut like a live table (Tune's max_progress_rows)
