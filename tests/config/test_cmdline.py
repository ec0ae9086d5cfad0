"""The command line before Hydra: user config dirs, sweep overrides as search dimensions,
open-ended reward metrics and know-how sources switched by type."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qeu_tune.commands.argv import extract_config_dir, prepare_argv, sweep_dimensions
from qeu_tune.config.compose import compose, group_options, open_overrides, to_plain
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import CONF_DIR, CONFIG_DIR_ENV_VAR, user_config_dir

REPO = Path(__file__).resolve().parents[2]


def write_user_conf(root: Path, csv: Path) -> Path:
    conf = root / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "reward").mkdir()
    (conf / "env").mkdir()
    (conf / "reward" / "my_design.yaml").write_text(
        "defaults: [base_reward]\n"
        "name: my_design\n"
        "mode: additive\n"
        "metrics:\n"
        "  balance:\n"
        "    kind: unit_space\n"
        "    weight: 0.05\n"
        f"    source: {{type: file, path: {csv}}}\n"
        "    feature: {type: rbf, low: [-2.4, -2.0, -0.21, -2.0], high: [2.4, 2.0, 0.21, 2.0], num: 3}\n"
    )
    (conf / "env" / "my_task.yaml").write_text(
        "defaults: [base_env]\nname: my_task\nid: CartPole-v1\nenv_config: {max_episode_steps: 200}\n"
        "return_threshold: 150.0\nreturn_range: [0.0, 200.0]\n"
    )
    (conf / "experiment" / "my_study.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /reward: my_design\n  - override /env: my_task\n"
        "search:\n  space: {}\n  num_samples: 1\n"
        "sweep_name: my_study\n"
    )
    return conf


def cartpole_csv(path: Path) -> Path:
    import numpy as np

    from qeu_tune.reward.sources import cartpole_balance_policy, rollout_policy

    rows = rollout_policy("CartPole-v1", cartpole_balance_policy, episodes=1, seed=0).observations
    np.savetxt(path, rows, delimiter=",", header="x,v,theta,omega", comments="")
    return path


def test_user_config_dir_from_cwd_joins_the_packaged_groups(tmp_path, monkeypatch):
    conf = write_user_conf(tmp_path, cartpole_csv(tmp_path / "demos.csv"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_DIR_ENV_VAR, raising=False)
    assert user_config_dir() == conf.resolve()
    assert "my_design" in group_options("reward") and "cartpole_rt" in group_options("reward")
    assert "my_study" in group_options("experiment") and "my_task" in group_options("env")
    cfg = to_plain(compose(["experiment=my_study", "algo=dqn"]))  # composes with shipped options
    assert cfg["reward"]["name"] == "my_design" and cfg["env"]["name"] == "my_task"
    assert cfg["algo"]["name"] == "dqn" and cfg["sweep_name"] == "my_study"
    assert cfg["reward"]["metrics"]["balance"]["residual"] == "sqrt_ve"  # defaults filled in


def test_config_dir_flag_and_env_var(tmp_path, monkeypatch):
    conf = write_user_conf(tmp_path / "elsewhere", cartpole_csv(tmp_path / "demos.csv"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_DIR_ENV_VAR, raising=False)
    assert user_config_dir() is None
    rest, found = extract_config_dir(["--config-dir", str(conf), "experiment=my_study"])
    assert rest == ["experiment=my_study"] and found == conf.resolve()
    assert extract_config_dir([f"--config-dir={conf}"])[1] == conf.resolve()
    with pytest.raises(ConfigError, match="no such directory"):
        extract_config_dir(["-cd", str(tmp_path / "nope")])
    prepared = prepare_argv(["-cd", str(conf), "experiment=my_study"])
    assert prepared.config_dir == conf.resolve() and prepared.argv == ["experiment=my_study"]
    assert os.environ[CONFIG_DIR_ENV_VAR] == str(conf.resolve())  # Hydra's search path reads it
    assert to_plain(compose(["reward=my_design"]))["reward"]["name"] == "my_design"  # env var is set


def test_the_repository_conf_is_not_a_user_config_dir(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv(CONFIG_DIR_ENV_VAR, raising=False)
    assert CONF_DIR == (REPO / "conf").resolve() and user_config_dir() is None


def test_a_user_file_named_like_a_shipped_one_wins(tmp_path, monkeypatch):
    # Hydra takes each file from the first search-path entry that has it: the user's own
    # experiment/default.yaml and algo/ppo.yaml replace the shipped files of those names.
    conf = tmp_path / "conf"
    (conf / "algo").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "algo" / "ppo.yaml").write_text("defaults: [base_algo]\nname: ppo\nparams: {lr: 0.0123, gamma: 0.9}\n")
    (conf / "experiment" / "default.yaml").write_text(
        "# @package _global_\nsearch:\n  space: {algo.params.gamma: 'choice(0.9, 0.95)'}\n  num_samples: 3\n"
        "sweep_name: mine\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_DIR_ENV_VAR, raising=False)
    cfg = to_plain(compose())  # ./conf
    assert cfg["algo"]["params"] == {"lr": 0.0123, "gamma": 0.9}  # the whole file: no shipped PPO params
    assert cfg["search"]["space"] == {"algo.params.gamma": "choice(0.9, 0.95)"} and cfg["search"]["num_samples"] == 3
    assert cfg["sweep_name"] == "mine" and group_options("algo").count("ppo") == 1
    assert to_plain(compose(["algo=dqn"]))["algo"]["params"]["lr"] != 0.0123  # other shipped options stay

    # The same through `qeu-tune` (hydra.main), the directory named from elsewhere.
    proc = subprocess.run(
        [sys.executable, "-m", "qeu_tune.commands.main", "--config-dir", str(conf), "--cfg", "job"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = yaml.safe_load(proc.stdout)
    assert printed["algo"]["params"] == {"lr": 0.0123, "gamma": 0.9} and printed["sweep_name"] == "mine"


def test_sweep_overrides_become_search_dimensions_without_multirun():
    plain, dims = sweep_dimensions(
        [
            "algo.params.lr=tag(log,interval(1e-4,1e-2))",
            "reward.metrics.route.weight=choice(0,0.3,1)",
            "algo=choice(ppo,dqn)",
            "env=qeu_cliff",
            "stop.env_steps=500",
            "search=ppo,grid",
        ]
    )
    assert plain == ["env=qeu_cliff", "stop.env_steps=500"]
    assert dims == {
        "algo.params.lr": "tag(log,interval(1e-4,1e-2))",
        "reward.metrics.route.weight": "choice(0,0.3,1)",
        "algo": "choice(ppo,dqn)",
        "search": "ppo,grid",
    }
    prepared = prepare_argv(
        [
            "experiment=qeu_cliff_weight_sweep",
            "algo.params.lr=tag(log,interval(1e-4,1e-2))",
            "reward.metrics.route.weight=choice(0,0.3,1)",
            "algo=choice(ppo,dqn)",
        ]
    )
    space = to_plain(compose(prepared.argv))["search"]["space"]
    assert space == {
        "algo.params.lr": "tag(log,interval(1e-4,1e-2))",
        "reward.metrics.route.weight": "choice(0,0.3,1)",
        "algo": "choice(ppo,dqn)",
    }
    multirun = prepare_argv(["-m", "algo=ppo,dqn"])  # -m keeps Hydra's meaning
    assert "algo=ppo,dqn" in multirun.argv and not multirun.search_space


def test_a_know_how_source_switches_type_from_the_command_line(tmp_path, monkeypatch):
    csv = cartpole_csv(tmp_path / "demos.csv")
    monkeypatch.chdir(tmp_path)
    cfg = to_plain(
        compose(
            open_overrides(
                [
                    "reward=cartpole_rt",
                    "reward.metrics.balance.source.type=file",
                    "reward.metrics.balance.source.path=demos.csv",
                ]
            )
        )
    )
    assert cfg["reward"]["metrics"]["balance"]["source"] == {"type": "file", "path": str(csv.resolve())}
    from qeu_tune.reward import make_env

    make_env("CartPole-v1", {}, cfg["reward"], gamma=0.99).close()  # it fits


def test_a_whole_metric_is_added_or_replaced_with_overrides(tmp_path, monkeypatch):
    cartpole_csv(tmp_path / "demos.csv")
    monkeypatch.chdir(tmp_path)
    added = to_plain(
        compose(
            [
                "reward=cartpole_rt",
                "+reward.metrics.extra={kind: unit_space, weight: 0.1, source: {type: file, path: demos.csv},"
                " feature: {type: rbf, low: -2.4, high: 2.4, num: 3}}",
            ]
        )
    )
    assert set(added["reward"]["metrics"]) == {"balance", "extra"}
    replaced = to_plain(
        compose(
            [
                "reward=cartpole_rt",
                "~reward.metrics.balance",
                "+reward.metrics.balance={kind: reference, weight: 0.2, source: {type: file, path: demos.csv}}",
            ]
        )
    )
    assert replaced["reward"]["metrics"]["balance"]["kind"] == "reference"
    assert replaced["reward"]["metrics"]["balance"]["feature"] == {"type": "identity"}


def test_a_misspelt_source_field_is_reported_with_the_valid_ones(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qeu_tune.commands.main",
            "reward=cartpole_rt",
            "reward.metrics.balance.source.type=file",
            "reward.metrics.balance.source.pth=demos.csv",
            "debug=smoke",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(r"unknown keys \['pth'\] for know-how source type 'file'; valid keys: columns, path", proc.stderr)
    assert "Traceback" not in proc.stderr


def test_a_single_value_sweep_override_is_a_fixed_value():
    plain, dims = sweep_dimensions(
        [
            "algo.params.lr=choice(0.001)",
            "env.env_config.max_episode_steps=range(200,201)",  # a one-element grid
            "algo=choice(dqn)",
            "reward.metrics.route.weight=int(interval(2,2))",
            '+tags.note=choice("it\'s")',  # a string the grammar needs quoted
            "search.num_seeds=choice(1,2)",
            "stop.env_steps=range(1000,3000,1000)",
        ]
    )
    assert plain == [
        "algo.params.lr=0.001",
        "env.env_config.max_episode_steps=200",
        "algo=dqn",
        "reward.metrics.route.weight=2",
        '+tags.note="it\'s"',
    ]
    assert dims == {"search.num_seeds": "choice(1,2)", "stop.env_steps": "range(1000,3000,1000)"}


def test_a_fixed_value_wins_over_the_experiments_dimension(monkeypatch):
    # The default experiment searches algo.params.lr; a value on the command line fixes it.
    from qeu_tune.commands import sweep

    seen = []
    monkeypatch.setattr(sys, "argv", ["qeu-tune"])
    argv = ["algo.params.lr=choice(0.001)", "reward.metrics.route.weight=choice(0.3)", "env=qeu_cliff"]
    argv += ["reward=cliff_absolute", "algo.params.gamma=choice(0.9,0.99)"]
    sweep.run(argv, command_line=argv, task=lambda cfg: seen.append(sweep.plain_config(cfg)))
    (config,) = seen
    assert config["algo"]["params"]["lr"] == 0.001 and config["reward"]["metrics"]["route"]["weight"] == 0.3
    assert config["search"]["space"] == {"algo.params.gamma": "choice(0.9,0.99)"}
