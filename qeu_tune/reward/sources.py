"""Know-how sources: where the points of a unit space or a reference set come from.

``load_reference_data(source)`` returns a 2-D float64 array of raw observations (rows),
*before* any feature map, from one of these sources (``source["type"]``):

===========  ==============================================================================
``file``     ``path`` to ``.csv`` (numeric, optional header row), ``.npy`` or ``.parquet``;
             optional ``columns`` (names or indices) to keep.
``policy``   rollouts of an expert policy: ``env`` (Gymnasium id or ``"module:Class"``),
             ``env_config`` (dict, default ``{}``), ``policy`` (``"module:function"``, one
             observation -> action), ``episodes`` (default 10), ``seed`` (default 0; episode
             ``i`` resets with ``seed + i``), ``max_steps`` (optional cap per episode).
             Returns every observation the policy acted on, episodes stacked in order.
``list``     ``points``: the reference states written out, e.g. ``[[0, 3], [0, 2], ...]``.
``builtin``  ``name`` of built-in know-how (``BUILTINS``), with optional ``episodes``/``seed``
             for the rollout-based ones.
===========  ==============================================================================

Built-in know-how:

* ``cliff_standard_route``: QEU's standard route on the 4 x 12 Cliff Walking grid, as
  ``(x, y)`` cells with ``x`` = column 0..11 from the left and ``y`` = row 0..3 from the
  *top* (Gymnasium's layout: state index ``y * 12 + x``). From the start ``(0, 3)`` up to
  ``y = 1``, along it to ``x = 11``, down to the goal ``(11, 3)``: 16 cells.
* ``cliff_cells`` (``(1..10, 3)``) and ``cliff_top_row`` (``(0..11, 0)``): the two sides
  used by signed minRT; ``cliff_side_points()`` returns both.
* ``mountaincar_energy``: ``MountainCar-v0`` rollouts of ``mountaincar_energy_policy``.
* ``cartpole_balance``: ``CartPole-v1`` rollouts of ``cartpole_balance_policy``.

The expert policies are importable, e.g. ``"qeu_tune.reward.sources:cartpole_balance_policy"``.
Rollouts build environments with ``qeu_tune.envs.make_base_env`` (so the built-in tasks
such as ``QEUCliffWalking-v0`` work too); Gymnasium is imported only when rollouts run.

The module stays whole: its one job is turning a source spec into points, and the four
source types share the dispatch, the checks and the rollout code.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from qeu_tune.envs import make_base_env
from qeu_tune.envs.cliff_grid import (  # the grid, shared with the environment
    CLIFF_CELLS,
    CLIFF_GOAL,
    CLIFF_HEIGHT,
    CLIFF_START,
    CLIFF_WIDTH,
    CliffSides,
    _cliff_cells,
    _cliff_top_row,
    cliff_side_points,
    cliff_standard_route,
)
from qeu_tune.rt._checks import check_typed_spec
from qeu_tune.rt.features import import_object

__all__ = [
    "SOURCE_TYPES",
    "SOURCE_KEYS",
    "BUILTINS",
    "CLIFF_WIDTH",
    "CLIFF_HEIGHT",
    "CLIFF_START",
    "CLIFF_GOAL",
    "CLIFF_CELLS",
    "FILE_EXTENSIONS",
    "CliffSides",
    "Rollouts",
    "load_reference_data",
    "rollout_policy",
    "cliff_standard_route",
    "cliff_side_points",
    "mountaincar_energy_policy",
    "cartpole_balance_policy",
]

SOURCE_TYPES = ("file", "policy", "list", "builtin")
FILE_EXTENSIONS = (".csv", ".npy", ".parquet")
SOURCE_KEYS: dict[str, frozenset[str]] = {
    "file": frozenset({"path", "columns"}),
    "policy": frozenset({"env", "env_config", "policy", "episodes", "seed", "max_steps"}),
    "list": frozenset({"points"}),
    "builtin": frozenset({"name", "episodes", "seed"}),
}
DEFAULT_EPISODES = 10
DEFAULT_SEED = 0
# An env without a time limit and a policy that never ends it would loop forever.
_EPISODE_STEP_GUARD = 1_000_000

# --------------------------------------------------------------------------- Cliff Walking


# --------------------------------------------------------------------------- expert policies
def mountaincar_energy_policy(obs: Sequence[float]) -> int:
    """MountainCar expert: push in the direction of the velocity (pumps energy).

    Reaches the goal of ``MountainCar-v0`` in ~115-125 steps from every start.

    Args:
        obs: ``[position, velocity]``.

    Returns:
        ``2`` (push right) if velocity >= 0, else ``0`` (push left).

    Example:
        >>> mountaincar_energy_policy([-0.5, 0.01]), mountaincar_energy_policy([-0.5, -0.01])
        (2, 0)
    """
    return 2 if obs[1] >= 0.0 else 0


def cartpole_balance_policy(obs: Sequence[float]) -> int:
    """CartPole balancing heuristic: push towards where the pole is falling.

    Holds ``CartPole-v1`` for the full 500 steps from typical starts.

    Args:
        obs: ``[cart position, cart velocity, pole angle theta, angular velocity]``.

    Returns:
        ``1`` (push right) if ``theta + 0.5 * theta_dot > 0``, else ``0``.

    Example:
        >>> cartpole_balance_policy([0.0, 0.0, 0.02, 0.1])
        1
    """
    return 1 if obs[2] + 0.5 * obs[3] > 0.0 else 0


# --------------------------------------------------------------------------- rollouts
@dataclass
class Rollouts:
    """What ``rollout_policy`` collected.

    Attributes:
        observations: Every observation the policy acted on, ``(total_steps, obs_size)``.
        episode_lengths: Steps per episode.
        episode_returns: Sum of the environment's rewards per episode.
        seeds: The reset seed of each episode (``seed + i``).
    """

    observations: np.ndarray
    episode_lengths: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def rollout_policy(
    env: str,
    policy: str | Callable[[Any], Any],
    *,
    env_config: Mapping[str, Any] | None = None,
    episodes: int = DEFAULT_EPISODES,
    seed: int = DEFAULT_SEED,
    max_steps: int | None = None,
) -> Rollouts:
    """Runs a policy for some episodes and records the observations it acted on.

    Episode ``i`` resets with ``seed + i``, so the same arguments give the same arrays
    (for a deterministic policy).

    Args:
        env: Gymnasium id or ``"module:Class"`` (see ``qeu_tune.envs.make_base_env``).
        policy: A function of one observation returning an action, or its
            ``"module:function"`` path.
        env_config: Keyword arguments for the environment.
        episodes: Number of episodes (>= 1).
        seed: Seed of the first episode's reset.
        max_steps: Optional cap on the steps of each episode.

    Returns:
        The ``Rollouts``.

    Raises:
        ValueError: Invalid arguments, an env that cannot be created, or a policy path
            that cannot be imported.

    Example:
        >>> r = rollout_policy("CartPole-v1", cartpole_balance_policy, episodes=2, seed=0)
        >>> r.observations.shape, r.episode_lengths
        ((1000, 4), [500, 500])
    """
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer or omitted, got {max_steps!r}.")
    act = import_object(policy, what="policy") if isinstance(policy, str) else policy
    if not callable(act):
        raise ValueError(f"policy {policy!r} is not callable.")
    cap = max_steps if max_steps is not None else _EPISODE_STEP_GUARD

    rows: list[np.ndarray] = []
    result = Rollouts(observations=np.empty((0, 0)))
    environment = make_base_env(env, dict(env_config or {}))
    try:
        for i in range(episodes):
            obs, _ = environment.reset(seed=seed + i)
            steps, ret = 0, 0.0
            while True:
                rows.append(np.array(obs, dtype=np.float64).reshape(-1))
                obs, reward, terminated, truncated, _ = environment.step(act(obs))
                steps += 1
                ret += float(reward)
                if terminated or truncated or steps >= cap:
                    break
            if max_steps is None and steps >= _EPISODE_STEP_GUARD:
                raise ValueError(
                    f"episode {i} of {env!r} did not end within {_EPISODE_STEP_GUARD} steps; set max_steps."
                )
            result.episode_lengths.append(steps)
            result.episode_returns.append(ret)
            result.seeds.append(seed + i)
    finally:
        environment.close()
    try:
        result.observations = np.stack(rows)
    except ValueError as exc:
        raise ValueError(f"observations of {env!r} do not all have the same size: {exc}") from None
    return result


# --------------------------------------------------------------------------- files
def _load_file(path: str | os.PathLike[str], columns: Sequence[Any] | None, base_dir: Path | None) -> np.ndarray:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    suffix = p.suffix.lower()
    if suffix not in FILE_EXTENSIONS:
        raise ValueError(
            f"unsupported know-how file {str(p)!r}: extension {suffix or '(none)'!r}; supported: "
            f"{', '.join(FILE_EXTENSIONS)}."
        )
    if not p.is_file():
        raise ValueError(
            f"know-how file not found: {str(p)!r} (relative paths resolve against {base_dir or Path.cwd()})."
        )

    if suffix == ".npy":
        try:
            data = np.load(p, allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle: refuse them
            raise ValueError(f"cannot read {str(p)!r} as a numeric .npy array: {exc}") from None
        if data.dtype.kind not in "iufb":
            raise ValueError(f"{str(p)!r} holds {data.dtype} data; know-how arrays must be numeric.")
        if data.ndim == 0:
            raise ValueError(
                f"{str(p)!r} holds a single number (a 0-d array, value {data.item()!r}); "
                f"know-how needs one observation per row: save a 1-D array (one scalar "
                f"observation per entry) or a 2-D array (observations x values)."
            )
        # Explicit sizes, not -1: an array with no rows has no size to infer.
        data = data.reshape(data.shape[0], math.prod(data.shape[1:]))
        if columns is not None:
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in columns):
                raise ValueError(
                    f"columns of a .npy file must be integer indices, got {list(columns)} for "
                    f"{str(p)!r} (.npy arrays have no column names)."
                )
            n_cols = data.shape[1]
            bad = [c for c in columns if not -n_cols <= c < n_cols]
            if bad:
                raise ValueError(
                    f"columns {bad} out of range for {str(p)!r}: its rows have {n_cols} "
                    f"values, so 'columns' takes indices 0..{n_cols - 1} (or negative ones "
                    f"counting from the end)."
                )
            data = data[:, list(columns)]
        return np.ascontiguousarray(data, dtype=np.float64)

    import pandas as pd

    if suffix == ".csv":
        with open(p, encoding="utf-8") as f:
            first = f.readline()
        if not first.strip():
            raise ValueError(
                f"know-how file {str(p)!r} is empty; it needs one observation per row "
                f"(numeric columns, an optional header row)."
            )
        header = 0 if _has_header(first) else None
        frame = pd.read_csv(p, header=header)
    else:
        frame = pd.read_parquet(p)
    if columns is not None:
        by_index = all(isinstance(c, int) for c in columns)  # positions, header or not
        try:
            frame = frame.iloc[:, list(columns)] if by_index else frame[list(columns)]
        except (KeyError, IndexError) as exc:
            raise ValueError(
                f"columns {list(columns)} not in {str(p)!r} (it has {list(frame.columns)}): {exc}"
            ) from None
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise ValueError(
            f"{str(p)!r}: non-numeric columns {non_numeric}; keep only numeric columns (use 'columns' to select them)."
        )
    return frame.to_numpy(dtype=np.float64)


def _has_header(line: str) -> bool:
    for cell in line.strip().split(","):
        try:
            float(cell)
        except ValueError:
            return True
    return False


# --------------------------------------------------------------------------- dispatch
@dataclass(frozen=True)
class _Builtin:
    load: Callable[[dict[str, Any]], np.ndarray]
    options: frozenset[str]


def _rollout_builtin(env: str, policy: Callable[[Any], Any]) -> Callable[[dict[str, Any]], np.ndarray]:
    def load(options: dict[str, Any]) -> np.ndarray:
        return rollout_policy(
            env,
            policy,
            episodes=options.get("episodes", DEFAULT_EPISODES),
            seed=options.get("seed", DEFAULT_SEED),
        ).observations

    return load


BUILTINS: dict[str, _Builtin] = {
    # What each one holds: see the module docstring.
    "cliff_standard_route": _Builtin(lambda _: cliff_standard_route(), frozenset()),
    "cliff_cells": _Builtin(lambda _: _cliff_cells(), frozenset()),
    "cliff_top_row": _Builtin(lambda _: _cliff_top_row(), frozenset()),
    "mountaincar_energy": _Builtin(
        _rollout_builtin("MountainCar-v0", mountaincar_energy_policy), frozenset({"episodes", "seed"})
    ),
    "cartpole_balance": _Builtin(
        _rollout_builtin("CartPole-v1", cartpole_balance_policy), frozenset({"episodes", "seed"})
    ),
}


def load_reference_data(source: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Loads raw reference observations (rows) from a know-how source.

    Args:
        source: ``{"type": "file" | "policy" | "list" | "builtin", ...}``; see the module
            docstring for each type's keys.
        base_dir: Directory that relative file paths resolve against (default: the
            current directory, which Hydra or Ray may change: prefer absolute paths or
            pass this).

    Returns:
        A 2-D float64 array, one observation per row, before any feature map.

    Raises:
        ValueError: Unknown type or builtin name (listing the valid ones), unknown keys,
            a missing file or unsupported extension, non-numeric or non-finite data.

    Example:
        >>> load_reference_data({"type": "list", "points": [[0, 3], [0, 2]]}).tolist()
        [[0.0, 3.0], [0.0, 2.0]]
        >>> load_reference_data({"type": "builtin", "name": "cliff_standard_route"}).shape
        (16, 2)
    """
    kind = check_typed_spec(source, what="know-how source", valid_keys=SOURCE_KEYS, type_order=SOURCE_TYPES)

    if kind == "file":
        if "path" not in source:
            raise ValueError("a 'file' know-how source needs 'path'.")
        columns = source.get("columns")
        data = _load_file(
            source["path"],
            None if columns is None else list(columns),
            None if base_dir is None else Path(base_dir),
        )
        origin = f"file {source['path']!r}"
    elif kind == "policy":
        missing = [k for k in ("env", "policy") if k not in source]
        if missing:
            raise ValueError(f"a 'policy' know-how source needs {missing}.")
        data = rollout_policy(
            source["env"],
            source["policy"],
            env_config=source.get("env_config"),
            episodes=source.get("episodes", DEFAULT_EPISODES),
            seed=source.get("seed", DEFAULT_SEED),
            max_steps=source.get("max_steps"),
        ).observations
        origin = f"rollouts of {source['policy']!r} on {source['env']!r}"
    elif kind == "list":
        data = _list_points(source.get("points"))
        origin = "'points'"
    else:
        name = source.get("name")
        if name not in BUILTINS:
            raise ValueError(f"unknown builtin know-how {name!r}; valid names: {', '.join(BUILTINS)}.")
        builtin = BUILTINS[name]
        options = {k: v for k, v in source.items() if k not in ("type", "name")}
        extra = sorted(set(options) - builtin.options)
        if extra:
            allowed = ", ".join(sorted(builtin.options)) or "none"
            raise ValueError(f"builtin know-how {name!r} does not take {extra}; options: {allowed}.")
        data = builtin.load(options)
        origin = f"builtin {name!r}"

    if data.shape[0] == 0:
        raise ValueError(f"know-how from {origin} is empty.")
    bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
    if bad.size:
        raise ValueError(f"know-how from {origin}: row {int(bad[0])} contains NaN or inf ({data[bad[0]].tolist()}).")
    return data


def _list_points(points: Any) -> np.ndarray:
    if points is None:
        raise ValueError("a 'list' know-how source needs 'points', e.g. points: [[0, 3], [0, 2]].")
    try:
        # Rows may be config sequences (e.g. OmegaConf ListConfig): make them plain lists.
        rows = [list(p) if isinstance(p, Sequence) and not isinstance(p, str) else p for p in points]
        data = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"'points' must be a list of numbers or of equal-length numeric lists: {exc}") from None
    return data.reshape(-1, 1) if data.ndim == 1 else data
