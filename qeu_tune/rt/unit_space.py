"""The RT method (Recognition-Taguchi) in its textbook form: a unit space and its distance.

A unit space is fitted on ``n`` reference samples of ``k`` features (the "good" patterns
that encode know-how). Every sample ``x`` is summarised by two numbers measured against
the unit-space mean pattern ``m`` (``r = sum_j m_j^2``, ``L = sum_j m_j x_j``):

* ``Y1 = beta = L / r`` (sensitivity),
* ``Y2 = sqrt(V_e)`` with ``V_e = S_e / (k - 1)``, ``S_e = sum_j x_j^2 - L^2 / r`` clipped
  at 0 (``residual="sqrt_ve"``, the textbook form), or ``Y2 = mean_j |x_j - beta m_j|``
  (``residual="mae"``, QEU's "newRT").

The RT distance of a sample is ``D^2 = dY^T V^-1 dY / 2`` with ``dY = Y - Ybar`` and
``(Ybar, V)`` the mean and covariance of ``(Y1, Y2)`` over the unit space. Over the unit
space itself ``mean(D^2) = 1`` when ``V`` uses divisor ``n`` (``ddof=0``) and ``(n-1)/n``
with divisor ``n - 1`` (``ddof=1``). See ``docs/rt_method.md`` (section 1) for the formulas and references.

Saved format (``save``/``to_dict``), plain JSON, version 1::

    {
      "format": "qeu_tune.rt.UnitSpace",
      "version": 1,
      "residual": "sqrt_ve",          # or "mae"
      "ddof": 0,                      # divisor of cov: n - ddof
      "n_samples": 120,               # n, informational
      "mean_pattern": [m_1, ..., m_k],
      "y_mean": [Ybar1, Ybar2],
      "cov": [[V11, V12], [V12, V22]]
    }

Floats are written with Python's shortest round-trip repr, so a loaded unit space gives
bit-identical distances.

Validation cost: the batch path checks the *output* for NaN/inf (``n`` values, not
``n * k``): a NaN or inf anywhere in a row always makes that row's ``beta`` non-finite and
so its distance non-finite, so this catches every bad input at a small fraction of the cost
of ``np.isfinite(X).all()`` (which alone takes ~35% of a distance computation). Only when
the check fails are the inputs scanned to name the offending row.

The module stays whole (about 470 lines, a third of them this docstring and the methods'):
one class, its fit, its fast batch distance and its saved format; the input checks and
error messages live in ``qeu_tune.rt._checks``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np
from numpy.typing import ArrayLike

from qeu_tune.rt._checks import (
    _F64,
    _R_RTOL,
    _SHAPE,
    _ZERO_MEAN_FIX,
    RESIDUALS,
    _as_float_array,
    _check_covariance,
    _check_options,
    _check_samples,
    _mismatch,
    _nonfinite_error,
    _too_few_error,
    check_saved_format,
)

__all__ = ["UnitSpace", "RESIDUALS"]

FORMAT = "qeu_tune.rt.UnitSpace"
FORMAT_VERSION = 1

_INF = math.inf


class UnitSpace:
    """A fitted RT unit space: mean pattern, mean and covariance of ``(Y1, Y2)``.

    Build one with ``UnitSpace.fit`` (from samples) or ``UnitSpace.from_dict`` /
    ``UnitSpace.load`` (from saved parameters). Instances are immutable.

    Example:
        >>> import numpy as np
        >>> X = np.array([[1., 2., 3.], [3., 2., 1.], [2., 4., 2.], [2., 0., 2.]])
        >>> us = UnitSpace.fit(X)
        >>> round(float(us.distance(X, squared=True).mean()), 9)
        1.0
        >>> us.distance([2., 2., 2.]).shape
        ()
    """

    def __init__(
        self,
        mean_pattern: ArrayLike,
        y_mean: ArrayLike,
        cov: ArrayLike,
        *,
        ddof: int = 0,
        residual: str = "sqrt_ve",
        n_samples: int | None = None,
    ) -> None:
        """Creates a unit space from its parameters (use ``fit`` to learn them).

        Args:
            mean_pattern: The unit-space mean pattern ``m``, shape ``(k,)``, ``k >= 2``.
            y_mean: ``(Ybar1, Ybar2)`` over the unit space.
            cov: The 2x2 covariance ``V`` of ``(Y1, Y2)``; must be positive definite.
            ddof: The divisor ``n - ddof`` that ``cov`` was computed with (0 or 1).
            residual: ``"sqrt_ve"`` or ``"mae"``, how ``Y2`` is computed.
            n_samples: ``n``, recorded for information.

        Raises:
            ValueError: Invalid shapes or values (the message says which).
        """
        m = np.array(mean_pattern, dtype=np.float64)
        ybar = np.array(y_mean, dtype=np.float64)
        V = np.array(cov, dtype=np.float64)
        if m.ndim != 1 or m.size < 2:
            raise ValueError(f"mean_pattern must have shape (k,) with k >= 2, got shape {m.shape}.")
        if ybar.shape != (2,) or V.shape != (2, 2):
            raise ValueError(f"y_mean must have shape (2,) and cov (2, 2); got {ybar.shape} and {V.shape}.")
        if not (np.isfinite(m).all() and np.isfinite(ybar).all() and np.isfinite(V).all()):
            raise ValueError("unit-space parameters contain NaN or inf.")
        _check_options(residual, ddof)
        r = float(m @ m)
        if not r > 0.0:
            raise ValueError("mean_pattern is all zeros (r = 0); " + _ZERO_MEAN_FIX)
        v11, v12, v22 = float(V[0, 0]), float(V[0, 1]), float(V[1, 1])
        det = v11 * v22 - v12 * v12
        if not (v11 > 0.0 and v22 > 0.0 and det > 0.0 and V[1, 0] == V[0, 1]):
            raise ValueError(f"cov must be a symmetric positive-definite 2x2 matrix, got {V.tolist()}.")

        for a in (m, ybar, V):
            a.flags.writeable = False
        self._m, self._ybar, self._V = m, ybar, V
        self._k = int(m.size)
        self._ddof = int(ddof)
        self._residual = residual
        self._n_samples = None if n_samples is None else int(n_samples)

        # Everything the hot paths need, as Python floats (cheapest to use in scalar code).
        self._r = r
        self._inv_r = 1.0 / r
        self._inv_k1 = 1.0 / (self._k - 1)
        self._inv_k = 1.0 / self._k
        self._y1bar, self._y2bar = float(ybar[0]), float(ybar[1])
        # D^2 = qa*d1^2 + qb*d1*d2 + qc*d2^2 with V^-1 = [[a, b], [b, c]] / 2 folded in.
        self._qa = 0.5 * v22 / det
        self._qb = -v12 / det
        self._qc = 0.5 * v11 / det
        # The batch sqrt_ve path works on g = L / sqrt(r) and sqrt(S_e) directly, folding the
        # 1/sqrt(r) and 1/sqrt(k-1) scalings into the coefficients: fewer passes per block.
        sr, sk = math.sqrt(r), math.sqrt(self._k - 1)
        self._m_over_sr = m / sr
        self._g1 = self._y1bar * sr  # d1 = (g - g1) / sr
        self._u1 = self._y2bar * sk  # d2 = (sqrt(S_e) - u1) / sk
        self._fa = self._qa / r
        self._fb = self._qb / (sr * sk)
        self._fc = self._qc / (self._k - 1)
        # Rows per block: ~1 MiB of X, so the block stays in cache for the second pass.
        self._block = int(min(8192, max(512, (1 << 20) // (8 * self._k))))

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, X: ArrayLike, *, ddof: int = 0, residual: str = "sqrt_ve") -> "UnitSpace":
        """Fits a unit space on reference samples.

        Args:
            X: Unit-space samples, shape ``(n, k)`` with ``n >= 3`` (the ``(Y1, Y2)``
                covariance of 2 samples is always singular: two points lie on a line) and
                ``k >= 2``. Features should be non-negative pattern values with a non-zero
                mean (see ``qeu_tune.rt.make_feature_map``).
            ddof: Divisor of the ``(Y1, Y2)`` covariance is ``n - ddof``: 0 makes the unit
                space average ``D^2 = 1`` exactly, 1 gives ``(n - 1) / n``.
            residual: ``"sqrt_ve"`` (textbook ``Y2 = sqrt(V_e)``) or ``"mae"`` (QEU newRT,
                ``Y2 = mean |x - beta m|``).

        Returns:
            The fitted ``UnitSpace``.

        Raises:
            ValueError: Too few samples or features, NaN/inf (with the row), a zero mean
                pattern, or a singular ``(Y1, Y2)`` covariance (with its cause).

        Example:
            >>> us = UnitSpace.fit([[1, 2, 3], [3, 2, 1], [2, 4, 2], [2, 0, 2]], ddof=1)
            >>> us.n_features
            3
        """
        _check_options(residual, ddof)
        X = _as_float_array(X, "(n, k)")
        if X.ndim != 2 or X.shape[0] < 3 or X.shape[1] < 2:
            raise _too_few_error(X.shape)
        if not np.isfinite(X).all():  # fit runs once: the plain check is affordable here
            raise _nonfinite_error(X, single=False, rows="unit-space X")
        n, k = X.shape
        m = X.mean(axis=0)
        r = float(m @ m)
        st_mean = float(np.einsum("ij,ij->", X, X)) / n
        if not r > _R_RTOL * st_mean:
            raise ValueError(
                f"the unit-space mean pattern is (close to) zero: r = sum_j m_j^2 = {r:.3g} "
                f"(mean sum of squares per sample {st_mean:.3g}); " + _ZERO_MEAN_FIX
            )
        Y = _y_of(X, m, r, residual)
        ybar = Y.mean(axis=0)
        dY = Y - ybar
        V = (dY.T @ dY) / (n - ddof)
        V[1, 0] = V[0, 1]  # exact symmetry
        _check_covariance(Y, V, st_mean, k, residual)
        return cls(m, ybar, V, ddof=ddof, residual=residual, n_samples=n)

    # ------------------------------------------------------------------ properties
    @property
    def n_features(self) -> int:
        """``k``, the number of features a sample must have."""
        return self._k

    @property
    def n_samples(self) -> int | None:
        """``n``, the number of unit-space samples (None if not recorded)."""
        return self._n_samples

    @property
    def mean_pattern(self) -> np.ndarray:
        """The mean pattern ``m`` (read-only, shape ``(k,)``)."""
        return self._m

    @property
    def y_mean(self) -> np.ndarray:
        """``(Ybar1, Ybar2)`` over the unit space (read-only)."""
        return self._ybar

    @property
    def cov(self) -> np.ndarray:
        """The 2x2 covariance ``V`` of ``(Y1, Y2)`` (read-only)."""
        return self._V

    @property
    def ddof(self) -> int:
        """The covariance divisor is ``n - ddof``."""
        return self._ddof

    @property
    def residual(self) -> str:
        """How ``Y2`` is computed: ``"sqrt_ve"`` or ``"mae"``."""
        return self._residual

    def __repr__(self) -> str:
        return (
            f"UnitSpace(n_samples={self._n_samples}, n_features={self._k}, "
            f"ddof={self._ddof}, residual={self._residual!r})"
        )

    # ------------------------------------------------------------------ scoring
    def transform(self, X: ArrayLike) -> np.ndarray:
        """``(Y1, Y2)`` of samples: ``Y1 = beta = L / r`` and ``Y2`` by ``residual``.

        Args:
            X: Samples, shape ``(m, k)``, or one sample of shape ``(k,)``.

        Returns:
            Shape ``(m, 2)``, or ``(2,)`` for a single sample.

        Raises:
            ValueError: Wrong number of features, or NaN/inf (with the row).

        Example:
            >>> us = UnitSpace.fit([[1, 2, 3], [3, 2, 1], [2, 4, 2], [2, 0, 2]])
            >>> us.transform([4., 4., 4.]).tolist()
            [2.0, 0.0]
        """
        X = _check_samples(X, self._k, _SHAPE, _mismatch)
        single = X.ndim == 1
        X2 = X.reshape(1, -1) if single else X
        out = np.empty((X2.shape[0], 2))
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows: raised below
            for s in range(0, X2.shape[0], self._block):
                block = X2[s : s + self._block]
                out[s : s + self._block] = _y_of(block, self._m, self._r, self._residual)
        if not np.isfinite(out).all():
            raise _nonfinite_error(X, single)
        return out[0] if single else out

    def distance(self, X: ArrayLike, squared: bool = False) -> np.ndarray:
        """RT distance ``D`` (or ``D^2``) of samples from the unit space.

        Args:
            X: Samples, shape ``(m, k)``, or one sample of shape ``(k,)``.
            squared: Return ``D^2 = dY^T V^-1 dY / 2`` instead of ``D``.

        Returns:
            Shape ``(m,)`` float64, or a 0-d ``np.float64`` for a single sample.

        Raises:
            ValueError: Wrong number of features, or NaN/inf (with the row).

        Example:
            >>> us = UnitSpace.fit([[1, 2, 3], [3, 2, 1], [2, 4, 2], [2, 0, 2]])
            >>> us.distance([[1, 2, 3], [4, 0, 2]], squared=True).round(3).tolist()
            [0.5, 71.141]
        """
        if type(X) is not np.ndarray or X.dtype is not _F64:
            X = _as_float_array(X, _SHAPE)
        if X.ndim == 1:
            return self._distance_one(X, squared)
        X = _check_samples(X, self._k, _SHAPE, _mismatch)
        if self._residual == "sqrt_ve":
            return self._distance_batch_sqrt_ve(X, squared)
        return self._distance_batch_generic(X, squared)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The unit space as plain JSON-able data (see the module docstring for the format).

        Example:
            >>> us = UnitSpace.fit([[1, 2, 3], [3, 2, 1], [2, 4, 2], [2, 0, 2]])
            >>> UnitSpace.from_dict(us.to_dict()).n_features
            3
        """
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "residual": self._residual,
            "ddof": self._ddof,
            "n_samples": self._n_samples,
            "mean_pattern": self._m.tolist(),
            "y_mean": self._ybar.tolist(),
            "cov": self._V.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UnitSpace":
        """Rebuilds a unit space from ``to_dict`` output.

        Args:
            data: A mapping in the format written by ``to_dict``.

        Raises:
            ValueError: Not a unit space, an unsupported version, or missing keys.
        """
        check_saved_format(
            data, fmt=FORMAT, version=FORMAT_VERSION, what="unit space", required=("mean_pattern", "y_mean", "cov")
        )
        return cls(
            data["mean_pattern"],
            data["y_mean"],
            data["cov"],
            ddof=data.get("ddof", 0),
            residual=data.get("residual", "sqrt_ve"),
            n_samples=data.get("n_samples"),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the unit space as JSON (``to_dict``) to ``path``.

        Example:
            >>> us = UnitSpace.fit([[1, 2, 3], [3, 2, 1], [2, 4, 2], [2, 0, 2]])
            >>> us.save("unit_space.json")
            >>> UnitSpace.load("unit_space.json")
            UnitSpace(n_samples=4, n_features=3, ddof=0, residual='sqrt_ve')
        """
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "UnitSpace":
        """Reads a unit space written by ``save``.

        Raises:
            ValueError: The file is not valid JSON or not a saved unit space.
        """
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{os.fspath(path)} is not a JSON unit-space file: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{os.fspath(path)} does not hold a JSON object.")
        return cls.from_dict(data)

    # ------------------------------------------------------------------ internals
    def _distance_one(self, x: np.ndarray, squared: bool) -> np.float64:
        # The per-env-step path: scalar Python arithmetic, no temporary arrays for sqrt_ve.
        if x.shape[0] != self._k:
            raise _mismatch(self._k, x.shape[0])
        L = float(self._m.dot(x))
        beta = L * self._inv_r
        if self._residual == "sqrt_ve":
            se = float(x.dot(x)) - L * beta
            y2 = math.sqrt(se * self._inv_k1) if se > 0.0 else 0.0
        else:
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite x: raised below
                y2 = float(np.abs(x - beta * self._m).sum()) * self._inv_k
        d1 = beta - self._y1bar
        d2 = y2 - self._y2bar
        d2sq = (self._qa * d1 + self._qb * d2) * d1 + self._qc * d2 * d2
        if not d2sq < _INF:  # NaN/inf in x always makes beta, hence d2sq, non-finite
            raise _nonfinite_error(x, single=True)
        if d2sq < 0.0:  # rounding when dY ~ 0
            d2sq = 0.0
        return np.float64(d2sq if squared else math.sqrt(d2sq))

    def _distance_batch_sqrt_ve(self, X: np.ndarray, squared: bool) -> np.ndarray:
        out = np.empty(X.shape[0])
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows: see _finish
            self._sqrt_ve_blocks(X, out)
        return self._finish(out, X, squared)

    def _sqrt_ve_blocks(self, X: np.ndarray, out: np.ndarray) -> None:
        # Memory-bound: each block of rows is read from RAM once (by the mat-vec), then the
        # sum of squares re-reads it from cache; the rest works on block-length vectors.
        n, B = X.shape[0], self._block
        g, st, t = np.empty(B), np.empty(B), np.empty(B)
        mul, sub, add, sqrt, maximum = np.multiply, np.subtract, np.add, np.sqrt, np.maximum
        m_sr, g1, u1, fa, fb, fc = self._m_over_sr, self._g1, self._u1, self._fa, self._fb, self._fc
        for s in range(0, n, B):
            e = min(s + B, n)
            Xb = X[s:e]
            if e - s != g.shape[0]:
                g, st, t = g[: e - s], st[: e - s], t[: e - s]
            o = out[s:e]
            np.dot(Xb, m_sr, out=g)  # g = L / sqrt(r), so S_beta = g^2
            np.einsum("ij,ij->i", Xb, Xb, out=st)  # S_T
            mul(g, g, out=t)
            sub(st, t, out=st)
            maximum(st, 0.0, out=st)  # S_e < 0 only from rounding
            sqrt(st, out=st)
            sub(st, u1, out=st)  # u = sqrt(k-1) * d2
            sub(g, g1, out=g)  # w = sqrt(r) * d1
            mul(g, fa, out=o)
            mul(st, fb, out=t)
            add(o, t, out=o)
            mul(o, g, out=o)
            mul(st, st, out=t)
            mul(t, fc, out=t)
            add(o, t, out=o)

    def _distance_batch_generic(self, X: np.ndarray, squared: bool) -> np.ndarray:
        n, B = X.shape[0], self._block
        out = np.empty(n)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows: see _finish
            for s in range(0, n, B):
                Y = _y_of(X[s : s + B], self._m, self._r, self._residual)
                d1 = Y[:, 0] - self._y1bar
                d2 = Y[:, 1] - self._y2bar
                out[s : s + B] = (self._qa * d1 + self._qb * d2) * d1 + self._qc * d2 * d2
        return self._finish(out, X, squared)

    def _finish(self, out: np.ndarray, X: np.ndarray, squared: bool) -> np.ndarray:
        total = out.sum()  # NaN/inf propagate into the sum: one cheap pass
        if not total < _INF and not np.isfinite(out).all():
            raise _nonfinite_error(X, single=False)
        np.maximum(out, 0.0, out=out)  # tiny negatives from rounding when dY ~ 0
        if not squared:
            np.sqrt(out, out=out)
        return out


def _y_of(X: np.ndarray, m: np.ndarray, r: float, residual: str) -> np.ndarray:
    """``(Y1, Y2)`` of the rows of a 2-D block (the straightforward formulas)."""
    k = X.shape[1]
    L = X @ m
    beta = L / r
    if residual == "sqrt_ve":
        se = np.einsum("ij,ij->i", X, X) - L * beta
        y2 = np.sqrt(np.maximum(se, 0.0) / (k - 1))
    else:
        y2 = np.abs(X - np.multiply.outer(beta, m)).mean(axis=1)
    return np.stack([beta, y2], axis=1)
