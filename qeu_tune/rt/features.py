"""Feature maps: turn an environment observation into a pattern vector for RT.

RT measures a sample against the unit-space mean pattern, so the pattern needs
non-negative features with a non-zero mean. Raw observations often are not like that
(a discrete state index, a centred continuous state). A feature map fixes this:

=============  ===========================================================  ============
``type``       spec keys                                                    output dim
=============  ===========================================================  ============
``identity``   ``dim`` (optional, checked)                                  obs size
``onehot``     ``n`` categories, ``start`` (first category, default 0)      ``n``
``rbf``        ``low``, ``high`` (per obs dim), ``num`` (centres per dim,   prod(num)
               int or list), ``width`` (optional, default: centre spacing)
``callable``   ``path`` ``"module:function"`` (obs -> vector), ``kwargs``   ``dim`` or
               (optional dict passed to the function), ``dim`` (optional)   first call
=============  ===========================================================  ============

``rbf`` places Gaussian bumps ``exp(-0.5 * sum_d ((x_d - c_d) / w_d)^2)`` on the grid of
centres ``c`` (``num_d`` centres evenly from ``low_d`` to ``high_d``, first dimension
varying slowest), so outputs lie in (0, 1] (far outside ``[low, high]`` they underflow to
0).

Example:
    >>> fm = make_feature_map({"type": "onehot", "n": 4})
    >>> fm(2).tolist(), fm.dim
    ([0.0, 0.0, 1.0, 0.0], 4)
"""

from __future__ import annotations

import functools
import importlib
import math
import operator
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from qeu_tune.rt._checks import check_typed_spec

__all__ = ["FeatureMap", "make_feature_map", "import_object", "FEATURE_TYPES", "FEATURE_KEYS"]

FEATURE_TYPES = ("identity", "onehot", "rbf", "callable")
_F64 = np.dtype(np.float64)
# Arrays whose .tolist() gives the Python floats np.asarray(obs, float64) would hold.
_TOLIST_EXACT = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def import_object(path: str, *, what: str = "object") -> Any:
    """Imports ``"module:name"`` (``name`` may be dotted, e.g. ``"module:Class.method"``).

    Args:
        path: The import path, e.g. ``"my_project.features:obs_to_pattern"``.
        what: What the object is for, used in error messages (e.g. ``"feature function"``).

    Returns:
        The imported object.

    Raises:
        ValueError: Malformed path, module not importable, or attribute missing.

    Example:
        >>> import_object("math:sqrt", what="function")(4.0)
        2.0
    """
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.partition(":")[::2]):
        raise ValueError(
            f"{what} path {path!r} must look like 'module:name', e.g. 'my_project.features:obs_to_pattern'."
        )
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {module_name!r} for {what} {path!r}: {exc}. Check the "
            f"spelling and that the module is installed or on PYTHONPATH (also in Ray workers)."
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}.") from None
    return obj


class FeatureMap:
    """Maps one observation to a 1-D float64 pattern vector (base class).

    Use ``make_feature_map`` to build one from a spec. Calling the map on one observation
    returns shape ``(dim,)``; ``map_batch`` maps an array of observations to ``(m, dim)``.
    Outputs are fresh arrays (never views of the observation).
    """

    type: str = ""

    def __init__(self, spec: Mapping[str, Any], dim: int | None) -> None:
        self._spec = dict(spec)
        self._dim = dim

    @property
    def dim(self) -> int | None:
        """Output dimension; None until the first call when the spec does not fix it."""
        return self._dim

    @property
    def spec(self) -> dict[str, Any]:
        """The spec this map was built from (plain data, for configs and tracking)."""
        return dict(self._spec)

    def __call__(self, obs: Any) -> np.ndarray:
        raise NotImplementedError

    def map_batch(self, obs_array: ArrayLike) -> np.ndarray:
        """Maps observations stacked along the first axis to shape ``(m, dim)``.

        Example:
            >>> make_feature_map({"type": "onehot", "n": 3}).map_batch([0, 2]).tolist()
            [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
        """
        rows = [self(o) for o in obs_array]
        if not rows:
            return np.empty((0, self._dim or 0))
        return np.stack(rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._spec})"

    def _check_dim(self, out: np.ndarray) -> np.ndarray:
        if self._dim is None:
            self._dim = int(out.size)
        elif out.size != self._dim:
            raise ValueError(
                f"{self.type} feature map produced {out.size} features, but {self._dim} "
                f"before (or as declared by 'dim'); observations must all have the same size."
            )
        return out


