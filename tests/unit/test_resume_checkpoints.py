"""``qeu_tune.engine.resume.repair_lost_checkpoint``: a restored trial whose checkpoint Tune deleted
before the driver was killed goes on from one that exists (real Tune checkpoint manager,
local pyarrow filesystem)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from pyarrow.fs import LocalFileSystem
from ray.train import CheckpointConfig
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint
from ray.tune.experiment import Trial

from qeu_tune.core import names
from qeu_tune.engine.resume import repair_lost_checkpoint
from qeu_tune.engine.trainable import PROGRESS_FILE


def make_checkpoint(trial_dir, index, iteration=None):
    path = trial_dir / f"checkpoint_{index:06d}"
    path.mkdir(parents=True)
    (path / "algorithm_state.pkl").write_text("x")
    if iteration is not None:  # None: an incomplete copy, without the counters
        (path / PROGRESS_FILE).write_text(json.dumps({names.ITERATION: iteration, names.TIME_TOTAL_S: 1.5 * iteration}))
    return str(path)


class FakeTrial(SimpleNamespace):
    """The parts of a restored ``Trial`` the repair touches, around a real checkpoint manager."""

    def __init__(self, trial_dir, named_index, status=Trial.PENDING):
        fs = LocalFileSystem()
        manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
        named = Checkpoint(str(trial_dir / f"checkpoint_{named_index:06d}"), filesystem=fs)
        manager.register_checkpoint(_TrainingResult(checkpoint=named, metrics={"training_iteration": 3}))
        super().__init__(
            trial_id="t1",
            status=status,
            storage=SimpleNamespace(storage_filesystem=fs, trial_fs_path=str(trial_dir), current_checkpoint_index=1),
            run_metadata=SimpleNamespace(checkpoint_manager=manager, invalidate_cache=lambda: None),
            invalidate_json_state=lambda: None,
        )

    @property
    def checkpoint(self):
        latest = self.run_metadata.checkpoint_manager.latest_checkpoint_result
        return latest.checkpoint if latest else None


def record(last_iteration):
    return SimpleNamespace(last_iteration=last_iteration)


def test_a_checkpoint_that_exists_is_left_alone(tmp_path):
    make_checkpoint(tmp_path, 0, iteration=3)
    trial = FakeTrial(tmp_path, 0)
    assert repair_lost_checkpoint(trial, record(5)) is None
    assert trial.checkpoint.path.endswith("checkpoint_000000") and trial.storage.current_checkpoint_index == 1


def test_the_newest_checkpoint_within_the_recorded_iterations_is_used(tmp_path):
    make_checkpoint(tmp_path, 1, iteration=6)
    make_checkpoint(tmp_path, 2, iteration=9)
    make_checkpoint(tmp_path, 3, iteration=12)  # past what MLflow holds: iterations 10-11 would be a gap
    make_checkpoint(tmp_path, 4)  # incomplete: killed while it was copied
    trial = FakeTrial(tmp_path, 0)  # Tune's state names checkpoint_000000, which is gone

    note = repair_lost_checkpoint(trial, record(11))

    assert "checkpoint_000000 was deleted" in note and "checkpoint_000002 (iteration 9)" in note
    restored = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    assert restored.checkpoint.path.endswith("checkpoint_000002")
    assert restored.metrics["training_iteration"] == 9 and restored.metrics["time_total_s"] == pytest.approx(13.5)
    assert trial.storage.current_checkpoint_index == 5  # new checkpoints never overwrite an existing one


def test_without_a_usable_checkpoint_the_trial_starts_from_scratch(tmp_path):
    make_checkpoint(tmp_path, 2, iteration=9)
    trial = FakeTrial(tmp_path, 1)

    note = repair_lost_checkpoint(trial, record(7))

    assert "restarted from scratch" in note
    assert trial.checkpoint is None and trial.run_metadata.checkpoint_manager.best_checkpoint_results == []
    assert trial.storage.current_checkpoint_index == 3


@pytest.mark.parametrize("status", [Trial.TERMINATED, Trial.ERROR])
def test_trials_that_will_not_run_are_left_alone(tmp_path, status):
    trial = FakeTrial(tmp_path, 0, status=status)
    assert repair_lost_checkpoint(trial, record(5)) is None
    assert trial.checkpoint.path.endswith("checkpoint_000000")
