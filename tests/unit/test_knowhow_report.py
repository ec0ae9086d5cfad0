"""``qeu-tune knowhow``: the unit space of a reward design, fitted and described without training."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from qeu_tune.commands import main as cli
from qeu_tune.config.compose import compose, to_plain
from qeu_tune.reward.diagnostics import QUANTILES, summarize
from qeu_tune.reward.sources import cartpole_balance_policy, rollout_policy
from qeu_tune.rt import UnitSpace, make_feature_map

OVERRIDES = ["reward=cartpole_rt", "reward.metrics.balance.source.episodes=3"]


def by_definition(X: np.ndarray, ddof: int = 0):
    """The RT method written out (docs/rt_method.md, section 1)."""
    n, k = X.shape
    m = X.mean(axis=0)
    r = m @ m
    L = X @ m
    beta = L / r
    ve = np.maximum((X * X).sum(axis=1) - L * L / r, 0) / (k - 1)
    Y = np.stack([beta, np.sqrt(ve)], axis=1)
    dY = Y - Y.mean(axis=0)
    V = dY.T @ dY / (n - ddof)
    return np.einsum("ij,jk,ik->i", dY, np.linalg.inv(V), dY) / 2


def test_summary_matches_the_unit_space_definition_and_random_states_are_further():
    config = to_plain(compose(OVERRIDES))
    (s,) = summarize(config, episodes=5, seed=0)
    raw = rollout_policy("CartPole-v1", cartpole_balance_policy, episodes=3, seed=0).observations
    X = make_feature_map(config["reward"]["metrics"]["balance"]["feature"]).map_batch(raw)
    assert (s.n, s.k) == X.shape == (1500, 81)
    d2 = by_definition(X)
    assert s.mean_d2 == pytest.approx(1.0, abs=1e-9) and d2.mean() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(s.know_how_d, np.sqrt(d2), rtol=1e-7, atol=1e-9)
    assert np.quantile(s.random_d, 0.5) > np.quantile(s.know_how_d, 0.5)
    assert np.quantile(s.random_d, 0.95) > np.quantile(s.know_how_d, 0.95)
    assert not s.warnings


def test_ddof_1_averages_n_minus_1_over_n():
    (s,) = summarize(to_plain(compose([*OVERRIDES, "reward.metrics.balance.ddof=1"])), episodes=1)
    assert s.mean_d2 == pytest.approx((s.n - 1) / s.n, abs=1e-9)


def test_cli_prints_the_numbers_and_saves_the_unit_space(tmp_path, capsys):
    path = tmp_path / "unit_space.json"
    with pytest.raises(SystemExit) as stop:
        cli.main(["knowhow", *OVERRIDES, "metric=balance", "--save", str(path), "--episodes", "5"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "n=1500 samples, k=81 features" in out
    assert re.search(r"mean D\^2 over the unit space: 1\.000000", out)
    saved = UnitSpace.load(path)
    assert json.loads(path.read_text())["format"] == "qeu_tune.rt.UnitSpace" and saved.n_samples == 1500
    config = to_plain(compose(OVERRIDES))
    (s,) = summarize(config, episodes=5)
    printed = re.search(r"know-how samples\s+(.*)", out).group(1).split()
    np.testing.assert_allclose([float(v) for v in printed], np.quantile(s.know_how_d, QUANTILES), rtol=1e-3)
    np.testing.assert_allclose(saved.distance(s.patterns), s.know_how_d)


def test_unknown_metric_is_a_config_error(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["knowhow", *OVERRIDES, "metric=nope"])
    assert stop.value.code == 2 and "has the metrics balance" in capsys.readouterr().err
