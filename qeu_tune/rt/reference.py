"""QEU's reference-set distance ("minRT") and its signed variant.

A reference set is a list of points, e.g. the cells of a "standard route" a stakeholder
wants the agent to follow. The distance of a state ``p`` to the set is the distance to its
nearest member, measured as the root-mean-square over coordinates, as in the QEU blog::

    distance(p) = min_c sqrt(mean_j (p_j - c_j)^2)      # = Euclidean / sqrt(dim)

The signed variant multiplies it by ``-1`` when the state is nearer to a point of the
``negative_side`` set (e.g. the cliff) than to any point of the ``positive_side`` set
(e.g. the far edge), else by ``+1`` (ties count as ``+1``).

Nearest points are found with the expansion ``|p - c|^2 = |c|^2 - 2 c.p + |p|^2`` on
points centred at the set's centroid (one mat-vec instead of a difference per point), and
the returned distance is then recomputed exactly from ``p - c`` for the chosen point: a
state equal to a reference point has distance exactly 0.

Plain-data format (``to_dict``)::

    {"format": "qeu_tune.rt.ReferenceSet", "version": 1,
     "points": [[...], ...], "negative_side": [[...], ...] | null, "positive_side": ... | null}
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from numpy.typing import ArrayLike

from qeu_tune.rt._checks import _check_samples, _nonfinite_error, check_saved_format

__all__ = ["ReferenceSet"]

FORMAT = "qeu_tune.rt.ReferenceSet"
FORMAT_VERSION = 1

_INF = math.inf
_SHAPE = "(m, dim) or (dim,)"  # the shapes queries accept, for messages
_BLOCK_ELEMENTS = 1 << 18  # samples x points per block in batch queries (2 MiB of float64)
# Up to this many coordinates over all points, a single signed query takes exact
# differences to every point at once (one pass, three minima) instead of three searches.
_FUSED_MAX_ELEMENTS = 4096


def _points_array(points: ArrayLike, name: str) -> np.ndarray:
    try:
        P = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric (N, dim) array-like, e.g. [[x, y], ...]: {exc}") from None
    if P.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N points x dim coordinates), got shape {P.shape}; write "
            f"one-coordinate points as [[v1], [v2], ...]."
        )
    if P.shape[0] == 0 or P.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {P.shape}): give at least one point with >= 1 coordinate.")
    bad = np.flatnonzero(~np.isfinite(P).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{name} row {int(bad[0])} contains NaN or inf ({P[bad[0]].tolist()}); reference points must be finite."
        )
    P.flags.writeable = False
    return P


class _Nearest:
    """Nearest-point queries against one fixed point set (exact squared distances)."""

    def __init__(self, P: np.ndarray) -> None:
        self.P = P
        self.centre = P.mean(axis=0)
        Pc = P - self.centre  # centring keeps the expansion accurate for offset coordinates
        self.cc = np.einsum("ij,ij->i", Pc, Pc)
        self.minus2_Pc = -2.0 * Pc
        self.single_point = P.shape[0] == 1

    def sq_one(self, x: np.ndarray) -> float:
        if self.single_point:
            diff = self.P[0] - x
        else:
            i = (self.cc + self.minus2_Pc.dot(x - self.centre)).argmin()
            diff = self.P[i] - x  # exact distance of the chosen point
        return float(diff.dot(diff))

    def sq_batch(self, X: np.ndarray) -> np.ndarray:
        n, N = X.shape[0], self.P.shape[0]
        out = np.empty(n)
        B = max(1, _BLOCK_ELEMENTS // N)
        for s in range(0, n, B):
            Xb = X[s : s + B]
            if self.single_point:
                diff = Xb - self.P[0]
            else:
                S = (Xb - self.centre) @ self.minus2_Pc.T
                S += self.cc
                diff = Xb - self.P[S.argmin(axis=1)]
            np.einsum("ij,ij->i", diff, diff, out=out[s : s + B])
        return out


class ReferenceSet:
    """Distance of states to a set of reference points (QEU minRT), optionally signed.

    Example:
        >>> route = [[0, 3], [0, 2], [0, 1], [1, 1], [2, 1]]
        >>> cliff, top = [[1, 3], [2, 3]], [[1, 0], [2, 0]]
        >>> ref = ReferenceSet(route, negative_side=cliff, positive_side=top)
        >>> float(ref.distance([2, 1]))
        0.0
        >>> round(float(ref.distance([2, 2])), 4)   # sqrt(((2-2)^2 + (2-1)^2) / 2)
        0.7071
        >>> round(float(ref.signed_distance([2, 2])), 4)  # nearer the cliff row than the top row
        -0.7071
        >>> ref.distance([[2, 1], [2, 3]]).tolist()
        [0.0, 1.4142135623730951]
    """

    def __init__(
        self,
        points: ArrayLike,
        *,
        negative_side: ArrayLike | None = None,
        positive_side: ArrayLike | None = None,
    ) -> None:
        """Creates a reference set.

        Args:
            points: The reference points, shape ``(N, dim)``, ``N >= 1``.
            negative_side: Points whose side gives ``signed_distance`` a negative sign (e.g.
                the cliff cells), shape ``(N_neg, dim)``. Give both sides or neither.
            positive_side: Points of the other side (e.g. the far edge), ``(N_pos, dim)``.

        Raises:
            ValueError: Empty or non-finite points, inconsistent dimensions, or only one side.
        """
        P = _points_array(points, "points")
        self._dim = int(P.shape[1])
        self._main = _Nearest(P)
        if (negative_side is None) != (positive_side is None):
            raise ValueError(
                "give both negative_side and positive_side (the sign compares the nearest point of each), or neither."
            )
        self._neg = self._pos = None
        self._fused: np.ndarray | None = None
        self._cuts: np.ndarray | None = None
        if negative_side is not None:
            neg = _points_array(negative_side, "negative_side")
            pos = _points_array(positive_side, "positive_side")
            for name, S in (("negative_side", neg), ("positive_side", pos)):
                if S.shape[1] != self._dim:
                    raise ValueError(
                        f"{name} points have {S.shape[1]} coordinates but the reference points have dim={self._dim}."
                    )
            self._neg, self._pos = _Nearest(neg), _Nearest(pos)
            if P.size + neg.size + pos.size <= _FUSED_MAX_ELEMENTS:
                self._fused = np.vstack([P, neg, pos])
                self._cuts = np.array([0, P.shape[0], P.shape[0] + neg.shape[0]])
        self._inv_dim = 1.0 / self._dim

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Number of coordinates of a point."""
        return self._dim

    @property
    def points(self) -> np.ndarray:
        """The reference points (read-only, ``(N, dim)``)."""
        return self._main.P

    @property
    def has_sides(self) -> bool:
        """Whether side points were given (``signed_distance`` available)."""
        return self._neg is not None

    def __len__(self) -> int:
        return int(self._main.P.shape[0])

    def __repr__(self) -> str:
        return f"ReferenceSet(n_points={len(self)}, dim={self._dim}, has_sides={self.has_sides})"

    # ------------------------------------------------------------------ queries
    def distance(self, X: ArrayLike) -> np.ndarray:
        """RMS-over-coordinates distance to the nearest reference point.

        Args:
            X: States, shape ``(m, dim)``, or one state of shape ``(dim,)``.

        Returns:
            Shape ``(m,)``, or a 0-d ``np.float64`` for one state.

        Raises:
            ValueError: Wrong number of coordinates or NaN/inf (with the row).

        Example:
            >>> ReferenceSet([[0, 0], [4, 0]]).distance([[1, 0], [4, 2]]).round(4).tolist()
            [0.7071, 1.4142]
        """
        X = _check_samples(X, self._dim, _SHAPE, _mismatch)
        if X.ndim == 1:
            d2 = self._main.sq_one(X)
            if not d2 < _INF:
                raise _states_nonfinite(X, single=True)
            return np.float64(math.sqrt(d2 * self._inv_dim))
        d2 = self._main.sq_batch(X)
        self._check_output(d2, X)
        d2 *= self._inv_dim
        return np.sqrt(d2, out=d2)

    def signed_distance(self, X: ArrayLike) -> np.ndarray:
        """``distance(X)`` times ``-1`` where the nearest negative-side point is nearer than
        the nearest positive-side point, else ``+1``.

        Args:
            X: States, shape ``(m, dim)``, or one state of shape ``(dim,)``.

        Returns:
            Shape ``(m,)``, or a 0-d ``np.float64`` for one state.

        Raises:
            ValueError: No side points were given, wrong dimension, or NaN/inf.

        Example:
            >>> ref = ReferenceSet([[0, 1]], negative_side=[[0, 0]], positive_side=[[0, 3]])
            >>> ref.signed_distance([[0, 0.5], [0, 2]]).round(4).tolist()
            [-0.3536, 0.7071]
        """
        if self._neg is None:
            raise ValueError(
                "signed_distance needs side points: create the ReferenceSet with "
                "negative_side=... and positive_side=... (e.g. cliff cells and far-edge cells)."
            )
        X = _check_samples(X, self._dim, _SHAPE, _mismatch)
        if X.ndim == 1:
            if self._fused is not None:
                diff = self._fused - X
                d2, d2_neg, d2_pos = np.minimum.reduceat(np.einsum("ij,ij->i", diff, diff), self._cuts).tolist()
            else:
                d2, d2_neg, d2_pos = self._main.sq_one(X), self._neg.sq_one(X), self._pos.sq_one(X)
            if not d2 < _INF:
                raise _states_nonfinite(X, single=True)
            d = math.sqrt(d2 * self._inv_dim)
            return np.float64(-d if d2_neg < d2_pos else d)
        d2 = self._main.sq_batch(X)
        self._check_output(d2, X)
        d2 *= self._inv_dim
        d = np.sqrt(d2, out=d2)
        negative = self._neg.sq_batch(X) < self._pos.sq_batch(X)
        np.negative(d, out=d, where=negative)
        return d

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The reference set as plain JSON-able data (see the module docstring).

        Example:
            >>> ReferenceSet.from_dict(ReferenceSet([[0, 1], [1, 1]]).to_dict()).dim
            2
        """
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "points": self._main.P.tolist(),
            "negative_side": None if self._neg is None else self._neg.P.tolist(),
            "positive_side": None if self._pos is None else self._pos.P.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReferenceSet":
        """Rebuilds a reference set from ``to_dict`` output.

        Args:
            data: A mapping in the format written by ``to_dict``.

        Raises:
            ValueError: Not a reference set, an unsupported version, or no points.
        """
        check_saved_format(data, fmt=FORMAT, version=FORMAT_VERSION, what="reference set", required=("points",))
        return cls(
            data["points"],
            negative_side=data.get("negative_side"),
            positive_side=data.get("positive_side"),
        )

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check_output(d2: np.ndarray, X: np.ndarray) -> None:
        # NaN/inf in a state makes its distance non-finite: check n outputs, not n*dim inputs.
        if not d2.sum() < _INF and not np.isfinite(d2).all():
            raise _states_nonfinite(X, single=False)


def _mismatch(dim: int, dim_in: int) -> ValueError:
    return ValueError(
        f"dimension mismatch: the states have {dim_in} coordinates but the reference points have dim={dim}."
    )


def _states_nonfinite(X: np.ndarray, single: bool) -> ValueError:
    # States are short: the message lists the whole offending row.
    return _nonfinite_error(
        X,
        single,
        one="the state",
        item="",
        fix="states must be finite.",
        rescale="rescale the states to a moderate range.",
    )
