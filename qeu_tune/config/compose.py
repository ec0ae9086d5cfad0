"""Composing configs outside ``@hydra.main`` (tests, reruns) and turning them into plain dicts.

The shipped configs (``qeu_tune.core.paths.CONF_DIR``) are Hydra's primary config directory;
the user's own config directory (``qeu_tune.core.paths.user_config_dir``: ``--config-dir``,
``$QEU_TUNE_CONFIG_DIR`` or ``./conf``) comes before it on Hydra's search path
(``UserConfigSearchPath``), so its ``experiment/``, ``reward/``, ``env/``, ... files become
options of the shipped groups, and a file with the same name as a shipped one
(``algo/ppo.yaml``, ``experiment/default.yaml``) wins over it, as on any Hydra search path.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf

from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.config.schema import register_schemas
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import CONF_DIR, qeu_home, user_config_dir
from qeu_tune.reward.config import normalize_metric

USER_CONFIG_PROVIDER = "qeu-tune user config"  # its entry on Hydra's search path (`qeu-tune --info searchpath`)


class UserConfigSearchPath(SearchPathPlugin):
    """Puts the user config directory right before the shipped configs on Hydra's search path.

    Hydra takes each config file from the first search-path entry that has it. Entries from
    ``hydra.searchpath`` or Hydra's own ``--config-dir`` come *after* the primary config
    directory, so a user's file could only add options, never replace a shipped one.

    Registered by ``setup_hydra`` rather than discovered (Hydra finds ``hydra_plugins``
    packages only in regular installs, not editable ones); Hydra runs it whenever it builds
    a search path (``@hydra.main``, ``compose``), so the directory is looked up then.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        directory = user_config_dir()
        if directory is not None:
            search_path.prepend(USER_CONFIG_PROVIDER, f"file://{directory}", anchor=SearchPathQuery(provider="main"))


def register_resolvers() -> None:
    """``${qeu_home:}`` in YAML: the absolute QEU_TUNE_HOME directory."""
    OmegaConf.register_new_resolver("qeu_home", lambda: str(qeu_home()), replace=True)


def setup_hydra() -> None:
    """Everything Hydra needs before composing: schemas, resolvers, the user config directory."""
    register_schemas()
    register_resolvers()
    Plugins.instance().register(UserConfigSearchPath)  # idempotent


def _quote(text: str) -> str:
    """A string as a quoted value of Hydra's override grammar."""
    if "'" not in text:
        return f"'{text}'"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Keys under these prefixes are open-ended mappings: an override there adds the key if
# the design does not have it (Hydra's ``++``), so metrics and their know-how sources can
# be added, replaced or switched to another type with plain overrides, and a study's
# designs added (``study.designs.aa_control='[reward=none]'``). Validation of
# what ends up there is ``qeu_tune.reward.config.parse_reward_config``'s (unknown keys are
# reported with the valid ones, before Ray starts).
OPEN_PREFIXES = ("reward.metrics.", "study.designs.")


def open_overrides(overrides: Sequence[str]) -> List[str]:
    """``reward.metrics.X.source.path=d.csv`` -> ``++reward.metrics.X.source.path=d.csv``.

    Example:
        >>> open_overrides(["reward.metrics.m.weight=0.1", "algo=dqn", "+reward.metrics.n={}"])
        ['++reward.metrics.m.weight=0.1', 'algo=dqn', '+reward.metrics.n={}']
    """
    return [f"++{o}" if o.startswith(OPEN_PREFIXES) and "=" in o else o for o in overrides]


_COMPOSE_LOCK = threading.RLock()


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Composes ``conf/config.yaml`` with Hydra overrides, as ``qeu-tune`` would.

    Works both inside a running ``@hydra.main`` app and standalone.

    Example:
        >>> cfg = compose(["algo=dqn", "env=mountaincar"])
        >>> cfg.algo.name
        'dqn'
    """
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    overrides = open_overrides(overrides)
    with _COMPOSE_LOCK:  # Hydra's state is process-global: two threads composing would collide
        setup_hydra()
        if GlobalHydra.instance().is_initialized():
            return hydra.compose(config_name="config", overrides=overrides)
        with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra.compose(config_name="config", overrides=overrides)


def to_plain(cfg: DictConfig) -> Dict[str, Any]:
    """The resolved config as plain Python containers (what workers and MLflow see).

    Reward metrics are normalised (``normalize_reward``): know-how sources and feature
    maps keep only their type's fields, and an existing relative know-how file becomes
    an absolute path (Ray workers run in other directories).
    """
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    container.pop("hydra", None)
    if isinstance(container.get("reward"), dict):
        container["reward"] = normalize_reward(container["reward"])
    return container


def normalize_reward(reward: Dict[str, Any]) -> Dict[str, Any]:
    """A plain reward design with every metric's source/feature spec normalised."""

    metrics = reward.get("metrics")
    if not isinstance(metrics, dict):
        return reward
    out = dict(reward)
    out["metrics"] = {}
    for name, metric in metrics.items():
        metric = normalize_metric(metric, defaults=True) if isinstance(metric, Mapping) else metric
        source = metric.get("source") if isinstance(metric, Mapping) else None
        if isinstance(source, Mapping) and source.get("type") == "file" and isinstance(source.get("path"), str):
            metric["source"] = {**source, "path": resolve_data_path(source["path"])}
        out["metrics"][name] = metric
    return out


