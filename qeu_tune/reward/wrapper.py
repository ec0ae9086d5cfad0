"""``RewardDesignWrapper``: feeds weighted metric values back into the reward.

Per step, with ``m_i`` the metric values of the new state ``s'``:

* ``additive``: component ``c_i = -w_i m_i(s')``;
* ``potential``: component ``c_i = w_i m_i(s) - gamma w_i m_i(s')``, i.e. the shaping
  ``gamma Phi(s') - Phi(s)`` with ``Phi = -sum_i w_i m_i`` split by metric. On a
  *terminated* step ``m_i(s') := 0`` (``Phi = 0`` at terminal states). A *truncated* step
  keeps the true ``Phi(s')``: the state is not terminal, the learner bootstraps from its
  value, and the ``gamma Phi(s')`` term is exactly what keeps that bootstrap consistent
  with the shaped values ``V'(s) = V(s) - Phi(s)`` (zeroing it would bias every update at
  a time limit by ``gamma Phi(s')``).

The returned reward is ``r + c_1 + c_2 + ...``, summed in metric order, so the per-step
``info`` entries add up to it exactly:

* ``reward/env``: the environment's own reward;
* ``reward/<metric>``: the metric's shaping component;
* ``rt/<metric>``: the metric value ``m(s')``.

These per-step entries are written only with ``step_info=True`` (the default); with
``False`` the env's own ``info`` passes through untouched except at episode ends. Nothing
in training reads them, and RLlib's vector env handles every ``info`` key on every step.

On the last step of every episode (terminated or truncated), whatever ``step_info``,
``info["qeu_episode"]`` (``qeu_tune.core.names.EPISODE_INFO_KEY``) holds a flat
``{name: float}``: ``return_env``, ``return_shaped``, ``reward/env/sum``,
``reward/<metric>/sum``, ``rt/<metric>/mean``, ``rt/<metric>/min``, ``rt/<metric>/max``
(over the episode's ``s'``), ``episode/len``.

Observation augmentation appends the metric values (of the observed state) to the
observation: the result is a flat ``float32`` ``Box``. A ``Box`` base observation is
flattened; a ``Discrete(n)`` one is one-hot encoded first (an index next to real-valued
metrics would be read as a magnitude); other spaces are rejected.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, SupportsFloat, Tuple

import gymnasium as gym
import numpy as np

from qeu_tune.core.names import EPISODE_INFO_KEY

Metric = Callable[[Any], float]
SHAPING_MODES = ("additive", "potential")


def episode_info_keys(metric_names: Sequence[str]) -> List[str]:
    """The keys of ``info["qeu_episode"]`` for a design with these metrics, in order.

    Args:
        metric_names: The design's metric names.

    Returns:
        ``["return_env", "return_shaped", "reward/env/sum", "episode/len",
        "reward/<m>/sum", "rt/<m>/mean", "rt/<m>/min", "rt/<m>/max", ...]``.
    """
    keys = ["return_env", "return_shaped", "reward/env/sum", "episode/len"]
    for name in metric_names:
        keys += [f"reward/{name}/sum", f"rt/{name}/mean", f"rt/{name}/min", f"rt/{name}/max"]
    return keys


class RewardDesignWrapper(gym.Wrapper):
    """Adds weighted metric terms to the reward and reports them in ``info``.

    Args:
        env: The environment to wrap.
        metrics: Metric name -> callable mapping one observation to a float.
        weights: Metric name -> weight ``w_i`` (same names as ``metrics``).
        mode: ``"additive"`` (``r - sum w_i m_i(s')``) or ``"potential"``
            (``r + gamma Phi(s') - Phi(s)``).
        gamma: Discount of the potential; required for ``"potential"`` and must equal the
            learner's gamma for the optimal policies to stay unchanged.
        augment_observation: Append the metric values to the observation.
        metric_bounds: Metric name -> ``(low, high)`` for the augmented observation space;
            default ``(-inf, inf)``.
        step_info: Write the per-step ``reward/env``, ``reward/<m>`` and ``rt/<m>``
            entries into ``info``; ``False`` keeps only ``info["qeu_episode"]`` at episode
            ends.

    Raises:
        ValueError: Unknown mode, missing gamma, mismatched names, or an observation
            space that cannot be augmented.

    Example:
        >>> env = RewardDesignWrapper(gym.make("CartPole-v1"), {"angle": lambda o: abs(o[2])},
        ...                           {"angle": 10.0}, mode="additive")
        >>> obs, info = env.reset(seed=0)
        >>> obs, r, term, trunc, info = env.step(0)
        >>> r == info["reward/env"] + info["reward/angle"]
        True
    """

    def __init__(
        self,
        env: gym.Env,
        metrics: Mapping[str, Metric],
        weights: Mapping[str, float],
        mode: str = "additive",
        gamma: Optional[float] = None,
        augment_observation: bool = False,
        metric_bounds: Optional[Mapping[str, Tuple[float, float]]] = None,
        step_info: bool = True,
    ) -> None:
        super().__init__(env)
        if mode not in SHAPING_MODES:
            raise ValueError(
                f"RewardDesignWrapper mode={mode!r} is not a shaping mode; valid choices: "
                f"{', '.join(SHAPING_MODES)} (without shaping, do not wrap)."
            )
        if mode == "potential" and (gamma is None or not 0.0 < float(gamma) <= 1.0):
            raise ValueError(
                f"potential-based shaping needs the learner's discount gamma in (0, 1]; got gamma={gamma!r}."
            )
        if not metrics:
            raise ValueError("RewardDesignWrapper needs at least one metric.")
        if set(weights) != set(metrics):
            raise ValueError(
                f"weights are given for {sorted(weights)} but the metrics are "
                f"{sorted(metrics)}; give exactly one weight per metric."
            )
        self.mode = mode
        self.gamma = 1.0 if gamma is None else float(gamma)
        self.augment_observation = augment_observation
        self.step_info = bool(step_info)
        self.metric_names: Tuple[str, ...] = tuple(metrics)
        self._metrics = tuple(metrics[name] for name in self.metric_names)
        self._weights = tuple(float(weights[name]) for name in self.metric_names)
        # Key strings built once: a step only looks them up.
        self._step_reward_keys = tuple(f"reward/{n}" for n in self.metric_names)
        self._step_rt_keys = tuple(f"rt/{n}" for n in self.metric_names)
        self._episode_keys = tuple(episode_info_keys(self.metric_names))
        self._potential = mode == "potential"
        # m_i of the latest state: the Phi(s) side of the next potential-based step.
        self._previous: List[float] = [0.0] * len(self._metrics)
        self._reset_stats()
        if augment_observation:
            bounds = dict(metric_bounds or {})
            self._encode, low, high = _flat_encoder(env.observation_space)
            m_low = [float(bounds.get(n, (-np.inf, np.inf))[0]) for n in self.metric_names]
            m_high = [float(bounds.get(n, (-np.inf, np.inf))[1]) for n in self.metric_names]
            self.observation_space = gym.spaces.Box(
                np.concatenate([low, m_low]).astype(np.float32),
                np.concatenate([high, m_high]).astype(np.float32),
                dtype=np.float32,
            )

    def _reset_stats(self) -> None:
        n = len(self._metrics)
        self._return_env = 0.0
        self._return_shaped = 0.0
        self._length = 0
        self._component_sums = [0.0] * n
        self._value_sums = [0.0] * n
        self._value_mins = [math.inf] * n
        self._value_maxs = [-math.inf] * n

    def _evaluate(self, obs: Any) -> List[float]:
        values = [float(metric(obs)) for metric in self._metrics]
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise self._non_finite(i, value, obs)
        return values

    def _non_finite(self, i: int, value: float, obs: Any) -> FloatingPointError:
        return FloatingPointError(
            f"reward metric {self.metric_names[i]!r} returned {value} for observation {obs!r}: "
            "check its feature map and know-how source (a degenerate unit space?)."
        )

    def _observe(self, obs: Any, values: Sequence[float]) -> Any:
        if not self.augment_observation:
            return obs
        return np.concatenate([self._encode(obs), np.asarray(values, dtype=np.float32)])

    def reset(
        self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None
    ) -> Tuple[Any, Dict[str, Any]]:
        """Resets the env and the episode statistics; ``Phi(s_0)`` is taken here."""
        obs, info = self.env.reset(seed=seed, options=options)
        values = self._evaluate(obs)
        self._previous = values
        self._reset_stats()
        return self._observe(obs, values), info

    def step(self, action: Any) -> Tuple[Any, SupportsFloat, bool, bool, Dict[str, Any]]:
        """Steps the env and shapes its reward (see the module doc for the formulas)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        env_reward = float(reward)
        shaped = env_reward
        # Potential mode: Phi(terminal) = 0, so gamma * Phi(s') drops out when terminated.
        gamma_next = 0.0 if terminated else self.gamma
        step_info = self.step_info
        if step_info:
            info = dict(info)  # a copy: some envs return the same info dict every step
            info["reward/env"] = env_reward
        # One pass per metric: this runs on every env step, so no intermediate lists.
        values = self._previous
        for i, metric in enumerate(self._metrics):
            value = float(metric(obs))
            if not math.isfinite(value):
                raise self._non_finite(i, value, obs)
            w = self._weights[i]
            if self._potential:
                component = w * values[i] - gamma_next * w * value
            else:
                component = -w * value
            values[i] = value
            shaped += component
            if step_info:
                info[self._step_reward_keys[i]] = component
                info[self._step_rt_keys[i]] = value
            self._component_sums[i] += component
            self._value_sums[i] += value
            if value < self._value_mins[i]:
                self._value_mins[i] = value
            if value > self._value_maxs[i]:
                self._value_maxs[i] = value
        self._return_env += env_reward
        self._return_shaped += shaped
        self._length += 1
        if terminated or truncated:
            if not step_info:
                info = dict(info)  # not copied above
            # Merged: the base env's task statistics may be there already.
            info[EPISODE_INFO_KEY] = {**(info.get(EPISODE_INFO_KEY) or {}), **self._episode_stats()}
        return self._observe(obs, values), shaped, terminated, truncated, info

    def _episode_stats(self) -> Dict[str, float]:
        """The values of ``info["qeu_episode"]``, in ``episode_info_keys`` order."""
        values = [self._return_env, self._return_shaped, self._return_env, float(self._length)]
        for i in range(len(self._metrics)):
            values += [
                self._component_sums[i],
                self._value_sums[i] / self._length,
                self._value_mins[i],
                self._value_maxs[i],
            ]
        return dict(zip(self._episode_keys, values))


def _flat_encoder(space: gym.Space) -> Tuple[Callable[[Any], np.ndarray], np.ndarray, np.ndarray]:
    """A map from observations to flat float32 vectors, with the vectors' bounds."""
    if isinstance(space, gym.spaces.Box):
        low = space.low.reshape(-1).astype(np.float64)
        high = space.high.reshape(-1).astype(np.float64)
        return (lambda obs: np.asarray(obs, dtype=np.float32).reshape(-1)), low, high
    if isinstance(space, gym.spaces.Discrete):
        n, start = int(space.n), int(space.start)
        eye = np.eye(n, dtype=np.float32)
        return (lambda obs: eye[int(obs) - start]), np.zeros(n), np.ones(n)
    raise ValueError(
        f"augment_observation needs a Box or Discrete observation space to append metric "
        f"values to, but the env's is {space}. Set reward.augment_observation: false, or "
        "flatten the observation with a Gymnasium wrapper in a 'module:Class' env."
    )
