"""Numeric rules for a composed config: budgets and the RLlib hyperparameters RLlib does not check.

One table, ``NUMERIC_RULES``; every rule names its valid range and an example in its error, so a
bad value stops the sweep with one paragraph (exit code 2) before Ray starts.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from qeu_tune.core.errors import ConfigError

# ----------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Rule:
    """The valid range of one numeric config value.

    Attributes:
        low, high: Bounds (None: unbounded); ``low_open``/``high_open`` exclude them.
        integer: The value must be an integer.
        nullable: ``null`` is valid (means "no limit" or "use the default").
        schedule: A list of ``[timestep, value]`` pairs (RLlib schedules) is valid too.
        example: A valid setting, shown as the fix.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    nullable: bool = False
    schedule: bool = False
    example: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            where = f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            where = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            where = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            where = ""
        text = f"{kind} {where}".strip()
        return text + (" (or null)" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.schedule and isinstance(value, (list, tuple)):
            return bool(value) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and self.accepts(p[1]) for p in value
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_POS = dict(low=0, low_open=True)
_NONNEG = dict(low=0)
_UNIT = dict(low=0, high=1)

# Dotted config key -> valid range. Budgets and run settings, then RLlib hyperparameters
# that RLlib's AlgorithmConfig.validate() accepts out of range (checked on RLlib 2.60: it
# takes lr=-1, gamma=2, num_epochs=0, n_step=0, train_batch_size_per_learner=0 silently).
NUMERIC_RULES: Dict[str, Rule] = {
    "stop.env_steps": Rule(**_POS, integer=True, example="stop.env_steps=50000"),
    "stop.time_s": Rule(**_POS, nullable=True, example="stop.time_s=600 (or null: no limit)"),
    "search.num_samples": Rule(low=1, integer=True, example="search.num_samples=4"),
    "search.num_seeds": Rule(low=1, integer=True, example="search.num_seeds=3"),
    "search.max_concurrent_trials": Rule(
        low=1, integer=True, nullable=True, example="search.max_concurrent_trials=2 (or null: as many as CPUs allow)"
    ),
    "checkpoint_every": Rule(**_NONNEG, integer=True, example="checkpoint_every=10 (0: only at the end)"),
    "max_failures": Rule(low=-1, integer=True, example="max_failures=2 (-1: retry forever)"),
    "tracking.flush_every_s": Rule(**_NONNEG, example="tracking.flush_every_s=0 (journal every result at once)"),
    "tracking.conv_every_s": Rule(**_NONNEG, example="tracking.conv_every_s=0 (conv/* with every result)"),
    "cluster.num_cpus": Rule(low=1, integer=True, nullable=True, example="cluster.num_cpus=2 (or null: all cores)"),
    "convergence.window": Rule(low=1, integer=True, example="convergence.window=5"),
    "convergence.sustain": Rule(low=1, integer=True, example="convergence.sustain=3"),
    "convergence.last_k": Rule(low=1, integer=True, example="convergence.last_k=5"),
    "evaluation.interval": Rule(**_NONNEG, integer=True, example="evaluation.interval=5 (0: no evaluation)"),
    "evaluation.episodes": Rule(low=1, integer=True, example="evaluation.episodes=5"),
    "algo.num_env_runners": Rule(**_NONNEG, integer=True, example="algo.num_env_runners=0"),
    "algo.num_envs_per_env_runner": Rule(low=1, integer=True, example="algo.num_envs_per_env_runner=1"),
    # RLlib hyperparameters (AlgorithmConfig.training): only checked when present.
    "algo.params.lr": Rule(**_POS, nullable=True, schedule=True, example="algo.params.lr=0.0003"),
    "algo.params.actor_lr": Rule(**_POS, schedule=True, example="algo.params.actor_lr=0.0003"),
    "algo.params.critic_lr": Rule(**_POS, schedule=True, example="algo.params.critic_lr=0.0003"),
    "algo.params.alpha_lr": Rule(**_POS, schedule=True, example="algo.params.alpha_lr=0.0003"),
    "algo.params.gamma": Rule(**_UNIT, low_open=True, example="algo.params.gamma=0.99"),
    "algo.params.lambda_": Rule(**_UNIT, example="algo.params.lambda_=0.95"),
    "algo.params.tau": Rule(**_UNIT, low_open=True, example="algo.params.tau=0.005"),
    "algo.params.train_batch_size_per_learner": Rule(
        low=1, integer=True, example="algo.params.train_batch_size_per_learner=2000"
    ),
    "algo.params.minibatch_size": Rule(low=1, integer=True, nullable=True, example="algo.params.minibatch_size=128"),
    "algo.params.num_epochs": Rule(low=1, integer=True, example="algo.params.num_epochs=6"),
    "algo.params.n_step": Rule(low=1, integer=True, example="algo.params.n_step=3"),
    "algo.params.clip_param": Rule(**_POS, example="algo.params.clip_param=0.2"),
    "algo.params.vf_clip_param": Rule(**_POS, example="algo.params.vf_clip_param=10.0"),
    "algo.params.vf_loss_coeff": Rule(**_NONNEG, example="algo.params.vf_loss_coeff=0.5"),
    "algo.params.entropy_coeff": Rule(**_NONNEG, schedule=True, example="algo.params.entropy_coeff=0.01"),
    "algo.params.kl_coeff": Rule(**_NONNEG, example="algo.params.kl_coeff=0.2"),
    "algo.params.kl_target": Rule(**_POS, example="algo.params.kl_target=0.01"),
    "algo.params.grad_clip": Rule(**_POS, nullable=True, example="algo.params.grad_clip=40.0 (or null)"),
    "algo.params.target_network_update_freq": Rule(
        **_NONNEG, integer=True, example="algo.params.target_network_update_freq=500"
    ),
    "algo.params.num_steps_sampled_before_learning_starts": Rule(
        **_NONNEG, integer=True, example="algo.params.num_steps_sampled_before_learning_starts=1000"
    ),
}


def check_numeric(key: str, value: Any, *, origin: str = "") -> None:
    """Checks one value against ``NUMERIC_RULES`` (keys without a rule pass).

    Args:
        key: Dotted config key, e.g. ``algo.params.lr``.
        value: The value (a fixed one, or one a search space can sample).
        origin: Where the value comes from, for the message (e.g. a search expression).

    Raises:
        ConfigError: The value is out of range or not a number.
    """
    rule = NUMERIC_RULES.get(key)
    if rule is None or rule.accepts(value):
        return
    where = f"{key}={value!r}" + (f" ({origin})" if origin else "")
    raise ConfigError(f"{where}: {key} must be {rule.describe()}; e.g. {rule.example}.")


def dotted_items(config: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from dotted_items(value, path + ".")
        else:
            yield path, value


def check_config(config: Mapping[str, Any]) -> None:
    """Numeric sanity of a composed (or trial) config: every key of ``NUMERIC_RULES``.

    Raises:
        ConfigError: The first value out of range, with its valid range and an example.
    """
    for key, value in dotted_items(config):
        if key in NUMERIC_RULES:
            check_numeric(key, value)
