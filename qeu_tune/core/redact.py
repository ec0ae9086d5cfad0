"""Keep secrets out of what the driver records or prints: replace them with ``***``.

What counts as a secret:

- the password in a URI's user info (``http://user:pw@host``, ``postgresql://u:pw@host/db``)
  and values of secret-looking query parameters (``?password=...``, ``?token=...``);
- the value of every environment variable whose name matches ``TOKEN``, ``SECRET``,
  ``PASSWORD``, ``PASSWD``, ``KEY`` or ``CREDENTIAL`` (case-insensitive);
- every value interpolated from the environment (``${oc.env:NAME}``) in the config, on the
  command line or in a YAML file (``find_env_interpolations`` reads the *unresolved* config);
- whatever else was given to ``register_secrets``.

Everything recorded goes through here: MLflow params, tags and artifacts, the console and log
files, Hydra's run directory, Tune's experiment directory (the sweep state, the pickled
callback and trial template) and the tracking journal; ``qeu_tune.core.secrets`` decides the
recorded form and gets the secrets back for ``resume``. Only the live driver holds the real
values, and a trial's process those of the sections it builds its algorithm and environment
from (``algo``, ``env``, ``reward``: an env may need a token).

Example:
    >>> redact_uri("http://alice:s3cret@mlflow.example:5000/")
    'http://alice:***@mlflow.example:5000/'
    >>> redact_text("token=abc123 in a line", {"abc123"})
    'token=*** in a line'
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any, Dict, Iterable, Mapping, Optional, Set
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
# Shorter values (flags such as "1", "true", "none") would mask ordinary text everywhere.
MIN_SECRET_LEN = 6
# scheme://user:password@host -> scheme://user:***@host (also inside longer text)
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?P<pw>[^\s@/'\"]+)(?P<at>@)")
# ?token=... / &password=... inside a URI or a command line
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_\-]*(?:token|secret|password|passwd|key|credential)[A-Za-z0-9_\-]*)=)(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)
ENV_INTERPOLATION = re.compile(r"\$\{oc\.env:\s*([^,}\s]+)\s*(?:,([^}]*))?\}")

_lock = threading.Lock()
_registered: Set[str] = set()


def redact_uri(uri: Optional[str]) -> Optional[str]:
    """A URI with its password and secret query values replaced by ``***``.

    Example:
        >>> redact_uri("postgresql+psycopg://mlflow:pw123@db:5432/mlflow?sslmode=require")
        'postgresql+psycopg://mlflow:***@db:5432/mlflow?sslmode=require'
        >>> redact_uri("sqlite:////home/me/mlflow.db")
        'sqlite:////home/me/mlflow.db'
    """
    if not uri or "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri, ())
    out = uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo and not is_interpolation(userinfo.split(":", 1)[1]):
            out = out.replace(netloc, userinfo.split(":", 1)[0] + ":" + MASK + "@" + host, 1)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_NAME.search(k) for k, _ in pairs):
            masked = urlencode([(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
            out = out.replace("?" + query, "?" + masked, 1)
    return out


def uri_secrets(uri: Optional[str]) -> Set[str]:
    """The secret parts of a URI: its password and secret query values."""
    found: Set[str] = set()
    if not uri or "://" not in str(uri):
        return found
    try:
        parts = urlsplit(str(uri))
    except ValueError:
        return found
    if parts.password and not is_interpolation(parts.password):  # ${oc.env:NAME} names it, holds nothing
        found.add(parts.password)
        found.add(_unquote(parts.password))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(key) and value:
            found.add(value)
    return {s for s in found if s}


def is_interpolation(text: str) -> bool:
    """Whether ``text`` is a single ``${...}`` interpolation: a name for a value, not the value."""
    return text.startswith("${") and text.endswith("}") and text.count("${") == 1


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def secrets_from_environment(environ: Optional[Mapping[str, str]] = None) -> Set[str]:
    """Values of environment variables whose names look secret, plus passwords in env URIs.

    Example:
        >>> sorted(secrets_from_environment({"HF_TOKEN": "hf_abcdef", "HOME": "/root"}))
        ['hf_abcdef']
    """
    found: Set[str] = set()
    for name, value in _snapshot(os.environ if environ is None else environ).items():
        if not value:
            continue
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LEN:
            found.add(value)
        if "://" in value:  # e.g. MLFLOW_TRACKING_URI=http://user:pw@host
            found |= uri_secrets(value)
    return found


def _snapshot(environ: Mapping[str, str]) -> Dict[str, str]:
    """A copy of ``environ``; a variable another thread removes meanwhile (the tracker's
    writer sets and restores MLflow's HTTP settings) only means another try."""
    for _ in range(10):
        try:
            return dict(environ)
        except KeyError:
            continue
    return {}


def find_env_interpolations(raw_cfg: Any, environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Config values that come from ``${oc.env:...}``, by dotted path, resolved.

    Args:
        raw_cfg: The *unresolved* config (an OmegaConf ``DictConfig`` as Hydra composes it;
            a plain mapping of strings works too).
        environ: The environment (default ``os.environ``).

    Returns:
        ``{dotted.path: value}``, where value is the environment variable's value (or the
        whole resolved node when it mixes text and interpolations).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    environ = os.environ if environ is None else environ
    if isinstance(raw_cfg, (DictConfig, ListConfig)):
        raw = OmegaConf.to_container(raw_cfg, resolve=False)
    else:
        raw = raw_cfg
    found: Dict[str, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if path == "" and key == "hydra":
                    continue  # Hydra's own node: nothing of the user's, and not resolvable here
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}" if path else str(i))
        elif isinstance(node, str) and "oc.env" in node:
            values = []
            for name, default in ENV_INTERPOLATION.findall(node):
                value = environ.get(name)
                if value is None and default:
                    value = default.strip().strip("'\"")
                if value:
                    values.append(value)
            resolved = None
            if isinstance(raw_cfg, (DictConfig, ListConfig)):
                try:
                    resolved = OmegaConf.select(raw_cfg, path, throw_on_missing=False)
                except Exception:  # noqa: BLE001 - an unset variable: nothing to hide
                    resolved = None
            if resolved is not None and not isinstance(resolved, (DictConfig, ListConfig)):
                text = str(resolved)
                if text and not any(value in text for value in values):
                    values.append(text)  # could not tell which part came from the environment
            for i, value in enumerate(values):  # several: path, path#1, path#2, ...
                found[path if i == 0 else f"{path}#{i}"] = value

    walk(raw, "")
    return found


def register_secrets(values: Iterable[Any]) -> None:
    """Adds values that must be masked in everything this process records or prints."""
    with _lock:
        for value in values:
            if value is None:
                continue
            text = str(value)
            if len(text) >= 3:  # shorter would mask ordinary text; such a secret is no secret
                _registered.add(text)


def register_config(config: Mapping[str, Any], *uris: Optional[str]) -> None:
    """Registers the secrets in a resolved config: passwords of every URI it holds."""
    found: Set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif isinstance(node, str) and "://" in node:
            found.update(uri_secrets(node))

    walk(config)
    for uri in uris:
        found |= uri_secrets(uri)
    register_secrets(found)


def registered_secrets() -> Set[str]:
    with _lock:
        return set(_registered)


def clear_registered() -> None:
    """Forgets registered secrets (tests)."""
    with _lock:
        _registered.clear()


def known_secrets() -> Set[str]:
    """Everything masked right now: registered values and secret environment variables."""
    return registered_secrets() | secrets_from_environment()


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, URI password and secret query value replaced by ``***``."""
    if not text:
        return text
    out = _URI_PASSWORD.sub(
        lambda m: m.group(0) if is_interpolation(m.group("pw")) else f"{m.group('head')}{MASK}{m.group('at')}", text
    )
    out = _QUERY_SECRET.sub(lambda m: f"{m.group('key')}{MASK}", out)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def redact_data(data: Any, secrets: Iterable[str]) -> Any:
    """A copy of nested dicts/lists/strings with secrets masked in keys and string values."""
    secrets = set(secrets)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return redact_text(node, secrets)
        if isinstance(node, Mapping):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, tuple):
            return tuple(walk(v) for v in node)
        return node

    return walk(data)


def redact(data: Any) -> Any:
    """The hook for everything the driver records or prints: masks every known secret.

    Works on a string or nested dicts/lists (params, tags, configs before YAML dumping).
    """
    return redact_data(data, known_secrets())


class RedactingFilter(logging.Filter):
    """A logging filter that masks known secrets in each record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = RedactingFilter()


def protect_console(tracking_uri: Optional[str] = None) -> None:
    """Masks secrets in log output and stops MLflow printing run URLs with credentials.

    MLflow prints "View run ... at: <tracking URI>/#/..." when a run on a tracking server
    ends; with ``http://user:pw@host`` that line would carry the password.
    """
    if tracking_uri and uri_secrets(tracking_uri):
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    for name in ("", "ray", "ray.tune", "mlflow", "qeu_tune", "hydra"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    # Logs a multirun's overrides right after it installs its own handlers, before any job.
    launcher = logging.getLogger("hydra._internal.core_plugins.basic_launcher")
    if _FILTER not in launcher.filters:
        launcher.addFilter(_FILTER)