def resolve_data_path(path: str) -> str:
    """A relative data file path made absolute: against the current directory, else the
    user config directory; unchanged when it exists in neither (the error shows it as given)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    for base in (Path.cwd(), user_config_dir()):
        if base is not None and (base / p).is_file():
            return str((base / p).resolve())
    return path


def compose_group_options(
    overrides: Sequence[str], choices: Mapping[str, Iterable[str]]
) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Composes each listed option of each config group, with the user's other overrides.

    A search over ``algo: choice(ppo, dqn)`` needs the full ``algo`` subtree of each
    option; composing it with the same overrides keeps experiment-level settings.

    Returns:
        ``{group: {option: plain subtree}}``.
    """
    options: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for group, names in choices.items():
        kept: List[str] = [o for o in overrides if _override_key(o) not in (group, f"+{group}")]
        for name in names:
            try:
                cfg = compose([*kept, f"{group}={name}"])
            except Exception as err:  # noqa: BLE001 - Hydra raises several types here
                if str(name) not in group_options(group):
                    raise ConfigError(
                        f"search space: {group}={name!r} is not a {group} option; valid "
                        f"choices: {', '.join(group_options(group))}."
                    ) from None
                raise ConfigError(
                    f"search space: composing {group}={name} with the other overrides failed: "
                    f"{_first_line(err)} Overrides that only fit one {group} option cannot be "
                    f"combined with a search over {group}; put them under search.when "
                    f"('{group}=<option>': {{key: value}})."
                ) from None
            options.setdefault(group, {})[str(name)] = to_plain(cfg)[group]
    return options


def group_options(group: str) -> List[str]:
    """The option names of a config group: the YAML files in the shipped ``conf/<group>/``
    and in the user config directory's ``<group>/``."""
    if group not in GROUP_NAMES and group not in ("experiment", "debug"):
        raise ConfigError(f"{group!r} is not a config group; groups: {', '.join(GROUP_NAMES)}.")
    dirs = [CONF_DIR, user_config_dir()]
    return sorted({p.stem for d in dirs if d is not None for p in (d / group).glob("*.yaml")})


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].strip().lstrip("~")


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def hydra_message(err: BaseException) -> str:
    """Hydra's explanation (and OmegaConf's cause) as one paragraph."""

    def lines_of(part: BaseException) -> List[str]:
        out = []
        for line in str(part).splitlines():
            text = line.strip()
            if text.startswith("Config search path:"):
                break  # Hydra's search-path dump: noise for a typo
            if text and not text.startswith(("provider=", "reference_type=", "object_type=")):
                out.append(text)
        return out

    lines = lines_of(err)
    heads = [i for i, line in enumerate(lines) if line.startswith("Available options in")]
    if heads:  # one option per line -> a list; the base_<group> schemas are not options
        i = heads[0]
        options = [o for o in lines[i + 1 :] if not o.startswith("base_")]
        lines = lines[:i] + [f"{lines[i]} {', '.join(options)}."]
    if err.__cause__ is not None:
        lines += lines_of(err.__cause__)
    lines = [line if line.endswith((".", ":", "!", "?")) else line + "." for line in lines]
    text = " ".join(lines)
    text = re.sub(r"\s*full_key: (\S+?)\.?$", r" (key \1)", text)
    text = re.sub(r"\s*full_key: (\S+?)\.? ", r" (key \1) ", text)
    text = re.sub(r"See (https://hydra\.cc/\S+) for details\.", r"(Syntax: \1)", text)
    if "To append to your config use" in text:
        text += " The composed config's keys: `qeu-tune --cfg job`."
    return text