class IdentityMap(FeatureMap):
    """The observation, flattened, as float64."""

    type = "identity"

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__(spec, _optional_dim(spec, self.type))

    def __call__(self, obs: Any) -> np.ndarray:
        return self._check_dim(np.array(obs, dtype=np.float64).reshape(-1))

    def map_batch(self, obs_array: ArrayLike) -> np.ndarray:
        A = np.array(obs_array, dtype=np.float64)
        out = A.reshape(A.shape[0], -1) if A.ndim > 1 else A.reshape(-1, 1)
        if out.shape[0]:
            self._check_dim(out[0])
        return out


class OneHotMap(FeatureMap):
    """Category ``i`` in ``start .. start+n-1`` as the unit vector ``e_(i - start)``."""

    type = "onehot"

    def __init__(self, spec: Mapping[str, Any]) -> None:
        n, start = spec.get("n"), spec.get("start", 0)
        if not _is_int(n) or n < 1:
            raise ValueError(f"onehot feature map needs n (number of categories) >= 1, got n={n!r}.")
        if not _is_int(start):
            raise ValueError(f"onehot 'start' must be an integer, got {start!r}.")
        super().__init__(spec, int(n))
        self._n, self._start = int(n), int(start)

    def __call__(self, obs: Any) -> np.ndarray:
        try:
            i = operator.index(obs) - self._start
        except TypeError:
            i = self._index_of(np.asarray(obs)) - self._start
        if not 0 <= i < self._n:
            raise self._range_error(i + self._start)
        out = np.zeros(self._n)
        out[i] = 1.0
        return out

    def map_batch(self, obs_array: ArrayLike) -> np.ndarray:
        A = np.asarray(obs_array).reshape(-1)
        if A.dtype.kind not in "iu":
            if A.dtype.kind not in "fb" or not np.array_equal(A, np.round(A)):
                raise ValueError(f"onehot observations must be integers, got {A[:5].tolist()}...")
        idx = A.astype(np.int64) - self._start
        bad = np.flatnonzero((idx < 0) | (idx >= self._n))
        if bad.size:
            raise self._range_error(int(idx[bad[0]]) + self._start, row=int(bad[0]))
        out = np.zeros((A.size, self._n))
        out[np.arange(A.size), idx] = 1.0
        return out

    def _index_of(self, a: np.ndarray) -> int:
        if a.size == 1 and a.dtype.kind in "iufb":
            v = float(a.reshape(()))
            if v.is_integer():  # also accepts 3.0 from a float observation
                return int(v)
        raise ValueError(f"onehot feature map needs one integer category per observation, got {a.tolist()!r}.")

    def _range_error(self, value: int, row: int | None = None) -> ValueError:
        where = "" if row is None else f" (row {row})"
        return ValueError(
            f"onehot observation {value}{where} is outside the categories "
            f"{self._start}..{self._start + self._n - 1}; set n (and start) to cover every "
            f"category."
        )


