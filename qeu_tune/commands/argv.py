"""The ``qeu-tune`` command line before Hydra sees it.

``prepare_argv`` turns what users type into what ``@hydra.main`` composes:

* ``--config-dir DIR`` (also ``--config-dir=DIR``, ``-cd DIR``) names the user's own
  config directory; it becomes ``$QEU_TUNE_CONFIG_DIR`` for this process, so every
  composition (``qeu_tune.config.compose``) and ``qeu-tune best`` use it.
* Without ``-m``, an override in Hydra's sweep grammar (``algo.params.lr=interval(1e-4,
  1e-2)``, ``reward.metrics.route.weight=choice(0,0.3,1)``, ``algo=ppo,dqn``) becomes a
  dimension of the one Tune sweep: it is removed from the overrides and merged into
  ``search.space`` (``++search.space={key: 'expression'}``). Hydra's own parser decides
  what is a sweep (``Override.is_sweep_override``). A sweep that can take only one value
  (``choice(0.001)``, ``range(1,2)``, ``interval(2,2)``) is that fixed value, a plain override,
  not a dimension. With ``-m`` (Hydra's multirun) such overrides keep Hydra's meaning: one
  sweep per job.
* A value the command line fixes wins over a dimension of the same key in the experiment's
  ``search.space`` (``fix_dimensions``, applied to the composed config).
* Overrides under ``reward.metrics.`` may add keys (``compose.open_overrides``).
* The user config directory comes first on Hydra's search path (``compose.UserConfigSearchPath``).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from qeu_tune.config.compose import compose, hydra_message
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import CONFIG_DIR_ENV_VAR

CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
# Hydra flags that take a value (the value is not an override).
_VALUE_FLAGS = {
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-c",
    "--cfg",
    "-p",
    "--package",
    "--experimental-rerun",
    "-sc",
    "--shell-completion",
    "--info",
    "-i",
}


@dataclass
class PreparedArgs:
    """What ``prepare_argv`` made of a command line."""

    argv: List[str]  # for hydra.main / the subcommand parser
    config_dir: Optional[Path] = None
    search_space: Dict[str, str] = field(default_factory=dict)  # from sweep overrides


def extract_config_dir(argv: Sequence[str]) -> Tuple[List[str], Optional[Path]]:
    """Removes ``--config-dir DIR`` / ``--config-dir=DIR`` / ``-cd DIR`` from ``argv``.

    Raises:
        ConfigError: The flag has no value, or the directory does not exist.
    """
    out: List[str] = []
    directory: Optional[str] = None
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        name, eq, value = arg.partition("=")
        if name in CONFIG_DIR_FLAGS:
            if not eq:
                if i + 1 >= len(items) or items[i + 1].startswith("-"):
                    raise ConfigError(f"{name} needs a directory, e.g. {name} ./my_conf.")
                value = items[i + 1]
                i += 1
            directory = value
        else:
            out.append(arg)
        i += 1
    if directory is None:
        return out, None
    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(
            f"--config-dir {directory}: no such directory. A user config directory holds "
            "group folders such as experiment/, reward/, env/ with your YAML files."
        )
    return out, path


def use_config_dir(argv: Sequence[str]) -> List[str]:
    """``argv`` without ``--config-dir DIR``; sets ``$QEU_TUNE_CONFIG_DIR`` to DIR if given."""
    rest, config_dir = extract_config_dir(argv)
    if config_dir is not None:
        os.environ[CONFIG_DIR_ENV_VAR] = str(config_dir)
    return rest


def _override_positions(argv: Sequence[str]) -> List[int]:
    """Indices of the Hydra overrides in ``argv`` (not flags, not flag values)."""
    positions = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            if arg in _VALUE_FLAGS:
                skip = True
            continue
        positions.append(i)
    return positions


def _is_multirun(argv: Sequence[str], overrides: Sequence[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in argv) or any(
        o.replace(" ", "") == "hydra.mode=MULTIRUN" for o in overrides
    )


def sweep_dimensions(overrides: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """Splits overrides into plain ones and sweep ones (key -> expression text).

    Hydra's override parser decides: ``choice(...)``, ``range(...)``, ``interval(...)``,
    ``tag(...)`` and comma lists are sweeps. Keys under ``hydra.`` are left to Hydra. A sweep
    with a single value is that value as a plain override (``fixed_value``).

    Example:
        >>> sweep_dimensions(["algo=choice(ppo,dqn)", "stop.env_steps=500", "a.b=interval(0,1)", "c=choice(3)"])
        (['stop.env_steps=500', 'c=3'], {'algo': 'choice(ppo,dqn)', 'a.b': 'interval(0,1)'})
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    plain: List[str] = []
    dims: Dict[str, str] = {}
    for text in overrides:
        try:
            (parsed,) = parser.parse_overrides([text])
        except HydraException:
            plain.append(text)  # Hydra reports the syntax error itself
            continue
        key = parsed.key_or_group
        if parsed.is_sweep_override() and not key.startswith("hydra.") and "@" not in key:
            value = fixed_value(parsed)
            if value is None:
                dims[key] = text.split("=", 1)[1].strip()
            else:  # one value: no dimension (a searcher would sample it, a grid list it, for nothing)
                plain.append(f"{text.split('=', 1)[0]}={value}")
        else:
            plain.append(text)
    return plain, dims


