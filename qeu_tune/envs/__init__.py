"""Environments: build any Gymnasium id or ``module:Class``, and the built-in tasks.

Importing this package registers the built-in tasks with Gymnasium:

* ``QEUCliffWalking-v0``: the QEU blog's Cliff Walking set-up
  (``qeu_tune.envs.cliff_walking``), with a 500-step time limit.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import Any, Dict, Optional

import gymnasium as gym

from qeu_tune.envs.cliff_walking import ENV_ID as CLIFF_ENV_ID
from qeu_tune.envs.cliff_walking import MAX_EPISODE_STEPS as CLIFF_MAX_EPISODE_STEPS
from qeu_tune.envs.cliff_walking import QEUCliffWalkingEnv, obs_to_xy
from qeu_tune.rt.features import import_object

__all__ = ["CLIFF_ENV_ID", "QEUCliffWalkingEnv", "make_base_env", "obs_to_xy", "register_builtin_envs"]

_FIX = (
    "Use a registered Gymnasium id such as CartPole-v1 or QEUCliffWalking-v0, or an import "
    "path 'module:Class' of a gymnasium.Env subclass importable on every Ray worker."
)


def register_builtin_envs() -> None:
    """Registers the built-in tasks with Gymnasium (idempotent: no re-registration warning)."""
    if CLIFF_ENV_ID not in gym.registry:
        gym.register(
            id=CLIFF_ENV_ID,
            entry_point="qeu_tune.envs.cliff_walking:QEUCliffWalkingEnv",
            max_episode_steps=CLIFF_MAX_EPISODE_STEPS,
        )


register_builtin_envs()


def make_base_env(env_id: str, env_config: Optional[Dict[str, Any]] = None) -> gym.Env:
    """Builds an environment from a Gymnasium id or a ``module:Class`` import path.

    Args:
        env_id: A registered Gymnasium id (``gymnasium.make(env_id, **env_config)``, which
            adds the registered time limit), ``"package.module:Class"`` (imported and
            instantiated as ``Class(**env_config)``, no wrappers added), or Gymnasium's
            ``"package.module:Env-v0"`` (module imported for its registrations, then made).
        env_config: Keyword arguments for the environment.

    Returns:
        The environment, not reset.

    Raises:
        ValueError: Unknown id (with the closest registered ids), a module or class that
            cannot be imported, or ``env_config`` keys the environment does not accept.

    Example:
        >>> env = make_base_env("QEUCliffWalking-v0", {"obs": "xy"})
        >>> env.spec.max_episode_steps
        500
    """
    if not isinstance(env_id, str) or not env_id.strip():
        raise ValueError(f"env id {env_id!r} is not a non-empty string. {_FIX}")
    kwargs = dict(env_config or {})
    module_name, _, attr = env_id.partition(":")
    # "module:Class" is ours; Gymnasium's own "module:Env-v0" (import, then make) has a
    # registered id after the colon, which is never a Python identifier.
    if attr and attr.isidentifier():
        env_cls = _import_env_class(env_id)
        try:
            env = env_cls(**kwargs)
        except TypeError as err:
            raise ValueError(
                f"{env_id}({_kwargs_text(kwargs)}) failed: {err}. Check env.env_config against "
                f"the constructor of {env_id}."
            ) from None
        if not isinstance(env, gym.Env):
            raise ValueError(f"{env_id} built a {type(env).__name__}, not a gymnasium.Env. {_FIX}")
        return env
    if attr:
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"cannot import module {module_name!r} of env {env_id!r}: {err}. {_FIX}") from None
        env_id = attr
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{env_id!r} is not a registered Gymnasium environment id.{hint} {_FIX}")
    try:
        return gym.make(env_id, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"gymnasium.make({env_id!r}, {_kwargs_text(kwargs)}) failed: {err}. Check "
            "env.env_config: its keys are passed to the environment's constructor."
        ) from None


def _kwargs_text(kwargs: Dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())


def _import_env_class(path: str) -> Any:
    """Imports the env class (or factory) of ``"module:Class"`` with ``import_object``."""
    try:
        env_cls = import_object(path, what="env")
    except ValueError as err:
        # The env-specific part: the names the module does have that are close to attr.
        module_name, _, attr = path.partition(":")
        module = sys.modules.get(module_name)
        hint = ""
        if module is not None and attr:
            public = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, public, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{err}{hint} {_FIX}") from None
    if not callable(env_cls):
        raise ValueError(f"{path!r} is a {type(env_cls).__name__}, not a class or factory. {_FIX}")
    return env_cls
