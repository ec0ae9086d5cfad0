"""Validation shared by the RT modules: input arrays, degenerate unit spaces, saved formats, typed specs.

Every error names the bad value (the offending row, the shape, the constant statistic) and the fix.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Collection, Mapping, Optional

import numpy as np
from numpy.typing import ArrayLike

RESIDUALS = ("sqrt_ve", "mae")  # Y2 of the RT method: textbook sqrt(V_e), or QEU's mean absolute residual
_F64 = np.dtype(np.float64)


def check_saved_format(
    data: Mapping[str, Any], *, fmt: str, version: int, what: str, required: Collection[str]
) -> None:
    """Checks the header and keys of a ``to_dict`` mapping before rebuilding from it.

    Raises:
        ValueError: Not that kind of object, an unsupported version, or missing keys.
    """
    if data.get("format") != fmt:
        raise ValueError(f"not a saved {what}: expected format {fmt!r}, got {data.get('format')!r}.")
    if data.get("version") != version:
        raise ValueError(
            f"unsupported {what} format version {data.get('version')!r}; this code reads version {version}."
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"saved {what} lacks the keys {missing}.")


def check_typed_spec(
    spec: Any, *, what: str, valid_keys: Mapping[str, Collection[str]], type_order: Optional[Collection[str]] = None
) -> str:
    """Checks a ``{"type": ..., ...}`` spec: a mapping, a known type, no unknown keys.

    Args:
        spec: The spec to check.
        what: How messages name it, e.g. ``"know-how source"``.
        valid_keys: For each type, the keys it accepts besides ``type``.
        type_order: The types in the order messages list them (default: ``valid_keys``).

    Returns:
        The spec's type.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a {what} must be a mapping with a 'type' key, got {spec!r}.")
    kind = spec.get("type")
    if kind not in valid_keys:
        raise ValueError(f"unknown {what} type {kind!r}; valid types: {', '.join(type_order or valid_keys)}.")
    unknown = sorted(set(spec) - set(valid_keys[kind]) - {"type"})
    if unknown:
        raise ValueError(
            f"unknown keys {unknown} for {what} type {kind!r}; valid keys: {', '.join(sorted(valid_keys[kind]))}."
        )
    return kind


# Relative tolerances of the degeneracy checks in ``fit`` (see ``_check_covariance``).
_R_RTOL = 1e-12  # r below this fraction of mean S_T: the mean pattern is ~0
_Y1_RTOL = 1e-9  # std(beta) below this: constant beta
_Y2_ZERO_RTOL = 1e-6  # Y2 below this * RMS feature size: rounding noise of V_e = 0
_Y2_RTOL = 1e-9  # std(Y2) below this * RMS feature size: constant Y2
_CORR_ATOL = 1e-10  # 1 - corr^2 below this: Y2 a linear function of Y1


_SHAPE = "(m, k) or (k,)"  # the shapes UnitSpace accepts, for messages


_NEED_FINITE = "RT needs finite features. Drop or impute the non-finite values before calling the unit space."


_RESCALE_FEATURES = "rescale the features to a moderate range before fitting and scoring."


# The input checks and the non-finite error below are shared with ``reference.py``.
def _as_float_array(X: ArrayLike, shape: str) -> np.ndarray:
    """``X`` as a float64 array, without a copy if it already is one."""
    if type(X) is np.ndarray and X.dtype is _F64:
        return X
    try:
        return np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"X must be a numeric array-like of shape {shape}; converting it to float64 failed: {exc}"
        ) from None


def _check_samples(X: ArrayLike, k: int, shape: str, mismatch: Callable[[int, int], ValueError]) -> np.ndarray:
    """``X`` as float64 of shape ``(m, k)`` or ``(k,)``; ``mismatch(k, k_in)`` is the error
    for a wrong last dimension. Finiteness is left to the caller (checked on the output)."""
    if type(X) is not np.ndarray or X.dtype is not _F64:
        X = _as_float_array(X, shape)
    if X.ndim not in (1, 2):
        raise ValueError(f"X must have shape {shape}, got shape {X.shape}.")
    if X.shape[-1] != k:
        raise mismatch(k, X.shape[-1])
    return X


