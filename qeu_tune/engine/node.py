"""Which Ray node a trial ran on, reported by the trainable and tagged by the driver.

The trainable adds ``node_info()`` to the first result each trial process reports (again
after a retry, which may land on another node); the driver's MLflow callback turns those
values into the run tags ``qeu.node_ip`` and ``qeu.node_id`` with ``node_tags(result)``.
They are strings, so they never become metrics. ``node_lost`` tells a lost node from a
trial process that died on a node still up.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, Mapping, Optional

from qeu_tune.core.tags import TAG_NODE_ID, TAG_NODE_IP

RESULT_NODE_IP = "qeu_node_ip"  # keys in the trial's result dict
RESULT_NODE_ID = "qeu_node_id"


def node_info() -> Dict[str, str]:
    """The current process's Ray node: ``{qeu_node_ip, qeu_node_id}`` (empty outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return {}
        return {
            RESULT_NODE_IP: str(ray.util.get_node_ip_address()),
            RESULT_NODE_ID: str(ray.get_runtime_context().get_node_id()),
        }
    except Exception:  # noqa: BLE001 - a tag must never fail a trial
        return {}


def node_tags(result: Mapping[str, Any]) -> Dict[str, str]:
    """MLflow tags from a result that carries ``node_info()``; empty for every other result."""
    tags = {}
    if result.get(RESULT_NODE_IP):
        tags[TAG_NODE_IP] = str(result[RESULT_NODE_IP])
    if result.get(RESULT_NODE_ID):
        tags[TAG_NODE_ID] = str(result[RESULT_NODE_ID])
    return tags


def node_lost(node_id: str, timeout_s: float = 1.0) -> Optional[bool]:
    """Whether a Ray node is gone: Ray marks it dead, or its raylet takes no connection.

    Ray's health check marks a lost node dead only after several missed checks (~15 s by
    default), while the trials on it fail at once; a raylet that refuses or does not answer a
    connection within ``timeout_s`` is gone already. None when the node is unknown or Ray
    cannot be asked.
    """
    try:
        import ray

        node = next((n for n in ray.nodes() if n.get("NodeID") == node_id), None)
    except Exception:  # noqa: BLE001 - a console line must never fail the sweep
        return None
    if node is None:
        return None
    if not node.get("Alive"):
        return True
    if not node.get("NodeManagerAddress") or not node.get("NodeManagerPort"):
        return None
    try:
        with socket.create_connection((node["NodeManagerAddress"], int(node["NodeManagerPort"])), timeout=timeout_s):
            return False
    except OSError:
        return True
