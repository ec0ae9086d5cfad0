"""``algo=synthetic``: a learner that costs nothing, with a known ground truth.

Its "training" is a parametric learning curve with noise, so tests and benchmarks can run
sweeps of thousands of trials in seconds, and studies of the method (does the ranking find
the best configuration? how many seeds does a design comparison need?) can compare what a
sweep measured with what is true. Pure numpy: no RLlib learner, no torch model, no env.

The model
---------
After ``t`` env steps the expected unshaped return of a seed is::

    return_env(t) = floor + (ceiling - floor) * p(t),   p(t) = 1 - exp(-rate_seed * t / horizon)

    rate      = max(0, base_rate * exp(-(log10(lr) - log10(lr_opt))**2 / (2 * lr_width**2))
                       + sum_m effect_m * weight_m)
    rate_seed = rate * exp(seed_sd * z_seed),   z_seed ~ N(0, 1) drawn from the trial seed

* ``rate`` (``true_rate``) counts e-foldings of the remaining gap per ``horizon`` env steps.
  The learning rate enters through a Gaussian in ``log10(lr)`` with its maximum
  ``base_rate`` at ``lr_opt`` (the known optimum, ``lr_width`` decades wide).
* The reward design (``reward.metrics.<m>.weight``, only when ``reward.mode`` is additive or
  potential) shifts the rate additively: metric ``m`` adds ``effect_m * weight_m``, with
  ``effect_m = metric_effects[m]`` if given, else ``design_effect``. The true effect of a
  design on the rate is therefore exactly ``sum_m effect_m * weight_m``, whatever ``lr``
  (unless the rate is clipped at 0).
* Seeds differ by a log-normal factor on the rate (``seed_sd``): some seeds learn faster,
  all start at ``floor``; ``rate`` is the median seed's (and the geometric mean).
* Each reported training return adds ``N(0, (noise_sd * (ceiling - floor))**2)`` noise,
  independently per iteration (``noise_sd`` is a fraction of the return range, so one
  default suits every env). The noise is not clipped: a value may leave the range.
* ``floor``/``ceiling`` default to the env's ``return_range``; without one, to a range that
  puts ``return_threshold`` at 95% of the way up (steps-to-threshold then works); without
  either, ``(0, 1)``. With the shipped envs the threshold lies at 90-99% of the range, so
  the best configurations cross it within the budget and the worst do not.
* ``horizon`` defaults to ``stop.env_steps``, the trial's budget (set it to fix the curve).

The progress ``p`` is the learner's state: each iteration does ``p <- 1 - (1 - p) *
exp(-rate_seed * steps / horizon)`` (the closed form above at a constant rate); when PBT
changes ``lr`` mid-trial, the curve goes on from the exploited progress at the new rate.

Ground truth
------------
``true_rate(config)``, ``seed_rate(config, seed)``, ``true_curve(config, env_steps, seed=)``,
``reported_steps(config)`` and ``true_final_return(config, seed=)`` take a resolved trial
config (``qeu_tune.config.trial.resolve_trial_config``, or a child run's
``config/resolved.yaml`` artifact). ``true_final_return`` is the expected unshaped return
at the trial's last iteration: over seeds and noise (``seed=None``, a Gauss-Hermite
integral over ``z``), or of one seed (noise only). The true effect of a design is
``true_final_return(with) - true_final_return(without)`` (or the rate shift above).
``conv/final_mean`` averages the last ``convergence.last_k`` points: its truth is
``true_curve(config, reported_steps(config)[-last_k:]).mean()``.

What a trial reports
--------------------
Results go through the same path as RLlib's (``train_trial``'s loop, ``flatten_result``,
``flatten_evaluation``, the progress file, Tune checkpoints, ``hparam/``): each iteration
samples ``steps_per_iteration`` env steps and reports ``return_env/mean`` (noisy),
``return/mean`` (shaped: ``return_env/mean`` plus the design's ``reward/<m>/sum``),
``episode/len_mean``, ``episode/count_lifetime``, ``progress/*`` and ``perf/env_steps_per_s``
(the model's real, very high, throughput). With a design: ``return_shaped``,
``episode/len``, ``reward/env/sum``, ``reward/<m>/sum`` and ``rt/<m>/mean``, where the
metric's per-step value ``m(t) = metric_start * (1 - p(t))`` shrinks as the agent learns;
additive designs add ``-w m len`` to the return, potential ones
``w m (1 + (1 - gamma)(len - 1))`` (the telescoped shaping with a constant ``m``).
With ``evaluation.interval > 0``: ``eval/return_env/mean`` (the same expected curve, its own
noise stream, so evaluating does not change the training curve), ``eval/episode/len_mean``,
``eval/episodes`` at the iterations ``train_trial`` evaluates. Not modelled, so not
reported: ``return/min``/``max``, ``rt/<m>/min``/``max``, ``learner/*``, ``task/*``
(CartPole has no goal; a goal flag would only restate the threshold). ``conv/*`` comes
from the driver, as for every trial. ``episode/len_mean`` is ``episode_len`` if set, else
``|expected return_env|`` (at least 1): right for CartPole, MountainCar and Acrobot.

Iterations take microseconds; ``step_time_s`` sleeps that long per iteration to imitate
slower trials. ``save_to_path``/``restore_from_path`` keep the iteration, env steps,
progress, episode count, time and both random streams, so retries, ``qeu-tune resume`` and
PBT continue where the checkpoint left off, exactly.

Whole on purpose: model, truth and reporting must agree exactly (tests check to 1e-9).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from qeu_tune.core.errors import ConfigError

NAME = "synthetic"  # algo.name
STATE_FILE = "synthetic_state.json"  # in each Tune checkpoint, next to the progress file
# RLlib's result keys the model emits (qeu_tune.engine.episode_metrics reads them); the
# namespace is episode_metrics.RLLIB_NAMESPACE, not imported here because that imports RLlib.
_NAMESPACE = "qeu"
_SHAPING_MODES = ("additive", "potential")
_HERMITE_NODES = 64


@dataclass(frozen=True)
class SyntheticParams:
    """``algo.params`` of ``algo=synthetic`` (documented in ``conf/algo/synthetic.yaml``)."""

    lr: float = 3e-4
    lr_opt: float = 1e-3
    lr_width: float = 0.5
    base_rate: float = 5.0
    design_effect: float = 1.0
    metric_effects: Mapping[str, float] = field(default_factory=dict)
    seed_sd: float = 0.2
    noise_sd: float = 0.02
    floor: Optional[float] = None
    ceiling: Optional[float] = None
    horizon: Optional[int] = None
    steps_per_iteration: int = 1000
    episode_len: Optional[float] = None
    metric_start: float = 1.0
    step_time_s: float = 0.0
    gamma: float = 0.99


_FIELDS = tuple(f.name for f in dataclasses.fields(SyntheticParams))
# name -> (low, low_open, nullable, integer)
_RANGES: Dict[str, Tuple[Optional[float], bool, bool, bool]] = {
    "lr": (0.0, True, False, False),
    "lr_opt": (0.0, True, False, False),
    "lr_width": (0.0, True, False, False),
    "base_rate": (0.0, False, False, False),
    "design_effect": (None, False, False, False),
    "seed_sd": (0.0, False, False, False),
    "noise_sd": (0.0, False, False, False),
    "floor": (None, False, True, False),
    "ceiling": (None, False, True, False),
    "horizon": (0.0, True, True, True),
    "steps_per_iteration": (1.0, False, False, True),
    "episode_len": (0.0, True, True, False),
    "metric_start": (0.0, False, False, False),
    "step_time_s": (0.0, False, False, False),
    "gamma": (0.0, True, False, False),
}


def parse_params(params: Optional[Mapping[str, Any]]) -> SyntheticParams:
    """Validates ``algo.params`` of a synthetic trial.

    Raises:
        ConfigError: An unknown key (with the valid ones) or a value out of range.
    """
    params = dict(params or {})
    unknown = sorted(str(k) for k in params if k not in _FIELDS)
    if unknown:
        raise ConfigError(
            f"algo.params for synthetic: unknown key(s) {', '.join(unknown)}; the synthetic "
            f"learning curve's keys are {', '.join(_FIELDS)} (see conf/algo/synthetic.yaml)."
        )
    values: Dict[str, Any] = {}
    for key, (low, low_open, nullable, integer) in _RANGES.items():
        if key not in params:
            continue
        value = params[key]
        if value is None and nullable:
            values[key] = None
            continue
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and not (integer and value != int(value))
        ok = ok and (low is None or (value > low if low_open else value >= low))
        ok = ok and not (key == "gamma" and value > 1)
        if not ok:
            kind = "an integer" if integer else "a number"
            where = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
            where += " and <= 1" if key == "gamma" else ""
            raise ConfigError(
                f"algo.params.{key}={value!r}: the synthetic learner's {key} must be {kind}{where}"
                f"{' (or null)' if nullable else ''}; defaults in conf/algo/synthetic.yaml."
            )
        values[key] = int(value) if integer else float(value)
    effects = params.get("metric_effects") or {}
    if not isinstance(effects, Mapping) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in effects.values()
    ):
        raise ConfigError(
            f"algo.params.metric_effects={effects!r} must map reward metric names to numbers "
            "(the rate each unit of the metric's weight adds), e.g. {balance: 2.0}."
        )
    values["metric_effects"] = {str(k): float(v) for k, v in effects.items()}
    out = SyntheticParams(**values)
    if out.floor is not None and out.ceiling is not None and not out.ceiling > out.floor:
        raise ConfigError(
            f"algo.params.ceiling={out.ceiling} must be greater than algo.params.floor={out.floor} "
            "(the curve rises from floor towards ceiling)."
        )
    return out


@dataclass(frozen=True)
class CurveModel:
    """A trial config's resolved model: the learner and the truth functions share it.

    Attributes:
        params: The validated ``algo.params``.
        floor, ceiling: The return at ``t = 0`` and the asymptote.
        horizon: Env steps per unit of ``rate * t``.
        budget: ``stop.env_steps``.
        rate: The median seed's rate (``true_rate``).
        weights: Metric -> weight of the active reward design (empty for ``mode: none``).
        shift: The rate the design adds, ``sum_m effect_m * weight_m``.
        mode: ``reward.mode``.
        gamma: The discount of potential shaping (``reward.gamma`` or ``algo.params.gamma``);
            the driver's validation builds the env with it, like an RLlib config's gamma.
    """

    params: SyntheticParams
    floor: float
    ceiling: float
    horizon: float
    budget: int
    rate: float
    weights: Mapping[str, float]
    shift: float
    mode: str
    gamma: float

    @property
    def noise(self) -> float:
        """The sd of a reported return's noise, in return units."""
        return self.params.noise_sd * (self.ceiling - self.floor)


