"""Composing configs outside ``@hydra.main`` (tests, reruns) and turning them into plain dicts."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from qeu_tune.config.errors import ConfigError
from qeu_tune.config.groups import GROUP_NAMES
from qeu_tune.config.schema import register_schemas
from qeu_tune.paths import CONF_DIR, qeu_home


def register_resolvers() -> None:
    """``${qeu_home:}`` in YAML: the absolute QEU_TUNE_HOME directory."""
    OmegaConf.register_new_resolver("qeu_home", lambda: str(qeu_home()), replace=True)


def setup_hydra() -> None:
    """Everything Hydra needs before composing: schemas and resolvers."""
    register_schemas()
    register_resolvers()


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

    setup_hydra()
    if GlobalHydra.instance().is_initialized():
        return hydra.compose(config_name="config", overrides=list(overrides))
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra.compose(config_name="config", overrides=list(overrides))


def to_plain(cfg: DictConfig) -> Dict[str, Any]:
    """The resolved config as plain Python containers (what workers and MLflow see)."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    container.pop("hydra", None)
    return container


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
    """The option names of a config group (the YAML files in ``conf/<group>/``)."""
    if group not in GROUP_NAMES and group not in ("experiment", "debug"):
        raise ConfigError(f"{group!r} is not a config group; groups: {', '.join(GROUP_NAMES)}.")
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].strip().lstrip("~")


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
