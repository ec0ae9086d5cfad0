"""A trial's failure as one console line: what happened, and what Tune does about it.

Tune retries a crashed trial from its last checkpoint up to ``max_failures`` times; the
tracking callback (``qeu_tune.engine.callback``) logs one line per retry and per final
failure, built here. At the default verbosity these lines replace what Ray and Tune print
by themselves for the same event: the lost raylet's last 20 log lines and the health
checker's verdict (``qeu_tune.engine.startup.quiet_node_deaths``), Tune's traceback
(``qeu_tune.commands.console.NOISE``) and its errored-trials table in every status report
(``qeu_tune.engine.progress``); ``verbose=2`` shows those too. Examples::

    trial 6d6a62a1 lost its node 9b027c1e (192.0.2.2); retry 1 of 1 from checkpoint_000001 (iteration 4, 400 env steps)
    trial fb0dd_00001 failed (qeu_tune.envs.faults.InjectedFault: injected environment fault at step 1700
        (env.fault.at_step)); retry 1 of 1 from checkpoint_000000 (iteration 2, 1,000 env steps)
    trial fb0dd_00000 failed (qeu_tune.envs.faults.InjectedFault: ...) after 1 retry; it ends FAILED (max_failures=1)

Strings, Tune's error files and trial objects in, strings out: no Ray import here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

from qeu_tune.core import names
from qeu_tune.core.tags import TAG_NODE_ID, TAG_NODE_IP

# How Ray describes a trial process that is gone (its error file holds str(exception), without
# the class name): the actor died, or its connection broke.
_PROCESS_GONE = ("The actor died", "is unavailable", "its node has died", "ActorDiedError", "ActorUnavailableError")
_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Fault|Interrupt)): (.+)$", re.MULTILINE)
_SHOWN = 160  # characters of an error message on the line


def read_error(path: Optional[str]) -> str:
    """A trial's error (Tune's error file): the innermost exception with a message first, then the trace's end.

    RLlib re-raises env errors as a bare ``RuntimeError``; the cause's line is what a user needs.
    """
    try:
        if path and Path(path).exists():
            text = Path(path).read_text(errors="replace")
            causes = _EXCEPTION_LINE.findall(text)
            head = f"{causes[-1][0]}: {causes[-1][1]}\n\n" if causes else ""
            return head + text[-(3000 - len(head)) :]
    except Exception:  # noqa: BLE001 - an unreadable error file: the generic message below
        pass
    return "trial failed (no error file was written)"


def process_gone(error: str) -> bool:
    """Whether a trial's error says its process died (rather than raising an exception)."""
    return any(marker in error for marker in _PROCESS_GONE)


def error_summary(error: str) -> str:
    """The error's innermost exception line, else the first line of its last failure."""
    found = _EXCEPTION_LINE.findall(error)
    if found:
        line = ": ".join(found[-1]).strip()
    else:
        last = error.rsplit("Failure # ", 1)[-1].splitlines()[1:] if "Failure # " in error else error.splitlines()
        line = next((t.strip() for t in last if t.strip()), "no error message")
    return line if len(line) <= _SHOWN else line[: _SHOWN - 3] + "..."


def failure_cause(error: str, node: Mapping[str, str], node_lost: Optional[bool]) -> str:
    """What happened to the trial, in a few words.

    Args:
        error: The trial's error text.
        node: The node the trial last ran on, as run tags (``qeu_tune.engine.node.node_tags``).
        node_lost: Whether that node is gone (``qeu_tune.engine.node.node_lost``; None: unknown).
    """
    node_id, node_ip = node.get(TAG_NODE_ID, ""), node.get(TAG_NODE_IP, "")
    where = " ".join(filter(None, [node_id[:8], f"({node_ip})" if node_ip else ""])) or "unknown"
    if process_gone(error):
        return f"lost its node {where}" if node_lost else f"lost its process on node {where}"
    return f"failed ({error_summary(error)})"


def restart_text(checkpoint: Optional[str], iteration: Optional[int], env_steps: Optional[float]) -> str:
    """``from checkpoint_000001 (iteration 4, 400 env steps)``, or ``from the start ...``."""
    if not checkpoint:
        return "from the start (no checkpoint yet)"
    done = [
        f"iteration {iteration}" if iteration is not None else "",
        f"{env_steps:,.0f} env steps" if env_steps else "",
    ]
    details = ", ".join(d for d in done if d)
    return f"from {checkpoint} ({details})" if details else f"from {checkpoint}"


def restart_point(trial: Any) -> str:
    """``restart_text`` of the checkpoint Tune restores a retried trial (``ray.tune.experiment.Trial``) from."""
    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return restart_text(None, None, None)
    try:  # the result reported with it (Ray 2.60 has no public accessor)
        metrics = trial.run_metadata.checkpoint_manager.latest_checkpoint_result.metrics or {}
    except AttributeError:
        metrics = {}
    iteration = metrics.get(names.ITERATION, metrics.get("training_iteration"))
    name = Path(checkpoint.path).name
    return restart_text(name, None if iteration is None else int(iteration), metrics.get(names.ENV_STEPS))


def _limit(max_failures: int) -> str:
    return "unlimited" if max_failures < 0 else str(max_failures)


def retry_line(trial_id: str, cause: str, retry: int, max_failures: int, restart: str) -> str:
    """``trial <id> <cause>; retry <n> of <max_failures> <restart point>``."""
    return f"trial {trial_id} {cause}; retry {retry} of {_limit(max_failures)} {restart}"


def final_line(trial_id: str, cause: str, retries: int, max_failures: int) -> str:
    """``trial <id> <cause> after <n> retries; it ends FAILED (max_failures=<m>)``."""
    after = f" after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
    return f"trial {trial_id} {cause}{after}; it ends FAILED (max_failures={_limit(max_failures)})"