def _return_range(params: SyntheticParams, env: Mapping[str, Any]) -> Tuple[float, float]:
    value_range = env.get("return_range")
    threshold = env.get("return_threshold")
    if value_range:
        floor, ceiling = float(value_range[0]), float(value_range[1])
    elif threshold is not None:  # the threshold at 95% of the way from floor to ceiling
        scale = max(1.0, abs(float(threshold)))
        floor, ceiling = float(threshold) - scale, float(threshold) + scale / 19.0
    else:
        floor, ceiling = 0.0, 1.0
    floor = params.floor if params.floor is not None else floor
    ceiling = params.ceiling if params.ceiling is not None else ceiling
    if not ceiling > floor:
        raise ConfigError(
            f"algo=synthetic: the curve's ceiling {ceiling} is not above its floor {floor} "
            "(from algo.params.floor/ceiling or env.return_range); set both explicitly."
        )
    return floor, ceiling


def lr_factor(lr: float, lr_opt: float, width: float) -> float:
    """The Gaussian in ``log10(lr)``: 1 at ``lr_opt``, ``exp(-1/2)`` one ``width`` away."""
    distance = math.log10(lr) - math.log10(lr_opt)
    return math.exp(-distance * distance / (2.0 * width * width))


def design_weights(config: Mapping[str, Any]) -> Dict[str, float]:
    """Metric -> weight of the trial's reward design; empty for ``mode: none``."""
    reward = config.get("reward") or {}
    if reward.get("mode", "none") not in _SHAPING_MODES:
        return {}
    return {
        str(name): float((metric or {}).get("weight", 0.0) or 0.0)
        for name, metric in (reward.get("metrics") or {}).items()
    }


