"""ReferenceSet (QEU minRT): the RMS-over-coordinates definition, min over the set, the
sign from side points, the Cliff Walking route geometry, errors and round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qeu_tune.envs.cliff_grid import cliff_side_points, cliff_standard_route
from qeu_tune.rt import ReferenceSet


def brute_force(points, states):
    """min over points of sqrt(mean over coordinates of (p - c)^2), with explicit loops."""
    return np.array(
        [
            min(math.sqrt(sum((p - c) ** 2 for p, c in zip(state, point)) / len(point)) for point in points)
            for state in states
        ]
    )


def brute_force_sign(negative, positive, states):
    def nearest(points, state):
        return min(sum((p - c) ** 2 for p, c in zip(state, point)) for point in points)

    return np.array([-1.0 if nearest(negative, s) < nearest(positive, s) else 1.0 for s in states])


def test_rms_over_coordinates_definition():
    ref = ReferenceSet([[0.0, 0.0, 0.0]])
    assert float(ref.distance([1.0, 2.0, 2.0])) == pytest.approx(math.sqrt((1 + 4 + 4) / 3))
    assert float(ref.distance([0.0, 0.0, 3.0])) == pytest.approx(math.sqrt(3.0))  # 3 / sqrt(3)


def test_minimum_over_the_set():
    ref = ReferenceSet([[0, 0], [10, 0], [0, 10]])
    # (9, 1) is nearest to (10, 0): sqrt((1 + 1) / 2) = 1.
    assert float(ref.distance([9, 1])) == pytest.approx(1.0)
    np.testing.assert_allclose(ref.distance([[1, 0], [0, 7], [5, 5]]), [math.sqrt(0.5), math.sqrt(4.5), 5.0])


def test_random_sets_match_brute_force_single_and_batch():
    rng = np.random.default_rng(7)
    points, states = rng.normal(size=(40, 3)), rng.normal(size=(25, 3)) * 2
    ref = ReferenceSet(points)
    expected = brute_force(points.tolist(), states.tolist())
    np.testing.assert_allclose(ref.distance(states), expected, rtol=1e-12)
    np.testing.assert_allclose([float(ref.distance(s)) for s in states], expected, rtol=1e-12)


def test_large_coordinate_offsets_keep_the_right_nearest_point():
    # Points 1e-3 apart around 1e6: an uncentred |c|^2 - 2 c.p expansion would lose them.
    base = np.array([1e6, -2e6])
    points = base + np.array([[0.0, 0.0], [1e-3, 0.0], [0.0, 1e-3], [2e-3, 2e-3]])
    states = base + np.array([[0.9e-3, 0.1e-3], [0.1e-3, 0.8e-3], [1.9e-3, 2.2e-3]])
    ref = ReferenceSet(points)
    np.testing.assert_allclose(ref.distance(states), brute_force(points.tolist(), states.tolist()), rtol=1e-6)


def test_points_of_the_set_have_distance_exactly_zero():
    rng = np.random.default_rng(3)
    points = rng.random((30, 4)) * 100
    ref = ReferenceSet(points)
    assert np.all(ref.distance(points) == 0.0)
    assert all(float(ref.distance(p)) == 0.0 for p in points)


def test_single_state_returns_a_scalar():
    ref = ReferenceSet([[0, 0], [1, 1]])
    d = ref.distance(np.array([0.5, 0.0]))
    assert isinstance(d, np.floating) and np.ndim(d) == 0
    assert ref.distance([[0.5, 0.0]]).shape == (1,)
    assert ref.distance(np.empty((0, 2))).shape == (0,)


def test_sign_from_sides():
    # A horizontal reference line y = 1 between a "cliff" at y = 0 and an edge at y = 3.
    line = [[x, 1.0] for x in range(5)]
    cliff, edge = [[x, 0.0] for x in range(5)], [[x, 3.0] for x in range(5)]
    ref = ReferenceSet(line, negative_side=cliff, positive_side=edge)
    # (2, 0.5): cliff 0.5 away, edge 2.5 -> negative; (2, 2): cliff 2, edge 1 -> positive.
    assert float(ref.signed_distance([2, 0.5])) == pytest.approx(-math.sqrt(0.25 / 2))
    assert float(ref.signed_distance([2, 2.0])) == pytest.approx(math.sqrt(1 / 2))
    # (2, 1.5): equidistant from both sides -> +1 (only strictly nearer the cliff is negative).
    assert float(ref.signed_distance([2, 1.5])) == pytest.approx(math.sqrt(0.25 / 2))
    np.testing.assert_allclose(
        ref.signed_distance([[2, 0.5], [2, 2.0], [2, 1.5]]),
        [-math.sqrt(0.125), math.sqrt(0.5), math.sqrt(0.125)],
    )


def test_signed_distance_with_large_side_sets_matches_brute_force():
    # More than 4096 side coordinates: the single-state path searches each set separately.
    rng = np.random.default_rng(11)
    points, neg, pos = rng.random((50, 2)), rng.random((2500, 2)) - [0, 1], rng.random((2500, 2)) + [0, 1]
    states = rng.random((30, 2)) * [1, 3] - [0, 1]
    ref = ReferenceSet(points, negative_side=neg, positive_side=pos)
    sign = brute_force_sign(neg.tolist(), pos.tolist(), states.tolist())
    expected = brute_force(points.tolist(), states.tolist()) * sign
    np.testing.assert_allclose(ref.signed_distance(states), expected, rtol=1e-12)
    np.testing.assert_allclose([float(ref.signed_distance(s)) for s in states], expected, rtol=1e-12)


# --------------------------------------------------------------------------- Cliff Walking
@pytest.fixture
def cliff():
    neg, pos = cliff_side_points()
    return ReferenceSet(cliff_standard_route(), negative_side=neg, positive_side=pos)


def test_cliff_route_geometry(cliff):
    route = cliff_standard_route()
    assert [0, 3] in route.tolist() and [11, 3] in route.tolist()  # start and goal
    assert np.all(cliff.distance(route) == 0.0)
    assert np.all(cliff.signed_distance(route) == 0.0)
    # Between the route row (y=1) and the cliff: one row off, nearer the cliff.
    assert float(cliff.distance([5, 2])) == pytest.approx(math.sqrt(1 / 2))
    assert float(cliff.signed_distance([5, 2])) == pytest.approx(-math.sqrt(1 / 2))
    # In the cliff: two rows off; on the top row: one row off, on the safe side.
    assert float(cliff.signed_distance([5, 3])) == pytest.approx(-math.sqrt(4 / 2))
    assert float(cliff.signed_distance([5, 0])) == pytest.approx(math.sqrt(1 / 2))
    # Top-left corner (0, 0): nearest route cell (0, 1).
    assert float(cliff.signed_distance([0, 0])) == pytest.approx(math.sqrt(1 / 2))


def test_cliff_all_cells_match_brute_force(cliff):
    cells = [[x, y] for y in range(4) for x in range(12)]
    neg, pos = cliff_side_points()
    sign = brute_force_sign(neg.tolist(), pos.tolist(), cells)
    expected = brute_force(cliff_standard_route().tolist(), cells) * sign
    np.testing.assert_allclose(cliff.signed_distance(cells), expected, rtol=1e-15)
    np.testing.assert_allclose([float(cliff.signed_distance(c)) for c in cells], expected, rtol=1e-15)
    assert np.sum(cliff.distance(cells) == 0.0) == 16  # exactly the route's cells


# --------------------------------------------------------------------------- errors, data
def test_errors():
    with pytest.raises(ValueError, match="points is empty"):
        ReferenceSet(np.empty((0, 2)))
    with pytest.raises(ValueError, match=r"2-D .* \[\[v1\], \[v2\], ...\]"):
        ReferenceSet([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"points row 1 contains NaN or inf"):
        ReferenceSet([[0, 0], [np.nan, 1]])
    ref = ReferenceSet([[0, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"dimension mismatch: the states have 3 coordinates .* dim=2"):
        ref.distance([1, 2, 3])
    with pytest.raises(ValueError, match=r"dimension mismatch"):
        ref.distance([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"X row 2 contains NaN or inf"):
        ref.distance([[0, 0], [1, 1], [np.inf, 0]])
    with pytest.raises(ValueError, match=r"the state contains NaN or inf"):
        ref.distance([np.nan, 0.0])
    with pytest.raises(ValueError, match=r"signed_distance needs side points: .*negative_side=.*positive_side="):
        ref.signed_distance([0, 0])
    with pytest.raises(ValueError, match="give both negative_side and positive_side"):
        ReferenceSet([[0, 0]], negative_side=[[0, 1]])
    with pytest.raises(ValueError, match=r"positive_side points have 3 coordinates .* dim=2"):
        ReferenceSet([[0, 0]], negative_side=[[0, 1]], positive_side=[[0, 1, 2]])
    signed = ReferenceSet([[0, 0]], negative_side=[[0, 1]], positive_side=[[0, -1]])
    with pytest.raises(ValueError, match=r"the state contains NaN or inf"):
        signed.signed_distance([0.0, np.nan])


def test_input_and_overflow_errors():
    ref = ReferenceSet([[0, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"X row 1 contains NaN or inf \(\[1.0, nan\]\) \(2 rows in all\)"):
        ref.distance([[0, 0], [1, np.nan], [np.inf, 0]])
    with pytest.raises(ValueError, match=r"overflowed .*rescale the states"):
        ref.distance([[1e200, 1e200], [0, 0]])
    with np.errstate(over="ignore"), pytest.raises(ValueError, match=r"overflowed .*rescale the states"):
        ref.distance([1e200, 1e200])  # the fast single-state path leaves numpy's warning on
    with pytest.raises(ValueError, match=r"X must have shape \(m, dim\) or \(dim,\), got shape \(1, 1, 2\)"):
        ref.distance([[[0, 0]]])
    with pytest.raises(ValueError, match=r"X must be a numeric array-like of shape \(m, dim\) or \(dim,\)"):
        ref.distance(["a", "b"])


def test_to_dict_from_dict_round_trip(cliff):
    data = json.loads(json.dumps(cliff.to_dict()))
    assert data["format"] == "qeu_tune.rt.ReferenceSet" and len(data["points"]) == 16
    again = ReferenceSet.from_dict(data)
    cells = [[x, y] for y in range(4) for x in range(12)]
    np.testing.assert_array_equal(again.signed_distance(cells), cliff.signed_distance(cells))
    plain = ReferenceSet.from_dict(ReferenceSet([[1, 2]]).to_dict())
    assert not plain.has_sides and plain.to_dict()["negative_side"] is None
    with pytest.raises(ValueError, match="expected format 'qeu_tune.rt.ReferenceSet'"):
        ReferenceSet.from_dict({"points": [[0, 0]]})
