"""Know-how sources: files, listed points, built-ins and expert-policy rollouts."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from qeu_tune.reward.sources import (
    cartpole_balance_policy,
    cliff_side_points,
    cliff_standard_route,
    load_reference_data,
    mountaincar_energy_policy,
    rollout_policy,
)

POLICY = "qeu_tune.reward.sources:cartpole_balance_policy"
DATA = np.array([[0.5, 1.0, 2.0], [1.5, -3.0, 4.25], [7.0, 8.0, 9.0]])

# The QEU standard route, written out: up from the start, along y = 1, down to the goal.
ROUTE = [[0, 3], [0, 2], [0, 1]] + [[x, 1] for x in range(1, 12)] + [[11, 2], [11, 3]]


# --------------------------------------------------------------------------- files
def test_csv_with_and_without_header(tmp_path):
    with_header = tmp_path / "with_header.csv"
    pd.DataFrame(DATA, columns=["a", "b", "c"]).to_csv(with_header, index=False)
    np.testing.assert_array_equal(load_reference_data({"type": "file", "path": str(with_header)}), DATA)
    plain = tmp_path / "plain.csv"
    np.savetxt(plain, DATA, delimiter=",")
    np.testing.assert_array_equal(load_reference_data({"type": "file", "path": str(plain)}), DATA)
    picked = load_reference_data({"type": "file", "path": str(with_header), "columns": ["c", "a"]})
    np.testing.assert_array_equal(picked, DATA[:, [2, 0]])


def test_npy_and_parquet_round_trips(tmp_path):
    npy = tmp_path / "data.npy"
    np.save(npy, DATA)
    np.testing.assert_array_equal(load_reference_data({"type": "file", "path": str(npy)}), DATA)
    np.testing.assert_array_equal(load_reference_data({"type": "file", "path": str(npy), "columns": [1]}), DATA[:, [1]])
    np.save(tmp_path / "vector.npy", np.array([1, 2, 3]))  # 1-D: one scalar observation per row
    assert load_reference_data({"type": "file", "path": str(tmp_path / "vector.npy")}).shape == (3, 1)
    parquet = tmp_path / "data.parquet"
    pd.DataFrame(DATA, columns=["x", "y", "z"]).to_parquet(parquet)
    np.testing.assert_array_equal(load_reference_data({"type": "file", "path": str(parquet)}), DATA)
    np.testing.assert_array_equal(
        load_reference_data({"type": "file", "path": str(parquet), "columns": ["z"]}), DATA[:, [2]]
    )


def test_npy_columns_out_of_range_and_0d_arrays(tmp_path):
    npy = tmp_path / "data.npy"
    np.save(npy, DATA)  # 3 columns
    source = {"type": "file", "path": str(npy)}
    for columns in ([3], [0, 7], [-4]):
        bad = re.escape(str([c for c in columns if not -3 <= c < 3]))
        with pytest.raises(ValueError, match=rf"columns {bad} out of range for .*data.npy.*3 values.*0..2"):
            load_reference_data({**source, "columns": columns})
    np.testing.assert_array_equal(load_reference_data({**source, "columns": [-1]}), DATA[:, [2]])
    with pytest.raises(ValueError, match=r"integer indices, got \['a'\] for .*data.npy.*no column names"):
        load_reference_data({**source, "columns": ["a"]})
    np.save(tmp_path / "vector.npy", np.array([1.0, 2.0]))  # 1-D: one column, index 0
    with pytest.raises(ValueError, match=r"columns \[1\] out of range .*1 values"):
        load_reference_data({"type": "file", "path": str(tmp_path / "vector.npy"), "columns": [1]})
    scalar = tmp_path / "scalar.npy"
    np.save(scalar, np.float64(3.5))
    message = r"scalar.npy' holds a single number \(a 0-d array, value 3.5\).*1-D array.*2-D array"
    with pytest.raises(ValueError, match=message):
        load_reference_data({"type": "file", "path": str(scalar)})
    no_rows = tmp_path / "no_rows.npy"
    np.save(no_rows, np.empty((0, 3)))
    with pytest.raises(ValueError, match="is empty"):
        load_reference_data({"type": "file", "path": str(no_rows)})


def test_relative_paths_resolve_against_base_dir(tmp_path):
    np.save(tmp_path / "rel.npy", DATA)
    np.testing.assert_array_equal(load_reference_data({"type": "file", "path": "rel.npy"}, base_dir=tmp_path), DATA)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="know-how file not found: .*missing.csv"):
        load_reference_data({"type": "file", "path": str(tmp_path / "missing.csv")})
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"extension '.txt'; supported: .csv, .npy, .parquet"):
        load_reference_data({"type": "file", "path": str(tmp_path / "data.txt")})
    text = tmp_path / "text.csv"
    text.write_text("a,label\n1,good\n2,bad\n")
    with pytest.raises(ValueError, match=r"non-numeric columns \['label'\]"):
        load_reference_data({"type": "file", "path": str(text)})
    only_a = load_reference_data({"type": "file", "path": str(text), "columns": ["a"]})
    np.testing.assert_array_equal(only_a, [[1.0], [2.0]])
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read .* as a numeric .npy array"):
        load_reference_data({"type": "file", "path": str(objects)})
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[1.0, 2.0], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="row 1 contains NaN or inf"):
        load_reference_data({"type": "file", "path": str(nan)})
    with pytest.raises(ValueError, match=r"columns \['q'\] not in"):
        load_reference_data({"type": "file", "path": str(text), "columns": ["q"]})


# --------------------------------------------------------------------------- list, builtin
def test_list_source():
    np.testing.assert_array_equal(load_reference_data({"type": "list", "points": [[0, 3], [0, 2]]}), [[0, 3], [0, 2]])
    assert load_reference_data({"type": "list", "points": [4, 5, 6]}).tolist() == [[4.0], [5.0], [6.0]]
    with pytest.raises(ValueError, match="needs 'points'"):
        load_reference_data({"type": "list"})
    with pytest.raises(ValueError, match="equal-length numeric lists"):
        load_reference_data({"type": "list", "points": [[0, 1], [2]]})
    with pytest.raises(ValueError, match="is empty"):
        load_reference_data({"type": "list", "points": []})


def test_builtin_cliff_route():
    route = load_reference_data({"type": "builtin", "name": "cliff_standard_route"})
    assert route.tolist() == ROUTE
    np.testing.assert_array_equal(cliff_standard_route(), route)
    steps = np.abs(np.diff(route, axis=0)).sum(axis=1)
    assert np.all(steps == 1)  # a connected path of single moves
    neg, pos = cliff_side_points()
    assert neg.tolist() == [[x, 3] for x in range(1, 11)]
    assert pos.tolist() == [[x, 0] for x in range(12)]
    assert not {tuple(c) for c in route.tolist()} & {tuple(c) for c in neg.tolist()}  # never in the cliff
    np.testing.assert_array_equal(load_reference_data({"type": "builtin", "name": "cliff_cells"}), neg)
    np.testing.assert_array_equal(load_reference_data({"type": "builtin", "name": "cliff_top_row"}), pos)


def test_builtin_errors():
    names = r"valid names: cliff_standard_route, .*cartpole_balance"
    with pytest.raises(ValueError, match=rf"unknown builtin know-how 'route'; {names}"):
        load_reference_data({"type": "builtin", "name": "route"})
    with pytest.raises(ValueError, match=r"'cliff_standard_route' does not take \['seed'\]; options: none"):
        load_reference_data({"type": "builtin", "name": "cliff_standard_route", "seed": 1})


def test_unknown_type_and_keys():
    valid = "valid types: file, policy, list, builtin"
    with pytest.raises(ValueError, match=rf"unknown know-how source type 'url'; {valid}"):
        load_reference_data({"type": "url"})
    with pytest.raises(ValueError, match=r"unknown keys \['episode'\] .* valid keys: env, env_config, episodes"):
        load_reference_data({"type": "policy", "episode": 3})


# --------------------------------------------------------------------------- rollouts
def test_policy_rollouts_are_reproducible_from_the_seed():
    source = {
        "type": "policy",
        "env": "CartPole-v1",
        "policy": "qeu_tune.reward.sources:cartpole_balance_policy",
        "episodes": 3,
        "seed": 5,
        "max_steps": 40,
    }
    first, again = load_reference_data(source), load_reference_data(source)
    assert first.shape == (120, 4)
    np.testing.assert_array_equal(first, again)
    other = load_reference_data({**source, "seed": 6})
    assert not np.array_equal(first, other)
    # Episode i resets with seed + i: seed 6's first episode is seed 5's second one.
    np.testing.assert_array_equal(other[:40], first[40:80])


def test_rollout_records_episodes_and_accepts_module_class_envs():
    r = rollout_policy(
        "gymnasium.envs.classic_control.cartpole:CartPoleEnv",
        cartpole_balance_policy,
        episodes=2,
        seed=0,
        max_steps=25,
    )
    assert r.seeds == [0, 1] and r.episode_lengths == [25, 25] and r.observations.shape == (50, 4)
    assert r.episode_returns == [25.0, 25.0]


def test_cartpole_heuristic_balances():
    r = rollout_policy("CartPole-v1", cartpole_balance_policy, episodes=5, seed=0)
    assert np.mean(r.episode_lengths) >= 195
    # The docstring's claim: the full 500 steps from typical starts (held for 600 of 600
    # seeds when checked; 20 keep the test fast).
    r = rollout_policy("CartPole-v1", cartpole_balance_policy, episodes=20, seed=0)
    assert r.episode_lengths == [500] * 20


def test_mountaincar_expert_reaches_the_goal():
    r = rollout_policy("MountainCar-v0", mountaincar_energy_policy, episodes=3, seed=0)
    assert max(r.episode_lengths) < 200  # terminated at the goal before the time limit
    data = load_reference_data({"type": "builtin", "name": "mountaincar_energy", "episodes": 3, "seed": 0})
    np.testing.assert_array_equal(data, r.observations)
    assert data.shape == (sum(r.episode_lengths), 2)


def test_policy_errors():
    base = {"type": "policy", "env": "CartPole-v1", "episodes": 1}
    with pytest.raises(ValueError, match=r"needs \['policy'\]"):
        load_reference_data(base)
    with pytest.raises(ValueError, match="cannot import module 'no_such_qeu_module' for policy"):
        load_reference_data({**base, "policy": "no_such_qeu_module:act"})
    with pytest.raises(ValueError, match="episodes must be an integer >= 1"):
        load_reference_data({**base, "policy": POLICY, "episodes": 0})
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        load_reference_data({**base, "env": "NoSuchEnv-v0", "policy": POLICY})