def design_shift(config: Mapping[str, Any]) -> float:
    """The rate the reward design adds: ``sum_m effect_m * weight_m``."""
    return model(config).shift


def model(config: Mapping[str, Any]) -> CurveModel:
    """The resolved model of a trial config (validated).

    Raises:
        ConfigError: Invalid ``algo.params`` (unknown key, value out of range).
    """
    params = parse_params(config["algo"].get("params"))
    floor, ceiling = _return_range(params, config.get("env") or {})
    budget = int((config.get("stop") or {}).get("env_steps") or 0)
    horizon = float(params.horizon or budget or params.steps_per_iteration)
    weights = design_weights(config)
    shift = sum((params.metric_effects.get(m, params.design_effect) * w for m, w in weights.items()), 0.0)
    rate = max(0.0, params.base_rate * lr_factor(params.lr, params.lr_opt, params.lr_width) + shift)
    reward = config.get("reward") or {}
    gamma = float(reward["gamma"]) if reward.get("gamma") is not None else params.gamma
    return CurveModel(
        params=params,
        floor=floor,
        ceiling=ceiling,
        horizon=horizon,
        budget=budget,
        rate=rate,
        weights=weights,
        shift=shift,
        mode=str(reward.get("mode", "none")),
        gamma=gamma,
    )


