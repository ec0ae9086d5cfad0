"""``qeu-tune resume SWEEP [tracking.uri=URI]``: continue an interrupted sweep into the same MLflow runs.

Nothing secret is recorded with a sweep, so the tracking URI's password comes from the user
again: ``tracking.uri=URI`` (as when the sweep started, ``${oc.env:NAME}`` included),
``--tracking-uri URI``, ``$MLFLOW_TRACKING_URI``, or the environment variable that the
recorded URI names (``qeu_tune.core.secrets``).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

TRACKING_URI_KEY = "tracking.uri"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "resume", parents=[common], help="continue an interrupted sweep or study into the same MLflow runs"
    )
    p.add_argument("sweep", help="parent run id or sweep name, or a study run id or name")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="tracking.uri=URI",
        help="the tracking URI with its password, as when the sweep started (wins over --tracking-uri; "
        "${oc.env:NAME} reads a part from the environment)",
    )
    p.add_argument(
        "--restart-errored", action="store_true", help="also retry trials that had failed, from their last checkpoint"
    )


def tracking_uri_override(overrides: Sequence[str], default: str) -> str:
    """The URI of a ``tracking.uri=URI`` override (the last one), else ``default``.

    Raises:
        ConfigError: Another override: resume continues the recorded config, it changes nothing.
    """
    from qeu_tune.core.errors import ConfigError

    uri = default
    for override in overrides:
        key, eq, value = override.lstrip("+").partition("=")
        if key != TRACKING_URI_KEY or not eq:
            raise ConfigError(
                f"resume continues a sweep with its recorded config; {override!r} is not "
                f"{TRACKING_URI_KEY}=URI, the only override it takes."
            )
        uri = value.strip("'\"")
    return uri


def run(args: argparse.Namespace, uri: str) -> int:
    from qeu_tune.core.secrets import given_tracking_uri

    uri = given_tracking_uri(tracking_uri_override(args.overrides, uri))  # never the printed *** form
    # The engine (Ray, RLlib) loads only when a sweep resumes: the CLI imports every command's parser.
    from qeu_tune.analysis.runs import client_for, find_run
    from qeu_tune.commands import study
    from qeu_tune.commands.sweep import finish
    from qeu_tune.core import tags
    from qeu_tune.engine.resume import resume_sweep

    if find_run(client_for(uri), args.sweep).data.tags.get(tags.TAG_KIND) == "study":
        return study.resume(uri, args.sweep)
    try:
        finish(resume_sweep(uri, args.sweep, restart_errored=args.restart_errored))
    except SystemExit as stop:  # finish() exits non-zero for an interrupted or failed sweep
        return int(stop.code or 0)
    return 0
