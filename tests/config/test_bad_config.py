"""Bad input fails before Ray starts, with one paragraph naming the value and the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf.errors import ValidationError

from qeu_tune.config.compose import compose, to_plain
from qeu_tune.core.errors import ConfigError
from qeu_tune.engine.plan import plan_sweep


def plan(*overrides):
    return plan_sweep(to_plain(compose(list(overrides))), list(overrides))


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["algo.name=a2c"], ["algo.name='a2c'", "ppo, dqn, appo, impala, sac"]),
        (["env.id=NoSuchEnv-v0"], ["NoSuchEnv-v0"]),
        (["++search.space={algo.params.lr:'interval(0.1'}"], ["cannot parse", "choice(a, b)"]),
        (["++search.space={algo:'choice(ppo,a2c)'}"], ["algo='a2c' is not a algo option", "dqn"]),
        (["++search.space={algo.parms.lr:'choice(0.1,0.2)'}"], ["algo.parms.lr match no config value"]),
        (["+algo.params.learning_rate=0.1"], ["learning_rate", "Valid keys"]),
        (["search=grid", "++search.space={algo.params.lr:'interval(0.1,0.2)'}"], ["grid search needs discrete values"]),
        (["algo=dqn", "env=pendulum"], ["algo=dqn needs a discrete action space"]),
        (["search.algorithm=bayes"], ["valid choices: grid, random, optuna"]),
        (["stop.env_steps=0"], ["stop.env_steps must be an integer > 0"]),
        (["algo.params.lr=-1"], ["algo.params.lr=-1", "must be a number > 0"]),
        (["++search.space={algo.params.lrr:'choice(1,2)'}"], ["algo.params.lrr=1", "lrr not accepted"]),
        (["algo=sac", "env=pendulum"], ["algo.params.lr=0.0001 (sampled by", "SACConfig.validate()"]),
        (["search.metric=nonexistent/metric"], ["is not a metric the trials report"]),
    ],
)
def test_config_errors_name_the_value_and_the_choices(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        plan(*overrides)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message.strip()  # one paragraph


def test_unknown_group_option_is_rejected_at_compose_time_with_choices():
    with pytest.raises(HydraException) as info:
        compose(["algo=a2c"])
    assert "Available options in 'algo'" in str(info.value) and "ppo" in str(info.value)


def test_wrong_type_is_rejected_at_compose_time():
    with pytest.raises(HydraException, match="stop.env_steps=many") as info:
        compose(["stop.env_steps=many"])
    assert isinstance(info.value.__cause__, ValidationError)
    assert "could not be converted to Integer" in str(info.value.__cause__)


def test_typo_in_a_typed_key_is_rejected_at_compose_time():
    with pytest.raises(Exception, match="num_seed"):
        compose(["search.num_seed=3"])


@pytest.fixture
def ray_dir():
    """A Ray temp dir of the test's own, short (Ray's socket paths are limited), removed after."""
    path = Path(tempfile.mkdtemp(prefix="qeu-bad-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _cli(override: str, tmp_path, ray_dir: Path):
    """``qeu-tune OVERRIDE`` with ``ray_dir`` as its Ray temp dir."""
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-m", "qeu_tune.commands.main", override, f"tracking.uri=sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_TMPDIR": str(ray_dir)},
    )
    return proc, db


def _ray_processes(ray_dir: Path) -> list:
    """Processes started for a Ray whose temp dir is ``ray_dir`` (its daemons name it)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(ray_dir) in line]


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.name=a2c", "qeu-tune: error: algo.name='a2c'"),  # found by building the RLlib config
        ("++search.space={algo:'choice(ppo,a2c)'}", "qeu-tune: error: search space: algo='a2c' is not a algo option"),
    ],
)
def test_cli_prints_one_paragraph_exits_2_and_starts_neither_ray_nor_a_run(override, message, tmp_path, ray_dir):
    proc, db = _cli(override, tmp_path, ray_dir)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message)
    assert "Traceback" not in proc.stderr
    assert not db.exists()  # no half-written MLflow run
    assert not any(ray_dir.iterdir()) and _ray_processes(ray_dir) == []  # Ray never wrote a session