def checked_config(config: Mapping[str, Any]) -> CurveModel:
    """The driver's check of a synthetic trial (``qeu_tune.engine.preflight``): no RLlib."""
    return model(config)


# ----------------------------------------------------------------------------- seeds


def _seed_sequences(seed: Optional[int]) -> Sequence[np.random.SeedSequence]:
    """Independent streams of one trial seed: [seed offset, training noise, evaluation noise]."""
    return np.random.SeedSequence(int(seed or 0) % 2**63).spawn(3)


def seed_offset(seed: Optional[int]) -> float:
    """``z_seed ~ N(0, 1)``: the seed's position in the seed-to-seed spread."""
    return float(np.random.default_rng(_seed_sequences(seed)[0]).standard_normal())


def seed_rate(config: Mapping[str, Any], seed: Optional[int] = None) -> float:
    """The rate of one seed (default: the config's ``seed``): ``rate * exp(seed_sd * z_seed)``."""
    m = model(config)
    seed = config.get("seed") if seed is None else seed
    return m.rate * math.exp(m.params.seed_sd * seed_offset(seed))


# ----------------------------------------------------------------------------- ground truth


def true_rate(config: Mapping[str, Any]) -> float:
    """The median seed's rate: ``max(0, base_rate * lr_factor + sum_m effect_m * weight_m)``."""
    return model(config).rate


def reported_steps(config: Mapping[str, Any]) -> np.ndarray:
    """The env steps of every iteration a trial reports (the last one reaches the budget)."""
    m = model(config)
    every = m.params.steps_per_iteration
    iterations = max(1, math.ceil(m.budget / every))
    return np.arange(1, iterations + 1, dtype=float) * every


def true_curve(config: Mapping[str, Any], env_steps: Any, *, seed: Optional[int] = None) -> np.ndarray:
    """The expected unshaped return at ``env_steps`` (a number or an array).

    Args:
        config: A resolved trial config.
        env_steps: Env steps.
        seed: ``None``: the expectation over seeds and noise (what a study with many seeds
            estimates); a seed: that seed's curve (expectation over noise only).
    """
    m = model(config)
    steps = np.asarray(env_steps, dtype=float)
    if seed is not None:
        rate = m.rate * math.exp(m.params.seed_sd * seed_offset(seed))
        remaining = np.exp(-rate * steps / m.horizon)
    else:  # E_z[exp(-rate e^{sd z} t / h)], z ~ N(0, 1), by Gauss-Hermite quadrature
        nodes, weights = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
        weights = weights / weights.sum()
        rates = m.rate * np.exp(m.params.seed_sd * nodes)
        remaining = np.tensordot(np.exp(-np.multiply.outer(steps, rates) / m.horizon), weights, axes=1)
    return m.floor + (m.ceiling - m.floor) * (1.0 - remaining)


def true_final_return(config: Mapping[str, Any], *, seed: Optional[int] = None) -> float:
    """The expected unshaped return at a trial's last iteration (see ``true_curve``)."""
    return float(true_curve(config, reported_steps(config)[-1], seed=seed))


# ----------------------------------------------------------------------------- the learner


