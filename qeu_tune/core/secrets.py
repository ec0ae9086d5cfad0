"""What qeu-tune records in place of a secret, and how ``resume`` gets the secret back.

Everything recorded (Tune's experiment directory, Hydra's run directory, MLflow, the
journal) holds the redacted form of a config (``qeu_tune.core.redact``); the live process
keeps the real values in memory only. Two forms are recorded:

- a value taken from the environment alone (``tags.owner: ${oc.env:TEAM_TOKEN}``, or
  ``tracking.uri: postgresql://u:${oc.env:PGPASS}@db/mlflow``) as that interpolation, so
  ``resume`` reads it from the environment again (``restore_env_forms``);
- anything else secret (a password typed into a URI, the value of a secret environment
  variable) as ``***``: ``resume`` needs the tracking URI given again with its password
  (``tracking_uri_for_resume``).

Example:
    >>> recorded_uri("http://alice:pw123@mlflow.example:5000")
    'http://alice:***@mlflow.example:5000'
"""

from __future__ import annotations

import copy
import os
import re
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

from qeu_tune.core.errors import ConfigError
from qeu_tune.core.redact import ENV_INTERPOLATION, MASK, redact, redact_uri, register_secrets, uri_secrets

TRACKING_URI_PATH = "tracking.uri"
GIVE_URI = "--tracking-uri URI, tracking.uri=URI after the sweep, or MLFLOW_TRACKING_URI"

_lock = threading.Lock()
_env_forms: Dict[str, Tuple[str, str]] = {}  # dotted path -> (${oc.env:...} text, value it resolved to)


def register_env_forms(raw_cfg: Any) -> Dict[str, str]:
    """Remembers the config values taken from the environment alone, with their interpolation.

    Args:
        raw_cfg: The *unresolved* config, as Hydra composed it (a ``DictConfig``).

    Returns:
        ``{dotted.path: "${oc.env:NAME}"-text}`` of the values registered.
    """
    from omegaconf import OmegaConf

    found: Dict[str, Tuple[str, str]] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if path or key != "hydra":  # Hydra's own node is none of the user's
                    walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")
        elif isinstance(node, str) and node.count("${") == len(ENV_INTERPOLATION.findall(node)) > 0:
            try:
                value = OmegaConf.select(raw_cfg, path, throw_on_missing=False)
            except Exception:  # noqa: BLE001 - an unset variable: nothing to remember
                return
            if isinstance(value, (str, int, float)):
                found[path] = (node, str(value))

    walk(OmegaConf.to_container(raw_cfg, resolve=False), "")
    with _lock:
        _env_forms.update(found)
    return {path: raw for path, (raw, _) in found.items()}


def clear_env_forms() -> None:
    """Forgets registered forms (tests)."""
    with _lock:
        _env_forms.clear()


def recorded_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The form of a resolved config that may be written anywhere: env forms back, secrets ``***``."""
    data = copy.deepcopy(dict(config))
    with _lock:
        forms = dict(_env_forms)
    for path, (raw, value) in forms.items():
        parent, key = _parent(data, path)
        if parent is not None and str(parent[key]) == value:
            parent[key] = raw
    return redact(data)


def recorded_uri(uri: Optional[str]) -> Optional[str]:
    """The tracking URI as recorded and printed: its ``${oc.env:...}`` form, else redacted."""
    with _lock:
        raw, value = _env_forms.get(TRACKING_URI_PATH, (None, None))
    return raw if uri is not None and uri == value else redact_uri(uri)


def restore_env_forms(config: Mapping[str, Any], what: str) -> Dict[str, Any]:
    """A recorded config with every ``${oc.env:NAME}`` read from this process's environment.

    The values read are registered as secrets (masked wherever recorded or printed) and as
    env forms (recorded again as the interpolation).

    Raises:
        ConfigError: A variable without a default is not set here (the message names it).
    """
    data = copy.deepcopy(dict(config))
    restored: Dict[str, Tuple[str, str]] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if isinstance(node, str) and ENV_INTERPOLATION.search(node):
            value = resolve_env(node, f"{what} takes {path} from")
            restored[path] = (node, value)
            return value
        return node

    data = walk(data, "")
    register_secrets(value for _, value in restored.values())
    with _lock:
        _env_forms.update(restored)
    return data


def resolve_env(text: str, source: str) -> str:
    """``text`` with each ``${oc.env:NAME[,default]}`` replaced by the variable's value.

    Raises:
        ConfigError: ``{source} the environment variable NAME, which is not set here; ...``.
    """

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default.strip().strip("'\"")
        raise ConfigError(f"{source} the environment variable {name}, which is not set here; set it and run again.")

    return ENV_INTERPOLATION.sub(value, text)


def given_tracking_uri(uri: str) -> str:
    """A tracking URI given to ``resume``, with its ``${oc.env:NAME}`` read from the environment.

    Raises:
        ConfigError: The URI carries the mask that qeu-tune prints in place of a password
            (copied from a printed hint), or names an environment variable that is not set.
    """
    if any(MASK in secret for secret in uri_secrets(uri)):
        raise ConfigError(
            f"the tracking URI {uri} holds {MASK}, which qeu-tune prints in place of its password; "
            f"give the URI with the real password ({GIVE_URI}), or name an environment variable that "
            "holds it (tracking.uri='scheme://user:${oc.env:NAME}@host...')."
        )
    resolved = resolve_env(uri, "the tracking URI given names")
    register_secrets(uri_secrets(resolved))
    return resolved


def tracking_uri_for_resume(given: str, recorded: Optional[str], what: str) -> str:
    """The tracking URI to continue a recorded sweep or study with.

    Args:
        given: The URI the user gave (``given_tracking_uri``); it found the sweep's run.
        recorded: ``tracking.uri`` as recorded with the sweep (redacted, an env form or None).
        what: Names the sweep or study in messages.

    Returns:
        ``given`` if it carries a password or none was recorded; else ``recorded`` with the
        environment variable it names read from the environment.

    Raises:
        ConfigError: The recorded URI had a password that is neither given again nor named
            by an environment variable that is set.
    """
    if not recorded or uri_secrets(given) or not (MASK in recorded or ENV_INTERPOLATION.search(recorded)):
        return given
    if ENV_INTERPOLATION.search(recorded):
        uri = resolve_env(recorded, f"{what} was recorded with tracking URI {recorded}, which names")
        register_secrets(uri_secrets(uri))
        with _lock:  # printed hints show the form again, not ***
            _env_forms[TRACKING_URI_PATH] = (recorded, uri)
        return uri
    raise ConfigError(
        f"{what} was recorded with a password in its tracking URI ({recorded}), which qeu-tune does not "
        f"store; give the URI with its password again ({GIVE_URI})."
    )


def _parent(data: Any, path: str) -> Tuple[Any, Any]:
    """The container holding the value at a dotted path, and its key (``None, None`` if absent)."""
    node, parts = data, path.split(".")
    for part in parts[:-1]:
        node = _child(node, part)
        if node is None:
            return None, None
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node, last
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node, int(last)
    return None, None


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None