class RbfMap(FeatureMap):
    """Gaussian radial-basis activations on a grid of centres (see the module docstring)."""

    type = "rbf"

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if "low" not in spec or "high" not in spec or "num" not in spec:
            raise ValueError("rbf feature map needs 'low', 'high' (per observation dim) and 'num'.")
        low, high = _float_list(spec["low"], "low"), _float_list(spec["high"], "high")
        D = len(low)
        if len(high) != D:
            raise ValueError(f"rbf 'low' has {D} entries but 'high' has {len(high)}; give one per observation dim.")
        if any(not h > lo for lo, h in zip(low, high)):
            raise ValueError(f"rbf needs high > low in every dim, got low={low}, high={high}.")
        num = _per_dim(spec["num"], D, "num")
        if any(not _is_int(v) or v < 1 for v in num):
            raise ValueError(f"rbf 'num' (centres per dim) must be integers >= 1, got {spec['num']!r}.")
        num = [int(v) for v in num]
        centres = [np.linspace(lo, h, k) if k > 1 else np.array([(lo + h) / 2.0]) for lo, h, k in zip(low, high, num)]
        # Default width = centre spacing: each bump is exp(-1/2) at its neighbours' centres,
        # and neighbouring bumps cross halfway between them (z = 1/2) at exp(-1/8).
        if spec.get("width") is None:
            widths = [(h - lo) / (k - 1) if k > 1 else h - lo for lo, h, k in zip(low, high, num)]
        else:
            widths = [float(w) for w in _per_dim(spec["width"], D, "width")]
            if any(not w > 0 for w in widths):
                raise ValueError(f"rbf 'width' must be > 0, got {spec['width']!r}.")
        super().__init__(spec, math.prod(num))
        self._D = D
        # The Gaussian factorises over dimensions: feature (i_1, ..., i_D) is the product of
        # one factor exp(-z^2/2) per dimension, z = (x_d - c_d,i_d) / w_d. So a call takes
        # the sum(num) factors (all dimensions' centres in one flat list) with one exp and
        # multiplies them out over the grid, in the same order as an outer-product chain.
        inv_widths = [1.0 / w for w in widths]
        self._factor_terms = [  # (obs dim, centre, 1 / width) per flat factor
            (d, c, inv_widths[d]) for d in range(D) for c in centres[d].tolist()
        ]
        # The same as arrays, for map_batch.
        self._factor_dim = np.repeat(np.arange(D), num)
        self._flat_centres = np.concatenate(centres)
        self._flat_inv_widths = np.repeat(inv_widths, num)
        starts = np.cumsum([0, *num[:-1]])
        self._factor_slices = [slice(s, s + k) for s, k in zip(starts.tolist(), num)]
        # Row d: for each grid point (first dimension varying slowest), the flat index of
        # its dimension-d factor.
        self._grid_factors = np.indices(num).reshape(D, -1) + starts[:, None]

    def __call__(self, obs: Any) -> np.ndarray:
        # The per-env-step path: the few z values in plain Python, then only an exp, a gather
        # and a product in numpy, since each numpy call has a fixed cost of its own.
        x = obs if type(obs) is np.ndarray and obs.dtype in _TOLIST_EXACT else np.asarray(obs, _F64)
        xs = (x if x.ndim == 1 else x.reshape(-1)).tolist()  # Python floats, values unchanged
        if len(xs) != self._D:
            raise self._size_error(len(xs))
        g = np.exp([-0.5 * (z := (xs[d] - c) * w) * z for d, c, w in self._factor_terms])
        # Each grid point's D factors, (D, dim), multiplied row by row: a fresh (dim,) array.
        return np.multiply.reduce(g[self._grid_factors], axis=0)

    def map_batch(self, obs_array: ArrayLike) -> np.ndarray:
        X = np.asarray(obs_array, dtype=np.float64)
        # Explicit sizes, not -1: an empty batch has no size to infer.
        X = X.reshape(X.shape[0], math.prod(X.shape[1:])) if X.ndim > 1 else X.reshape(-1, 1)
        if X.shape[1] != self._D:
            raise self._size_error(X.shape[1])
        m = X.shape[0]
        Z = X[:, self._factor_dim]  # a copy: the observations are never written to
        Z -= self._flat_centres
        Z *= self._flat_inv_widths
        G = -0.5 * Z
        G *= Z
        np.exp(G, out=G)
        # For many rows an outer-product chain beats the gather of __call__ (fewer passes).
        out = G[:, self._factor_slices[0]]
        for s in self._factor_slices[1:]:
            out = (out[:, :, None] * G[:, None, s]).reshape(m, out.shape[1] * (s.stop - s.start))
        return out

    def _size_error(self, size: int) -> ValueError:
        return ValueError(f"rbf feature map expects observations with {self._D} values, got {size}.")