class SyntheticAlgorithm:
    """One synthetic trial's learner, with the surface ``train_trial`` uses of an RLlib
    ``Algorithm``: ``train()`` and ``evaluate()`` return RLlib-shaped results, which
    ``qeu_tune.engine.episode_metrics`` maps to the documented names like any other;
    ``save_to_path``/``restore_from_path`` and ``stop`` complete it.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.model = model(config)
        seed = config.get("seed")
        streams = _seed_sequences(seed)
        self.rate = self.model.rate * math.exp(self.model.params.seed_sd * seed_offset(seed))
        self._rng = np.random.default_rng(streams[1])
        self._eval_rng = np.random.default_rng(streams[2])
        evaluation = config.get("evaluation") or {}
        self.eval_every = int(evaluation.get("interval") or 0)
        self.eval_episodes = int(evaluation.get("episodes") or 1)
        self.iteration = 0
        self.env_steps = 0
        self.progress = 0.0  # p: the fraction of the way from floor to ceiling
        self.episodes = 0.0
        self.time_total_s = 0.0

    # -- the curve -------------------------------------------------------------------
    def expected_return(self) -> float:
        m = self.model
        return m.floor + (m.ceiling - m.floor) * self.progress

    def episode_len(self) -> float:
        fixed = self.model.params.episode_len
        return float(fixed) if fixed is not None else max(1.0, abs(self.expected_return()))

    def _episode_stats(self, env_return: float, length: float) -> Dict[str, float]:
        """What the reward wrapper reports per episode (``qeu_tune.reward.wrapper``)."""
        m = self.model
        if not m.weights:
            return {"return_env": env_return}
        value = m.params.metric_start * (1.0 - self.progress)  # the metric's per-step mean
        sums = {}
        for name, weight in m.weights.items():
            if m.mode == "potential":
                sums[name] = weight * value * (1.0 + (1.0 - m.gamma) * (length - 1.0))
            else:
                sums[name] = -weight * value * length
        shaped = env_return + sum(sums.values())
        stats = {"return_env": env_return, "return_shaped": shaped, "reward/env/sum": env_return, "episode/len": length}
        for name in m.weights:
            stats[f"reward/{name}/sum"] = sums[name]
            stats[f"rt/{name}/mean"] = value
        return stats

    def _runners(self, env_return: float, episodes: float) -> Dict[str, Any]:
        length = self.episode_len()
        stats = self._episode_stats(env_return, length)
        return {
            "episode_return_mean": stats.get("return_shaped", env_return),
            "episode_len_mean": length,
            "num_episodes": episodes,
            _NAMESPACE: stats,
        }

    # -- RLlib's Algorithm surface --------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        """One iteration: ``steps_per_iteration`` env steps along the curve, one noisy point."""
        start = time.perf_counter()
        steps = self.model.params.steps_per_iteration
        self.progress = 1.0 - (1.0 - self.progress) * math.exp(-self.rate * steps / self.model.horizon)
        self.env_steps += steps
        self.iteration += 1
        env_return = self.expected_return() + self.model.noise * float(self._rng.standard_normal())
        new_episodes = steps / self.episode_len()
        self.episodes += new_episodes
        runners = self._runners(env_return, new_episodes)
        runners.update(num_episodes_lifetime=self.episodes, num_env_steps_sampled_lifetime=self.env_steps)
        result: Dict[str, Any] = {
            "env_runners": runners,
            "num_env_steps_sampled_lifetime": self.env_steps,
            "training_iteration": self.iteration,
        }
        if self.eval_every and self.iteration % self.eval_every == 0:  # as RLlib's evaluation_interval
            result["evaluation"] = self.evaluate()
        if self.model.params.step_time_s > 0:
            time.sleep(self.model.params.step_time_s)
        elapsed = time.perf_counter() - start
        self.time_total_s += elapsed
        result.update(time_this_iter_s=elapsed, time_total_s=self.time_total_s)
        return result

    def evaluate(self) -> Dict[str, Any]:
        """A greedy evaluation: the expected curve now, with its own noise stream."""
        noise = self.model.noise * float(self._eval_rng.standard_normal())
        return {"env_runners": self._runners(self.expected_return() + noise, float(self.eval_episodes))}

    def get_state(self) -> Dict[str, Any]:
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "progress": self.progress,
            "episodes": self.episodes,
            "time_total_s": self.time_total_s,
            "rng": self._rng.bit_generator.state,
            "eval_rng": self._eval_rng.bit_generator.state,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        self.progress = float(state["progress"])
        self.episodes = float(state["episodes"])
        self.time_total_s = float(state["time_total_s"])
        self._rng.bit_generator.state = state["rng"]
        self._eval_rng.bit_generator.state = state["eval_rng"]

    def save_to_path(self, path: Union[str, os.PathLike]) -> str:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, STATE_FILE), "w") as out:
            json.dump(self.get_state(), out)
        return str(path)

    def restore_from_path(self, path: Union[str, os.PathLike]) -> None:
        with open(os.path.join(path, STATE_FILE)) as stream:
            self.set_state(json.load(stream))

    def stop(self) -> None:
        """Nothing to release."""