def _nonfinite_error(
    X: np.ndarray,
    single: bool,
    *,
    rows: str = "X",
    one: str = "X (a single sample)",
    item: str = "feature",
    fix: str = _NEED_FINITE,
    rescale: str = _RESCALE_FEATURES,
) -> ValueError:
    """The error for a non-finite result computed from ``X`` (one sample if ``single``).

    Names the first input holding NaN/inf: ``one`` for a single sample, else
    ``"{rows} row {i}"``, with the bad value and its ``item`` (column) index, or with the
    whole row when ``item`` is empty (short rows such as states). Finite inputs mean the
    computation overflowed: the message gives the largest ``|value|`` and ``rescale``.
    """
    X2 = X.reshape(1, -1) if single else X
    bad = ~np.isfinite(X2)
    bad_rows = np.flatnonzero(bad.any(axis=1))
    if not bad_rows.size:
        return ValueError(f"{rows}: the computation overflowed (largest |value| = {np.abs(X2).max():.3g}); {rescale}")
    i = int(bad_rows[0])
    where = one if single else f"{rows} row {i}"
    if item:
        j = int(np.flatnonzero(bad[i])[0])
        what = f"{X2[i, j]} at {item} {j}"
    else:
        what = f"NaN or inf ({X2[i].tolist()})"
    more = f" ({bad_rows.size} rows in all)" if bad_rows.size > 1 else ""
    return ValueError(f"{where} contains {what}{more}: {fix}")


def _mismatch(k: int, k_in: int) -> ValueError:
    return ValueError(
        f"dimension mismatch: the samples have {k_in} features but the unit space was "
        f"fitted on k={k}; apply the same feature map to both."
    )


def _check_options(residual: str, ddof: int) -> None:
    if residual not in RESIDUALS:
        raise ValueError(f"residual={residual!r} is not supported; choose one of {RESIDUALS}.")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (divisor n) or 1 (divisor n - 1), got {ddof!r}.")


_ZERO_MEAN_FIX = (
    "RT measures each sample against the mean pattern, so it needs non-negative features "
    "with a non-zero mean. Data centred at 0 (e.g. standardised) is degenerate: shift the "
    "features (e.g. subtract each feature's minimum) or use a one-hot or rbf feature map "
    "(qeu_tune.rt.make_feature_map)."
)


def _too_few_error(shape: tuple[int, ...]) -> ValueError:
    """The error for an ``X`` of ``fit`` that is not ``(n, k)`` with ``n >= 3``, ``k >= 2``."""
    why = []
    if len(shape) != 2:
        why.append("Pass X as an (n, k) array.")
    if len(shape) == 2 and shape[1] < 2:
        why.append(
            "RT compares each sample's pattern across features, so a single feature cannot "
            "work (map scalar observations to a pattern, e.g. with an 'onehot' or 'rbf' "
            "feature map)."
        )
    if len(shape) == 2 and shape[0] < 3:
        why.append(
            "The textbook minimum is n >= 2, but the covariance of (Y1, Y2) over 2 unit-space "
            "samples always has rank 1 (two points lie on a line), so it is singular and no "
            "distance can be computed: use at least 3 samples, in practice many more."
        )
    return ValueError(
        f"a unit space needs at least 3 samples (rows) and 2 features (columns), got X with "
        f"shape {shape}. " + " ".join(why)
    )


def _check_covariance(Y: np.ndarray, V: np.ndarray, st_mean: float, k: int, residual: str) -> None:
    """Raises a ValueError naming the cause if the ``(Y1, Y2)`` covariance is singular."""
    n = Y.shape[0]
    y1, y2 = Y[:, 0], Y[:, 1]
    # Y2 is in feature units: compare it with the RMS feature size. V_e = 0 comes out as
    # ~1e-8 * that size, not 0, because sqrt amplifies the rounding of S_e.
    y2_scale = math.sqrt(st_mean / k)
    y2_name = "sqrt(V_e)" if residual == "sqrt_ve" else "the mean absolute residual"
    fix = " The unit space needs samples whose patterns vary in both level and shape."
    if float(np.max(y2)) <= _Y2_ZERO_RTOL * y2_scale:
        raise ValueError(
            f"singular (Y1, Y2) covariance: every unit-space sample is proportional to the "
            f"mean pattern, so Y2 = {y2_name} = 0 for all {n} samples." + fix
        )
    if float(np.std(y2)) <= _Y2_RTOL * y2_scale:
        raise ValueError(
            f"singular (Y1, Y2) covariance: all {n} unit-space samples have the same "
            f"Y2 = {y2_name} = {float(y2[0]):.6g} (e.g. V_e equal for all samples)." + fix
        )
    # mean(beta) = mean(L) / r = m.m / r = 1 over the unit space: std(beta) is already relative.
    if float(np.std(y1)) <= _Y1_RTOL:
        raise ValueError(
            f"singular (Y1, Y2) covariance: all {n} unit-space samples have the same "
            f"sensitivity beta = {float(y1[0]):.6g} (constant beta: every sample has the same "
            f"projection L = m.x on the mean pattern)." + fix
        )
    corr2 = V[0, 1] ** 2 / (V[0, 0] * V[1, 1])
    if 1.0 - corr2 <= _CORR_ATOL:
        raise ValueError(
            f"singular (Y1, Y2) covariance: Y2 is an exact linear function of Y1 over the "
            f"{n} unit-space samples (correlation {math.copysign(math.sqrt(corr2), V[0, 1]):+.6f})."
            " Add samples that break this linear relation."
        )