class CallableMap(FeatureMap):
    """A user function ``obs -> vector`` imported from ``"module:function"``."""

    type = "callable"

    def __init__(self, spec: Mapping[str, Any]) -> None:
        fn = import_object(spec.get("path"), what="feature function")
        if not callable(fn):
            raise ValueError(f"feature function {spec.get('path')!r} is not callable ({type(fn).__name__}).")
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ValueError(f"callable feature map 'kwargs' must be a mapping, got {kwargs!r}.")
        super().__init__(spec, _optional_dim(spec, self.type))
        self._fn: Callable[..., Any] = functools.partial(fn, **dict(kwargs)) if kwargs else fn

    def __call__(self, obs: Any) -> np.ndarray:
        return self._check_dim(np.array(self._fn(obs), dtype=np.float64).reshape(-1))


_BUILDERS: dict[str, tuple[type[FeatureMap], frozenset[str]]] = {
    "identity": (IdentityMap, frozenset({"dim"})),
    "onehot": (OneHotMap, frozenset({"n", "start"})),
    "rbf": (RbfMap, frozenset({"low", "high", "num", "width"})),
    "callable": (CallableMap, frozenset({"path", "kwargs", "dim"})),
}
# Each feature-map type's keys besides ``type``.
FEATURE_KEYS: dict[str, frozenset[str]] = {kind: keys for kind, (_, keys) in _BUILDERS.items()}


def make_feature_map(spec: Mapping[str, Any]) -> FeatureMap:
    """Builds a feature map from a spec (a mapping with a ``type`` key).

    Args:
        spec: ``{"type": ..., <type's keys>}``; see the module docstring for the keys.

    Returns:
        The ``FeatureMap``.

    Raises:
        ValueError: Unknown type (the message lists the valid ones), unknown or invalid
            keys, or a ``callable`` path that cannot be imported.

    Example:
        >>> spec = {"type": "rbf", "low": [-1.2, -0.07], "high": [0.6, 0.07], "num": 5}
        >>> fm = make_feature_map(spec)
        >>> fm.dim, fm([-0.5, 0.0]).shape
        (25, (25,))
    """
    kind = check_typed_spec(
        spec, what="feature map", valid_keys={k: v[1] for k, v in _BUILDERS.items()}, type_order=FEATURE_TYPES
    )
    return _BUILDERS[kind][0](spec)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _optional_dim(spec: Mapping[str, Any], kind: str) -> int | None:
    """The spec's optional declared output ``dim`` (a positive integer), or None."""
    dim = spec.get("dim")
    if dim is not None and (not _is_int(dim) or dim < 1):
        raise ValueError(f"{kind} feature map 'dim' must be a positive integer, got {dim!r}.")
    return None if dim is None else int(dim)


def _float_list(v: Any, name: str) -> list[float]:
    values = list(v) if isinstance(v, Sequence) and not isinstance(v, str) else [v]
    try:
        return [float(x) for x in values]
    except (TypeError, ValueError):
        raise ValueError(f"rbf {name!r} must be a number or a list of numbers, got {v!r}.") from None


def _per_dim(v: Any, D: int, name: str) -> list[Any]:
    values = list(v) if isinstance(v, Sequence) and not isinstance(v, str) else [v] * D
    if len(values) != D:
        raise ValueError(f"rbf {name!r} has {len(values)} entries; give one per observation dim ({D}) or a scalar.")
    return values