def fixed_value(parsed: Any) -> Optional[str]:
    """The override value text of a sweep that can take one value only, else None.

    ``choice(x)`` and ``range`` of one element give that element, ``interval(a, a)`` (also
    within ``int(...)`` or ``tag(...)``) gives ``a``. The text is checked by parsing it back:
    a string the grammar would read differently is quoted.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, Override
    from hydra.errors import HydraException

    from qeu_tune.config.compose import _quote

    try:
        if parsed.is_discrete_sweep():
            values = list(itertools.islice(parsed.sweep_iterator(), 2))
        else:
            sweep = parsed.value()
            values = [sweep.start] if isinstance(sweep, IntervalSweep) and sweep.start == sweep.end else []
    except HydraException:  # glob(...): options known only to Hydra's config loader
        return None
    if len(values) != 1:
        return None
    value = values[0]
    text = Override._get_value_element_as_str(value)
    try:
        (back,) = OverridesParser.create().parse_overrides([f"k={text}"])
        if back.value() == value and not back.is_sweep_override():
            return text
    except HydraException:
        pass
    return _quote(value) if isinstance(value, str) else None


def fix_dimensions(config: Dict[str, Any], overrides: Sequence[str]) -> List[str]:
    """Removes from ``config["search"]["space"]`` every key an override sets to one value.

    ``qeu-tune algo.params.lr=0.001`` (or ``choice(0.001)``) with an experiment that searches
    ``algo.params.lr`` means that learning rate, not a sampled one. Only exact keys count
    (``reward=x`` leaves a ``reward.metrics.route.weight`` dimension alone).

    Args:
        config: The composed plain config (changed in place).
        overrides: The overrides it was composed with (Hydra's ``overrides.task``).

    Returns:
        The removed keys.
    """
    space = (config.get("search") or {}).get("space")
    if not isinstance(space, dict):
        return []
    removed = []
    for text in overrides:
        key = text.split("=", 1)[0].strip().lstrip("+")
        if "=" in text and not text.startswith("~") and key in space:
            del space[key]
            removed.append(key)
    return removed


def space_override(dims: Dict[str, str]) -> str:
    """``++search.space={key: 'expression', ...}`` in Hydra's dict syntax."""
    from qeu_tune.config.compose import _quote

    body = ",".join(f"{key}:{_quote(expr)}" for key, expr in dims.items())
    return f"++search.space={{{body}}}"


def prepare_argv(argv: Sequence[str]) -> PreparedArgs:
    """The command line as ``hydra.main`` should see it (see the module docstring).

    Sets ``$QEU_TUNE_CONFIG_DIR`` when ``--config-dir`` is given.
    """
    from qeu_tune.config.compose import open_overrides

    rest, config_dir = extract_config_dir(argv)
    if config_dir is not None:
        os.environ[CONFIG_DIR_ENV_VAR] = str(config_dir)
    positions = _override_positions(rest)
    overrides = [rest[i] for i in positions]
    flags = [a for i, a in enumerate(rest) if i not in set(positions)]
    dims: Dict[str, str] = {}
    if not _is_multirun(flags, overrides):
        overrides, dims = sweep_dimensions(overrides)
        if dims:
            overrides.append(space_override(dims))
    overrides = open_overrides(overrides)
    return PreparedArgs(argv=[*flags, *overrides], config_dir=config_dir, search_space=dims)


def check_hydra_overrides(argv: Sequence[str]) -> None:
    """Composes the command line's overrides as ``@hydra.main`` will, and reports errors.

    Runs before ``hydra.main`` so an unknown option (``algo=foo``), a wrong type
    (``stop.env_steps=abc``) or an unknown key (``algo.params.nonsense=3``) gives exit
    code 2 and Hydra's explanation in one paragraph, without a traceback or the
    ``HYDRA_FULL_ERROR`` hint. With ``-m`` every job of the multirun is composed. Only
    Hydra's and OmegaConf's own exceptions are reported; anything else (or a command line
    this check does not understand) is left to ``hydra.main``, which reports it as before.

    Args:
        argv: The arguments after the program name.

    Raises:
        ConfigError: Hydra could not compose a job's config.
    """
    skip_flags = {
        "-h",
        "--help",
        "--hydra-help",
        "--version",
        "-i",
        "--info",
        "-sc",
        "--shell-completion",
        "-cp",
        "--config-path",
        "-cn",
        "--config-name",
        "-cd",
        "--config-dir",
        "--experimental-rerun",
    }
    if any(arg.split("=", 1)[0] in skip_flags for arg in argv):
        return
    try:
        from hydra._internal.utils import get_args_parser  # what hydra.main parses with

        args = get_args_parser().parse_args(list(argv))
    except (Exception, SystemExit):  # noqa: BLE001 - hydra.main reports bad flags itself
        return
    overrides: List[str] = list(args.overrides or [])
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        jobs = _jobs(overrides, multirun=bool(args.multirun))
    except HydraException as err:
        raise ConfigError(hydra_message(err)) from None
    except Exception:  # noqa: BLE001 - e.g. a sweeper plugin's own grammar: leave it to Hydra
        return
    for job in jobs[:64]:  # a huge multirun: the first 64 jobs cover every option in practice
        try:
            compose(job)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(hydra_message(err)) from None


def _jobs(overrides: List[str], *, multirun: bool) -> List[List[str]]:
    """The override list of each job: one job, or the multirun's cartesian product."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)  # syntax errors raise here
    multirun = multirun or any(o.key_or_group == "hydra.mode" and o.value() == "MULTIRUN" for o in parsed)
    if not multirun or not any(o.is_sweep_override() for o in parsed):
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
