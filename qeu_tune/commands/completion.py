"""Shell completion: Hydra's ``--shell-completion`` for overrides, plus qeu-tune's command names.

``eval "$(qeu-tune --shell-completion install=bash)"`` installs Hydra's bash script (zsh: the
same after ``autoload -U bashcompinit && bashcompinit``; fish: ``qeu-tune --shell-completion
install=fish | source``). On every Tab the script asks ``qeu-tune -sc query=SHELL`` for the
words that fit the line being typed (``$COMP_LINE``). They are answered here, without Ray:

* the first word: the command names and the config groups and keys (``algo=``, ``stop.``);
* after ``sweep`` or ``study``: Hydra's answer for the rest of the line (groups, options,
  keys), with the user config directory's options and without the ``base_*`` schemas;
* after another command: nothing, so the shell completes file names (``-o default``).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from qeu_tune.commands.argv import extract_config_dir
from qeu_tune.commands.console import fail
from qeu_tune.commands.usage import COMMANDS, HYDRA_COMMANDS
from qeu_tune.config.compose import setup_hydra
from qeu_tune.core.errors import ConfigError
from qeu_tune.core.paths import CONF_DIR, user_config_dir

FLAGS = ("-sc", "--shell-completion")


def request(argv: Sequence[str]) -> Optional[str]:
    """``install=bash``, ``query=fish``, ... when ``argv`` asks for shell completion, else None."""
    if not any(arg in FLAGS for arg in argv):
        return None
    found = [a for a in argv if a.split("=", 1)[0] in ("install", "uninstall", "query")]
    return found[0] if len(found) == 1 else None  # anything else: Hydra's own message


def suggestions(line: str) -> List[str]:
    """The words that complete the last word of ``line`` (the whole command line, program first).

    Example:
        >>> [w for w in suggestions("qeu-tune re") if "=" not in w and "." not in w]
        ['report', 'rerun', 'resume']
    """
    from hydra.plugins.completion_plugin import CompletionPlugin

    rest = CompletionPlugin.strip_python_or_app_name(line)
    words = rest.split()
    ends_word = rest == "" or rest.endswith(" ")
    config_dir = None
    try:  # --config-dir DIR: its options complete too
        words, config_dir = extract_config_dir(words)
    except ConfigError:
        pass
    typed = words if ends_word else words[:-1]  # the words already complete
    current = "" if ends_word or not words else words[-1]
    commands = [c for c in COMMANDS if c.startswith(current)] if not typed else []
    if typed and typed[0] in HYDRA_COMMANDS:
        words = words[1:]
    elif typed and typed[0] in COMMANDS:
        return []
    elif typed and typed[0] == "help":
        return [c for c in COMMANDS if c.startswith(current)] if len(typed) == 1 else []
    return commands + _hydra(" ".join(words) + (" " if ends_word and words else ""), config_dir)


def _loader(config_dir: Optional[Path] = None):
    """Hydra's config loader on the shipped config groups and the user config directory's."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    setup_hydra()
    search_path = create_config_search_path(str(CONF_DIR))
    user = config_dir or user_config_dir()
    if user is not None:
        search_path.append("qeu-tune-user", f"file://{user}")
    return ConfigLoaderImpl(config_search_path=search_path)


def _hydra(rest: str, config_dir: Optional[Path] = None) -> List[str]:
    """Hydra's completion of an override line, without the ``base_*`` schemas."""
    from hydra._internal.core_plugins.bash_completion import BashCompletion

    try:
        words = BashCompletion(_loader(config_dir))._query(config_name="config", line=rest)
    except (Exception, SystemExit):  # noqa: BLE001 - a line Hydra cannot read (or an unknown flag): no suggestions
        return []
    return [w for w in words if not w.split("=", 1)[-1].startswith("base_")]


def run(spec: str, line: Optional[str]) -> None:
    """Answers ``-sc install=SHELL``/``uninstall=SHELL`` (Hydra's scripts) and ``query=SHELL``.

    Args:
        spec: ``install=bash``, ``query=bash``, ...
        line: The line being completed (``$COMP_LINE``), for a query.
    """
    from hydra.core.plugins import Plugins
    from hydra.plugins.completion_plugin import CompletionPlugin

    action, _, shell = spec.partition("=")
    plugins = {p.provides(): p for p in Plugins.instance().discover(CompletionPlugin)}
    if shell not in plugins:
        fail(f"no shell completion for {shell!r}; shells: {', '.join(sorted(plugins))}.")
    if action == "query":
        print(("\n" if shell == "fish" else " ").join(suggestions(line or "")))
    else:
        getattr(plugins[shell](_loader()), action)()
