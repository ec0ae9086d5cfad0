"""UnitSpace against hand-computed examples, an independent loop implementation and the
RT invariants; every error path; persistence round trips."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from qeu_tune.rt import UnitSpace

# Hand example: m = (2, 2, 2), r = 12; row sums 6, 6, 8, 4 give L = 12, 12, 16, 8.
HAND_X = [[1, 2, 3], [3, 2, 1], [2, 4, 2], [2, 0, 2]]
S43 = math.sqrt(4 / 3)  # sqrt(V_e) of rows 3 and 4: S_e = 24 - 256/12 = 8 - 64/12 = 8/3


def reference_rt(unit, samples, ddof=0, residual="sqrt_ve"):
    """Textbook RT with explicit loops over rows and features (independent of the code)."""
    n, k = len(unit), len(unit[0])
    m = [sum(row[j] for row in unit) / n for j in range(k)]
    r = sum(mj * mj for mj in m)

    def ys(x):
        L = sum(mj * xj for mj, xj in zip(m, x))
        beta = L / r
        if residual == "sqrt_ve":
            se = sum(xj * xj for xj in x) - L * L / r
            return beta, math.sqrt(max(se, 0.0) / (k - 1))
        return beta, sum(abs(xj - beta * mj) for xj, mj in zip(x, m)) / k

    yu = [ys(x) for x in unit]
    y1b = sum(y[0] for y in yu) / n
    y2b = sum(y[1] for y in yu) / n
    v11 = sum((y[0] - y1b) ** 2 for y in yu) / (n - ddof)
    v22 = sum((y[1] - y2b) ** 2 for y in yu) / (n - ddof)
    v12 = sum((y[0] - y1b) * (y[1] - y2b) for y in yu) / (n - ddof)
    det = v11 * v22 - v12 * v12
    Y, D2 = [], []
    for x in samples:
        y1, y2 = ys(x)
        a, b = y1 - y1b, y2 - y2b
        Y.append((y1, y2))
        D2.append((v22 * a * a - 2 * v12 * a * b + v11 * b * b) / det / 2)
    return np.array(Y), np.array(D2)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- hand examples
def test_hand_example_sqrt_ve():
    us = UnitSpace.fit(HAND_X)
    expected_y = [[1, 1], [1, 1], [4 / 3, S43], [2 / 3, S43]]
    np.testing.assert_allclose(us.transform(HAND_X), expected_y, rtol=1e-12)
    # Ybar = (1, (1 + S43)/2); V = diag(1/18, a^2) with a = (S43 - 1)/2 (V12 = 0 by symmetry).
    a = (S43 - 1) / 2
    np.testing.assert_allclose(us.y_mean, [1, (1 + S43) / 2], rtol=1e-12)
    np.testing.assert_allclose(us.cov, [[1 / 18, 0], [0, a * a]], rtol=1e-12, atol=1e-15)
    # D^2 = (dY1^2 * 18 + dY2^2 / a^2) / 2: rows 1-2 have dY = (0, -a), rows 3-4 (+-1/3, a).
    np.testing.assert_allclose(us.distance(HAND_X, squared=True), [0.5, 0.5, 1.5, 1.5], rtol=1e-12)
    # New samples: [4, 0, 2] has Y = (1, 2); [6, 6, 6] has Y = (3, 0).
    new = [[4, 0, 2], [6, 6, 6]]
    np.testing.assert_allclose(us.transform(new), [[1, 2], [3, 0]], rtol=1e-12, atol=1e-12)
    expected_d2 = [
        ((3 - S43) / (S43 - 1)) ** 2 / 2,  # = 71.141...
        (2**2 * 18 + ((1 + S43) / (S43 - 1)) ** 2) / 2,
    ]
    np.testing.assert_allclose(us.distance(new, squared=True), expected_d2, rtol=1e-10)
    np.testing.assert_allclose(us.distance(new), np.sqrt(expected_d2), rtol=1e-10)
    assert expected_d2[0] == pytest.approx(71.14101615, rel=1e-9)


def test_hand_example_ddof1_scales_by_n_minus_1_over_n():
    us = UnitSpace.fit(HAND_X, ddof=1)  # V is 4/3 of the ddof=0 one, so D^2 is 3/4 of it
    np.testing.assert_allclose(us.distance(HAND_X, squared=True), [0.375, 0.375, 1.125, 1.125], rtol=1e-12)


def test_hand_example_newrt_mae_residual():
    us = UnitSpace.fit(HAND_X, residual="mae")
    # Y2 = mean |x - beta m|: rows 1-2 (beta 1): (1+0+1)/3; row 3 (beta 4/3, beta m = 8/3):
    # (2/3 + 4/3 + 2/3)/3; row 4 (beta 2/3, beta m = 4/3): the same.
    F = Fraction
    y2 = [F(2, 3), F(2, 3), F(8, 9), F(8, 9)]
    np.testing.assert_allclose(us.transform(HAND_X)[:, 1], [float(v) for v in y2], rtol=1e-12)
    # Ybar2 = 7/9, V22 = (1/9)^2, V12 = 0, V11 = 1/18.
    np.testing.assert_allclose(us.cov, [[1 / 18, 0], [0, 1 / 81]], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(us.distance(HAND_X, squared=True), [0.5, 0.5, 1.5, 1.5], rtol=1e-12)
    # [4, 0, 2]: beta 1, residual (2 + 2 + 0)/3 = 4/3, dY2 = 5/9 -> D^2 = (5/9 * 9)^2 / 2.
    assert float(us.distance([4, 0, 2], squared=True)) == pytest.approx(12.5, rel=1e-12)


@pytest.mark.parametrize("residual", ["sqrt_ve", "mae"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_matches_independent_loop_implementation(rng, residual, ddof):
    unit = rng.gamma(2.0, size=(25, 6))
    new = np.vstack([rng.gamma(2.0, size=(6, 6)), 3 * unit[0], np.zeros(6)])
    us = UnitSpace.fit(unit, ddof=ddof, residual=residual)
    Y, D2 = reference_rt(unit.tolist(), new.tolist(), ddof=ddof, residual=residual)
    np.testing.assert_allclose(us.transform(new), Y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(us.distance(new, squared=True), D2, rtol=1e-9)
    np.testing.assert_allclose(us.distance(new), np.sqrt(D2), rtol=1e-9)
    for x, d2 in zip(new, D2):  # the single-sample path computes the same numbers
        assert float(us.distance(x, squared=True)) == pytest.approx(d2, rel=1e-9)


@pytest.mark.parametrize("residual", ["sqrt_ve", "mae"])  # two different batch paths
def test_batch_spanning_several_blocks_matches_reference(rng, residual):
    unit = rng.random((50, 36))
    us = UnitSpace.fit(unit, residual=residual)
    new = rng.random((20_001, 36))  # several blocks plus a ragged last one
    assert new.shape[0] > 3 * us._block and new.shape[0] % us._block
    Y, D2 = reference_rt(unit.tolist(), new[::997].tolist(), residual=residual)
    np.testing.assert_allclose(us.distance(new, squared=True)[::997], D2, rtol=1e-9)
    np.testing.assert_allclose(us.transform(new)[::997], Y, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("residual", ["sqrt_ve", "mae"])
def test_unit_space_averages(rng, residual):
    X = rng.gamma(3.0, size=(40, 8))
    us0 = UnitSpace.fit(X, ddof=0, residual=residual)
    us1 = UnitSpace.fit(X, ddof=1, residual=residual)
    assert us0.transform(X)[:, 0].mean() == pytest.approx(1.0, abs=1e-12)  # mean Y1 = 1
    assert us0.distance(X, squared=True).mean() == pytest.approx(1.0, rel=1e-10)
    assert us1.distance(X, squared=True).mean() == pytest.approx(39 / 40, rel=1e-10)


@pytest.mark.parametrize("residual", ["sqrt_ve", "mae"])
@pytest.mark.parametrize("scale", [1e-3, 7.3, 250.0])
def test_distance_invariant_to_scaling_all_features(rng, residual, scale):
    X, new = rng.random((30, 5)), rng.random((10, 5)) * 2
    d = UnitSpace.fit(X, residual=residual).distance(new)
    d_scaled = UnitSpace.fit(X * scale, residual=residual).distance(new * scale)
    np.testing.assert_allclose(d_scaled, d, rtol=1e-9)


# --------------------------------------------------------------------------- shapes, inputs
def test_single_sample_shapes():
    us = UnitSpace.fit(HAND_X)
    d = us.distance(np.array([4.0, 0.0, 2.0]))
    assert isinstance(d, np.floating) and np.ndim(d) == 0
    assert np.ndim(us.distance([4, 0, 2], squared=True)) == 0
    assert us.transform([4, 0, 2]).shape == (2,)
    assert us.transform([[4, 0, 2]]).shape == (1, 2)
    assert us.distance(np.empty((0, 3))).shape == (0,)
    assert us.n_features == 3 and us.n_samples == 4


def test_input_types_give_the_same_distances(rng):
    X = rng.random((20, 4))
    us = UnitSpace.fit(X)
    expected = us.distance(X)
    np.testing.assert_array_equal(us.distance(X.tolist()), expected)
    np.testing.assert_allclose(us.distance(np.asfortranarray(X)), expected, rtol=1e-12)
    np.testing.assert_allclose(us.distance(X.astype(np.float32)), expected, rtol=1e-6)
    assert float(us.distance(X[3].astype(np.float32))) == pytest.approx(expected[3], rel=1e-6)
    assert float(us.distance(tuple(X[3]))) == pytest.approx(expected[3], rel=1e-12)


def test_results_are_read_only_parameters(rng):
    us = UnitSpace.fit(rng.random((10, 3)))
    with pytest.raises(ValueError):
        us.mean_pattern[0] = 5.0


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip_is_exact(tmp_path, rng):
    X, new = rng.random((30, 7)), rng.random((100, 7))
    for residual in ("sqrt_ve", "mae"):
        us = UnitSpace.fit(X, ddof=1, residual=residual)
        path = tmp_path / f"us_{residual}.json"
        us.save(path)
        data = json.loads(path.read_text())  # plain, documented JSON
        assert data["format"] == "qeu_tune.rt.UnitSpace" and data["version"] == 1
        assert data["residual"] == residual and data["ddof"] == 1 and data["n_samples"] == 30
        assert len(data["mean_pattern"]) == 7 and len(data["cov"]) == 2
        loaded = UnitSpace.load(path)
        np.testing.assert_array_equal(loaded.distance(new), us.distance(new))
        assert float(loaded.distance(new[0])) == float(us.distance(new[0]))
        assert loaded.residual == residual and loaded.ddof == 1


def test_to_dict_from_dict_round_trip_through_json(rng):
    X, new = rng.random((12, 4)), rng.random((9, 4))
    us = UnitSpace.fit(X)
    again = UnitSpace.from_dict(json.loads(json.dumps(us.to_dict())))
    np.testing.assert_array_equal(again.distance(new, squared=True), us.distance(new, squared=True))
    np.testing.assert_array_equal(again.transform(new), us.transform(new))


def test_from_dict_and_load_reject_other_data(tmp_path):
    with pytest.raises(ValueError, match="expected format 'qeu_tune.rt.UnitSpace'"):
        UnitSpace.from_dict({"format": "something-else"})
    data = UnitSpace.fit(HAND_X).to_dict()
    with pytest.raises(ValueError, match="version 99"):
        UnitSpace.from_dict({**data, "version": 99})
    with pytest.raises(ValueError, match="positive-definite"):
        UnitSpace.from_dict({**data, "cov": [[1.0, 2.0], [2.0, 1.0]]})
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not a JSON unit-space file"):
        UnitSpace.load(bad)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("X", [[[1, 2, 3]], [[1], [2], [3]], [1, 2, 3], np.ones((0, 4)), [[1, 2, 3], [4, 4, 1]]])
def test_too_few_samples_or_features(X):
    with pytest.raises(ValueError, match=r"at least 3 samples .* and 2 features") as err:
        UnitSpace.fit(X)
    shape = np.asarray(X, dtype=float).shape
    assert f"shape {shape}" in str(err.value)
    # Each message gives the reason for what is missing, and only for that.
    assert ("single feature cannot work" in str(err.value)) == (len(shape) == 2 and shape[1] < 2)
    assert ("textbook minimum is n >= 2" in str(err.value)) == (len(shape) == 2 and shape[0] < 3)


def test_three_samples_are_enough():
    us = UnitSpace.fit([[1, 2, 3], [3, 2, 1], [2, 4, 1]])
    assert us.n_samples == 3 and float(us.distance([2, 2, 2])) >= 0.0


def test_nan_and_inf_in_unit_space_name_the_row(rng):
    X = rng.random((6, 3))
    X[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 4 contains nan at feature 1"):
        UnitSpace.fit(X)
    X[4, 1] = 0.5
    X[2, 0] = -np.inf
    with pytest.raises(ValueError, match=r"row 2 contains -inf at feature 0"):
        UnitSpace.fit(X)


def test_nan_and_inf_in_samples_name_the_row(rng):
    us = UnitSpace.fit(rng.random((20, 5)))
    new = rng.random((30_000, 5))
    new[25_017, 3] = np.nan  # in a later block than the first
    with pytest.raises(ValueError, match=r"X row 25017 contains nan at feature 3.*finite"):
        us.distance(new)
    with pytest.raises(ValueError, match=r"X row 25017"):
        us.transform(new)
    new[25_017, 3] = np.inf
    with pytest.raises(ValueError, match=r"X row 25017 contains inf"):
        us.distance(new, squared=True)
    with pytest.raises(ValueError, match=r"single sample\) contains nan at feature 2"):
        us.distance([0.1, 0.2, np.nan, 0.3, 0.4])
    with pytest.raises(ValueError, match=r"single sample\) contains inf"):
        UnitSpace.fit(rng.random((20, 5)), residual="mae").distance([0.1, np.inf, 0.2, 0.3, 0.4])


def test_overflow_is_reported_not_returned(rng):
    us = UnitSpace.fit(rng.random((10, 3)))
    with pytest.raises(ValueError, match="overflowed.*rescale"):
        us.distance([[1e200, 1e200, 1e200], [1, 1, 1]])


def test_zero_mean_pattern(rng):
    X = rng.normal(size=(50, 4))
    X -= X.mean(axis=0)  # standardised data: mean pattern exactly 0
    with pytest.raises(ValueError, match="mean pattern is \\(close to\\) zero") as err:
        UnitSpace.fit(X)
    msg = str(err.value)
    assert "non-negative features with a non-zero mean" in msg
    assert "one-hot or rbf feature map" in msg and "shift" in msg
    with pytest.raises(ValueError, match="r = sum_j m_j\\^2 = 0"):
        UnitSpace.fit(np.zeros((5, 3)))


def test_singular_covariance_all_proportional_to_the_mean():
    X = np.outer([1.0, 2.0, 3.0, 5.0], [1.0, 4.0, 2.0])
    with pytest.raises(ValueError, match="every unit-space sample is proportional to the mean pattern"):
        UnitSpace.fit(X)


def test_singular_covariance_equal_v_e():
    # rows = c_i * (1, 1, 1) + residuals orthogonal to it, all of squared norm 2: V_e = 1.
    X = [[3, 1, 2], [2, 4, 3], [4, 5, 3], [3, 2, 4]]
    with pytest.raises(ValueError, match=r"same Y2 = sqrt\(V_e\) = 1 \(e.g. V_e equal"):
        UnitSpace.fit(X)


def test_singular_covariance_constant_beta():
    X = [[1, 2, 3], [2, 2, 2], [3, 1, 2], [2, 3, 1]]  # equal row sums, m = (2, 2, 2)
    with pytest.raises(ValueError, match="same sensitivity beta = 1 \\(constant beta"):
        UnitSpace.fit(X)


def test_singular_covariance_two_samples():
    for X in ([[1, 2, 3], [4, 4, 1]], [[1, 2, 3], [5, 1, 1]]):
        with pytest.raises(ValueError, match="2 unit-space samples .* rank 1 .* at least 3"):
            UnitSpace.fit(X)


def test_singular_covariance_y2_linear_in_y1():
    # x = 2 beta (1, 1, 1) + s beta (1, -1, 0) with beta = 0.5, 1, 1.5 and s = +1, +1, -1:
    # m = (2, 2, 2), the residuals cancel in the mean and Y2 = sqrt(2 beta^2 / 2) = Y1.
    X = [[1.5, 0.5, 1.0], [3.0, 1.0, 2.0], [1.5, 4.5, 3.0]]
    with pytest.raises(ValueError, match=r"Y2 is an exact linear function of Y1 over the 3 unit-space"):
        UnitSpace.fit(X)


def test_dimension_mismatch_gives_both_k():
    us = UnitSpace.fit(HAND_X)
    calls = (
        lambda: us.distance([[1, 2, 3, 4]]),
        lambda: us.distance([1, 2]),
        lambda: us.transform([[1, 2, 3, 4]]),
    )
    for call in calls:
        with pytest.raises(ValueError, match=r"dimension mismatch: the samples have \d features .* k=3"):
            call()


def test_invalid_options():
    with pytest.raises(ValueError, match=r"residual='rms' .* \('sqrt_ve', 'mae'\)"):
        UnitSpace.fit(HAND_X, residual="rms")
    with pytest.raises(ValueError, match="ddof must be 0 .* or 1"):
        UnitSpace.fit(HAND_X, ddof=2)
    with pytest.raises(ValueError, match=r"shape \(m, k\) or \(k,\)"):
        UnitSpace.fit(HAND_X).distance(np.ones((2, 2, 3)))


def test_rt_package_imports_no_gymnasium_ray_or_torch():
    code = (
        "import sys, qeu_tune.rt; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'ray', 'torch')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
