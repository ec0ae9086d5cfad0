"""From the sweep's base config and one trial's sampled values to the trial's full config.

Pure functions on plain dicts: the driver uses them to validate a sweep, workers to build
their trial, and reruns to reproduce one exactly.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.redact import redact
from qeu_tune.core.tags import HPARAM_PREFIX

SEED_KEY = "seed"
# Set by Tune's Repeater on every repeat of one sampled configuration.
TRIAL_INDEX_KEY = "__trial_index__"
_MISSING = object()


def seeds(first: int, count: int) -> List[int]:
    """The seeds of one configuration's repeats: ``first, first+1, ...``."""
    if count < 1:
        raise ConfigError(f"search.num_seeds must be >= 1, got {count}.")
    return [first + i for i in range(count)]


def trial_seed(params: Mapping[str, Any], first_seed: int) -> int:
    """The seed a trial uses: set explicitly (grid/PBT) or from Tune's repeat index."""
    if SEED_KEY in params:
        return int(params[SEED_KEY])
    return first_seed + int(params.get(TRIAL_INDEX_KEY, 0))


@dataclass
class TrialTemplate:
    """What every trial of a sweep needs, shipped to workers as plain data.

    Attributes:
        base: The composed, resolved experiment config.
        group_options: ``{group: {option: subtree}}`` for groups that are searched over.
    """

    base: Dict[str, Any]
    group_options: Dict[str, Dict[str, Dict[str, Any]]] = field(default_factory=dict)


# What a trial's process builds its algorithm and environment from: the real values (an env may
# need a token); what it never reads (the tracking URI, tags) reaches it masked.
TRIAL_SECTIONS = ("algo", "env", "reward")


def redacted_template(template: TrialTemplate, keep: Sequence[str] = ()) -> TrialTemplate:
    """A copy with every known secret masked (``qeu_tune.core.redact``), except in the
    top-level sections ``keep``. Tune pickles the driver's copy into its experiment state."""
    return TrialTemplate(
        base={k: v if k in keep else redact(v) for k, v in template.base.items()},
        group_options={g: v if g in keep else redact(v) for g, v in template.group_options.items()},
    )


def sampled_values(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The user-facing sampled values of a trial (Tune's bookkeeping keys removed)."""
    flat: Dict[str, Any] = {}
    for key, value in params.items():
        if key == "_point":  # a grid point over conditional dimensions
            flat.update(value)
        elif key != TRIAL_INDEX_KEY and not key.endswith("#index"):
            flat[key] = value
    return flat


def trained_with(params: Mapping[str, Any]) -> Dict[str, Any]:
    """``hparam/<key>`` entries for a result: the sampled values a trial process trains with.

    The trainable reports them with every result, so the driver knows which values produced
    each result even when a scheduler (PBT) changed the trial's config in between.
    Values that are not scalars (a list of layer sizes) are reported as JSON text.
    """
    return {
        HPARAM_PREFIX + k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
        for k, v in sampled_values(params).items()
    }


def get_dotted(config: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """``config["a"]["b"]`` for ``key="a.b"``; raises KeyError without a default."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def set_dotted(config: Dict[str, Any], key: str, value: Any) -> bool:
    """Sets ``key`` if its parent mapping exists; returns False (unchanged) otherwise."""
    *parents, leaf = key.split(".")
    node: Any = config
    for part in parents:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return False
        node = node[part]
    node[leaf] = value
    return True


def resolve_trial_config(template: TrialTemplate, params: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """Applies one trial's sampled values to the base config.

    Group keys (``algo``, ``env``, ``reward``, ...) swap in the composed option first, then
    dotted keys are set. A key whose parent does not exist in this trial's config (a
    reward weight on a trial without that reward design) does not apply to this trial.

    Returns:
        ``(config, skipped_keys)``: the complete config the trial runs, which contains its
        ``seed`` and reruns exactly, and the sampled keys that did not apply.
    """
    values = sampled_values(params)
    config = copy.deepcopy(template.base)
    for group in GROUP_NAMES:
        if group in values:
            option = str(values[group])
            try:
                config[group] = copy.deepcopy(template.group_options[group][option])
            except KeyError:
                raise ConfigError(
                    f"trial asks for {group}={option!r}, which the sweep did not compose; "
                    f"composed: {sorted(template.group_options.get(group, {}))}."
                ) from None
    algo = config["algo"]
    if config.get("smoke") and algo.get("smoke_params"):
        algo["params"] = {**algo["params"], **algo["smoke_params"]}
    skipped = [
        key
        for key, value in values.items()
        if key not in GROUP_NAMES and key != SEED_KEY and not set_dotted(config, key, value)
    ]
    config[SEED_KEY] = trial_seed(params, int(config["search"]["seed"]))
    return config, skipped


def unknown_keys(template: TrialTemplate, keys: List[str]) -> List[str]:
    """Keys that apply to no trial at all (typos): not settable in any group option."""
    unknown = []
    for key in keys:
        if key in GROUP_NAMES or key == SEED_KEY:
            continue
        group = key.partition(".")[0]
        candidates = [template.base]
        for option in template.group_options.get(group, {}).values():
            candidates.append({group: option})
        if not any(_settable(c, key) for c in candidates):
            unknown.append(key)
    return unknown


def _settable(config: Mapping[str, Any], key: str) -> bool:
    parent = key.rpartition(".")[0]
    if not parent:
        return key in config
    node = get_dotted(config, parent, None)
    if not isinstance(node, Mapping):
        return False
    # Open mappings (RLlib params, env_config, ...) accept new leaves; typed ones must
    # already hold the key.
    return key.rpartition(".")[2] in node or parent.split(".")[-1] in _OPEN_MAPPINGS


_OPEN_MAPPINGS = {"params", "model", "env_config", "smoke_params", "source", "feature", "tags"}


def describe(values: Mapping[str, Any]) -> str:
    """A short ``key=value`` summary of sampled values (run names, report labels)."""
    return ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in values.items())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def on_seeds(config: Mapping[str, Any], seeds: Sequence[int]) -> Dict[str, Any]:
    """A copy of one configuration's config as a sweep of it alone on consecutive ``seeds``
    (a rerun on fresh seeds, a study's test stage): no search space, a grid of the seeds."""
    out = copy.deepcopy(dict(config))
    out.pop(SEED_KEY, None)
    out["search"].update(
        {"space": {}, "when": {}, "algorithm": "grid", "num_samples": 1, "num_seeds": len(seeds), "seed": seeds[0]}
    )
    return out
