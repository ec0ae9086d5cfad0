"""Feature maps: identity, one-hot, RBF grid, user callables, and the spec errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qeu_tune.rt import FeatureMap, make_feature_map


def test_identity_flattens_copies_and_learns_dim():
    fm = make_feature_map({"type": "identity"})
    assert isinstance(fm, FeatureMap) and fm.dim is None
    obs = np.array([[1, 2], [3, 4]], dtype=np.float64)
    out = fm(obs)
    assert out.tolist() == [1.0, 2.0, 3.0, 4.0] and out.dtype == np.float64 and fm.dim == 4
    obs[0, 0] = 99.0
    assert out[0] == 1.0  # a copy, not a view of the observation
    np.testing.assert_array_equal(fm.map_batch(np.arange(8).reshape(2, 2, 2)), [[0, 1, 2, 3], [4, 5, 6, 7]])
    with pytest.raises(ValueError, match="produced 3 features, but 4 before"):
        fm([1, 2, 3])
    assert make_feature_map({"type": "identity", "dim": 2}).dim == 2
    assert make_feature_map({"type": "identity"}).map_batch([1.0, 2.0]).shape == (2, 1)


def test_onehot_values_dim_and_inputs():
    fm = make_feature_map({"type": "onehot", "n": 4})
    assert fm.dim == 4
    assert fm(2).tolist() == [0, 0, 1, 0]
    assert fm(np.int64(3)).tolist() == [0, 0, 0, 1]
    assert fm(np.array(1)).tolist() == [0, 1, 0, 0]
    assert fm(np.array([0])).tolist() == [1, 0, 0, 0]
    assert fm(2.0).tolist() == [0, 0, 1, 0]  # integral floats are categories too
    np.testing.assert_array_equal(fm.map_batch(np.array([3, 0, 3])), [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(fm.map_batch([[1], [2]]), [[0, 1, 0, 0], [0, 0, 1, 0]])
    shifted = make_feature_map({"type": "onehot", "n": 3, "start": -1})
    assert shifted(-1).tolist() == [1, 0, 0] and shifted(1).tolist() == [0, 0, 1]


def test_onehot_errors():
    fm = make_feature_map({"type": "onehot", "n": 4})
    with pytest.raises(ValueError, match=r"observation 4 is outside the categories 0..3; set n"):
        fm(4)
    with pytest.raises(ValueError, match=r"observation -1 \(row 1\) is outside"):
        fm.map_batch([0, -1])
    with pytest.raises(ValueError, match="one integer category per observation"):
        fm(2.5)
    with pytest.raises(ValueError, match="must be integers"):
        fm.map_batch([0.0, 1.5])
    with pytest.raises(ValueError, match=r"n \(number of categories\) >= 1"):
        make_feature_map({"type": "onehot"})


def test_rbf_values_in_one_dimension():
    # Centres 0, 0.5, 1; default width = spacing 0.5.
    fm = make_feature_map({"type": "rbf", "low": [0.0], "high": [1.0], "num": 3})
    assert fm.dim == 3

    def z(d):
        return math.exp(-0.5 * (d / 0.5) ** 2)

    np.testing.assert_allclose(fm([0.25]), [z(0.25), z(0.25), z(0.75)])
    np.testing.assert_allclose(fm(0.5), [z(0.5), 1.0, z(0.5)])
    wide = make_feature_map({"type": "rbf", "low": 0.0, "high": 1.0, "num": 3, "width": 2.0})
    np.testing.assert_allclose(wide([0.0]), [1.0, math.exp(-0.5 * 0.25**2), math.exp(-0.5 * 0.5**2)])


def test_rbf_default_width_neighbours_cross_at_exp_minus_one_eighth():
    fm = make_feature_map({"type": "rbf", "low": [0.0], "high": [3.0], "num": 4})  # spacing 1
    np.testing.assert_allclose(fm([1.5])[1:3], [math.exp(-1 / 8)] * 2, rtol=1e-15)  # halfway
    assert fm([1.0])[[0, 2]].tolist() == pytest.approx([math.exp(-1 / 2)] * 2, rel=1e-15)


def test_rbf_grid_order_range_and_batch():
    spec = {"type": "rbf", "low": [-1.2, -0.07], "high": [0.6, 0.07], "num": [2, 3]}
    fm = make_feature_map(spec)
    assert fm.dim == 6 and fm.spec == spec
    c0, c1 = np.linspace(-1.2, 0.6, 2), np.linspace(-0.07, 0.07, 3)
    for i in range(2):
        for j in range(3):  # first dimension varies slowest
            out = fm([c0[i], c1[j]])
            assert out[i * 3 + j] == pytest.approx(1.0) and out.argmax() == i * 3 + j
    rng = np.random.default_rng(0)
    obs = rng.uniform([-1.2, -0.07], [0.6, 0.07], size=(50, 2))
    batch = fm.map_batch(obs)
    assert batch.shape == (50, 6)
    assert np.all(batch > 0) and np.all(batch <= 1)
    np.testing.assert_allclose(batch, np.stack([fm(o) for o in obs]), rtol=1e-15)


def _rbf_reference(x, low, high, num, width=None):
    """exp(-0.5 * sum_d ((x_d - c_d) / w_d)^2) over the grid, first dim slowest, in plain Python."""
    axes, widths = [], []
    for lo, hi, k, w in zip(low, high, num, width or [None] * len(low)):
        axes.append([lo + (hi - lo) * i / (k - 1) for i in range(k)] if k > 1 else [(lo + hi) / 2])
        widths.append(w if w is not None else ((hi - lo) / (k - 1) if k > 1 else hi - lo))
    return [
        math.exp(-0.5 * sum(((xd - cd) / wd) ** 2 for xd, cd, wd in zip(x, c, widths)))
        for c in itertools.product(*axes)
    ]


@pytest.mark.parametrize(
    ("low", "high", "num", "width"),
    [
        ([-2.4, -2.0, -0.21, -2.0], [2.4, 2.0, 0.21, 2.0], [3, 3, 3, 3], None),  # cartpole_rt
        ([-1.2, -0.07], [0.6, 0.07], [4, 2], [0.3, 0.05]),
        ([0.0, -1.0, 5.0], [1.0, 1.0, 7.0], [2, 1, 5], None),  # one centre in a dimension
        ([-3.0], [3.0], [7], None),
    ],
)
def test_rbf_matches_the_reference_formula(low, high, num, width):
    spec = {"type": "rbf", "low": low, "high": high, "num": num}
    if width is not None:
        spec["width"] = width
    fm = make_feature_map(spec)
    rng = np.random.default_rng(3)
    span = np.subtract(high, low)
    # Inside the grid, around it and far outside (where features underflow to 0).
    X = rng.uniform(np.subtract(low, span), np.add(high, span), size=(200, len(low)))
    X[:3] = [low, high, np.add(low, 20 * span)]
    expected = np.array([_rbf_reference(x, low, high, num, width) for x in X])
    assert expected.shape == (200, math.prod(num))
    for x, row in zip(X, expected):
        for obs in (x, x.tolist(), x.reshape(1, -1)):
            out = fm(obs)
            assert out.shape == (fm.dim,) and out.dtype == np.float64
            np.testing.assert_allclose(out, row, rtol=1e-12, atol=1e-12)
    for obs in (X[5].astype(np.float32), np.round(X[6]).astype(np.int64)):
        np.testing.assert_allclose(fm(obs), _rbf_reference(obs.tolist(), low, high, num, width), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fm.map_batch(X), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fm.map_batch(X), np.stack([fm(x) for x in X]))
    assert fm.map_batch(np.empty((0, len(low)))).shape == (0, fm.dim)


def test_rbf_output_is_fresh_and_leaves_the_observation_alone():
    fm = make_feature_map({"type": "rbf", "low": [0.0, 0.0], "high": [1.0, 1.0], "num": 2})
    obs = np.array([0.25, 0.75])
    first = fm(obs)
    assert obs.tolist() == [0.25, 0.75]
    second = fm(obs)
    second[:] = -1.0
    np.testing.assert_array_equal(fm(obs), first)
    assert not np.shares_memory(first, obs)


def test_rbf_errors():
    with pytest.raises(ValueError, match="high > low"):
        make_feature_map({"type": "rbf", "low": [1.0], "high": [1.0], "num": 3})
    with pytest.raises(ValueError, match="'low' has 2 entries but 'high' has 1"):
        make_feature_map({"type": "rbf", "low": [0, 0], "high": [1], "num": 3})
    with pytest.raises(ValueError, match="integers >= 1"):
        make_feature_map({"type": "rbf", "low": [0], "high": [1], "num": 0})
    with pytest.raises(ValueError, match="'width' must be > 0"):
        make_feature_map({"type": "rbf", "low": [0], "high": [1], "num": 2, "width": 0})
    with pytest.raises(ValueError, match="needs 'low', 'high'"):
        make_feature_map({"type": "rbf", "low": [0]})
    fm = make_feature_map({"type": "rbf", "low": [0, 0], "high": [1, 1], "num": 2})
    with pytest.raises(ValueError, match="expects observations with 2 values, got 3"):
        fm([0.1, 0.2, 0.3])


def test_callable_map_with_kwargs():
    fm = make_feature_map({"type": "callable", "path": "numpy:clip", "kwargs": {"a_min": 0.0, "a_max": 1.0}})
    assert fm.dim is None
    assert fm([-1.0, 0.5, 3.0]).tolist() == [0.0, 0.5, 1.0] and fm.dim == 3
    np.testing.assert_array_equal(fm.map_batch([[2.0, -2.0, 0.1]]), [[1.0, 0.0, 0.1]])
    declared = make_feature_map({"type": "callable", "path": "numpy:square", "dim": 2})
    with pytest.raises(ValueError, match="produced 3 features, but 2 before"):
        declared([1, 2, 3])


@pytest.mark.parametrize("kind", ["identity", "callable"])
@pytest.mark.parametrize("dim", [0, -1, 2.0, "2", True])
def test_declared_dim_must_be_a_positive_integer(kind, dim):
    spec = {"type": kind, "dim": dim, **({"path": "numpy:square"} if kind == "callable" else {})}
    with pytest.raises(ValueError, match=rf"{kind} feature map 'dim' must be a positive integer, got {dim!r}"):
        make_feature_map(spec)
    assert make_feature_map({**spec, "dim": np.int64(3)}).dim == 3


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_qeu:f", r"cannot import module 'no_such_module_qeu' for feature function .*PYTHONPATH"),
        ("math:no_such_function", r"module 'math' has no attribute 'no_such_function'"),
        ("math.sqrt", r"must look like 'module:name'"),
        (None, r"must look like 'module:name'"),
        ("math:pi", r"'math:pi' is not callable"),
    ],
)
def test_callable_import_errors(path, message):
    with pytest.raises(ValueError, match=message):
        make_feature_map({"type": "callable", "path": path})


def test_unknown_type_and_keys_list_the_valid_ones():
    valid = "valid types: identity, onehot, rbf, callable"
    with pytest.raises(ValueError, match=rf"unknown feature map type 'tile'; {valid}"):
        make_feature_map({"type": "tile"})
    with pytest.raises(ValueError, match=r"unknown feature map type None"):
        make_feature_map({})
    with pytest.raises(ValueError, match=r"unknown keys \['nn'\] for .* 'onehot'; valid keys: n, start"):
        make_feature_map({"type": "onehot", "nn": 4})
