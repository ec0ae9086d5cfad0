"""A real multi-node Ray cluster on this machine, started the way users start one.

The head and the workers are separate ``ray start --block`` processes started through the
project's ``scripts/ray_head.sh`` and ``scripts/ray_worker.sh``, each in its own process
group, on free ports (never Ray's defaults: other people run Ray on the same machine), with
token authentication on (Ray 2.60's secure mode) and a private temp dir. ``stop()`` ends
exactly these processes: never ``ray stop``, which would stop every Ray on the machine.

``losable_cluster()`` is the same shape built with ``ray.cluster_utils.Cluster`` in the test
process, whose ``remove_node`` kills a worker node as a lost machine would be lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from qeu_tune.core import processes

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


_handed_out: set = set()


def free_ports(count: int) -> List[int]:
    """``count`` ports free on 127.0.0.1 now, none handed out before by this process.

    Ray refuses a port given to two of its components; ports found for one node are not yet
    bound when the next node's are found.
    """
    found: List[int] = []
    while len(found) < count:
        fresh = processes.free_ports(count - len(found))
        found += [port for port in fresh if port not in _handed_out]
        _handed_out.update(fresh)
    return found


def _agent_ports() -> List[str]:
    """Per-node ports that default to fixed numbers (two nodes on one machine would clash)."""
    flags = (
        "node-manager",
        "object-manager",
        "dashboard-agent-listen",
        "dashboard-agent-grpc",
        "metrics-export",
        "runtime-env-agent",
    )
    return [f"--{flag}-port={port}" for flag, port in zip(flags, free_ports(len(flags)))]


class LocalRayCluster:
    """A head (``num_cpus=0``, dashboard on) plus worker nodes, all on 127.0.0.1."""

    def __init__(self, env: Optional[Dict[str, str]] = None) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="qeu-ray-")  # short: Ray's socket paths are limited
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.token = secrets.token_hex(32)
        self.env = {
            **os.environ,
            **(env or {}),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `qeu-tune` for ray job submit
            "RAY_AUTH_MODE": "token",  # explicit: independent of any ~/.ray/auth_token on this machine
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: List[subprocess.Popen] = []
        self.logs: List[Path] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, script: str, extra: List[str], env: Dict[str, str], name: str) -> None:
        log = Path(self.temp_dir) / f"{name}.log"
        self.logs.append(log)
        self.nodes.append(
            subprocess.Popen(
                ["bash", str(ROOT / "scripts" / script), "--block", *extra],
                env={**self.env, **env},
                stdout=open(log, "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def start_head(self) -> None:
        self._start(
            "ray_head.sh",
            [f"--temp-dir={self.temp_dir}", *_agent_ports()],
            {
                "QEU_RAY_HEAD_IP": "127.0.0.1",
                "QEU_RAY_HEAD_PORT": str(self.gcs_port),
                "QEU_RAY_HEAD_CPUS": "0",
                "QEU_RAY_DASHBOARD_PORT": str(self.dashboard_port),
                "QEU_RAY_CLIENT_PORT": str(self.client_port),
            },
            "head",
        )

    def add_worker(self, num_cpus: int, attempts: int = 3) -> None:
        """Starts a worker node and waits until it has joined (one node at a time: on a busy
        2-core machine, Ray's fixed 30 s raylet start-up timeout can expire; then retry)."""
        expected = len([p for p in self.nodes if p.poll() is None]) + 1
        for attempt in range(attempts):
            # Its own temp dir: nodes sharing one would clean up each other's runtime_env
            # files (e.g. the job's --working-dir, under the driver's feet).
            temp_dir = Path(self.temp_dir) / f"w{len(self.nodes)}"
            self._start(
                "ray_worker.sh",
                [f"--temp-dir={temp_dir}", *_agent_ports()],
                {
                    "QEU_RAY_HEAD_ADDRESS": self.address,
                    "QEU_RAY_WORKER_CPUS": str(num_cpus),
                    "QEU_RAY_WORKER_IP": "127.0.0.1",
                },
                f"worker{len(self.nodes)}",
            )
            try:
                self.wait_for(expected)
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                failed = self.nodes.pop()  # it exited: start it again
                try:
                    os.killpg(failed.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def nodes_info(self) -> List[Dict]:
        """``ray.nodes()`` of the cluster, read in a separate driver process."""
        code = (
            "import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
            "print('NODES=' + json.dumps([{k: n[k] for k in ('NodeID', 'Alive', 'Resources')} "
            "for n in ray.nodes()]))" % self.address
        )
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        for line in out.stdout.splitlines():
            if line.startswith("NODES="):
                return json.loads(line[len("NODES=") :])
        raise RuntimeError(f"could not list the cluster's nodes:\n{out.stderr[-3000:]}\n{self.tail_logs()}")

    def wait_for(self, num_nodes: int, timeout: float = 150.0) -> List[Dict]:
        deadline = time.monotonic() + timeout
        nodes: List[Dict] = []
        while time.monotonic() < deadline:
            for proc in self.nodes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Ray node exited with {proc.returncode}:\n{self.tail_logs()}")
            try:
                nodes = [n for n in self.nodes_info() if n["Alive"]]
            except RuntimeError:
                nodes = []
            if len(nodes) >= num_nodes:
                return nodes
            time.sleep(2)
        raise TimeoutError(f"{len(nodes)} of {num_nodes} Ray nodes up after {timeout:.0f} s:\n{self.tail_logs()}")

    def tail_logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in self.logs if log.exists()
        )

    def stop(self) -> None:
        """Workers first (they drain through the head), then the head; then anything left."""
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its own node
                    proc.wait(timeout=45)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of that node's process group
            except (ProcessLookupError, PermissionError):
                pass
        self._kill_strays()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _kill_strays(self) -> None:
        """Ray processes of this cluster that left their process group (found by our temp dir/port)."""
        port = re.compile(rf":{self.gcs_port}(?!\d)")
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "ray" in cmdline and (self.temp_dir in cmdline or port.search(cmdline)):
                try:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@contextlib.contextmanager
def losable_cluster(num_workers: int = 2, worker_cpus: int = 1) -> Iterator[Tuple[Any, List[Any]]]:
    """``ray.cluster_utils.Cluster``: a head without CPUs and ``num_workers`` worker nodes.

    Yields the cluster and its worker nodes; ``cluster.remove_node(node, allow_graceful=False)``
    SIGKILLs every process of a node, as losing the machine would. Private like
    ``LocalRayCluster``: its own temp dir through ``RAY_TMPDIR`` (Ray also writes its "current
    cluster" address file there, which a plain ``ray.init()`` elsewhere on this machine would
    otherwise join; a driver started from this process inherits it) and free ports for every
    per-node agent. The GCS marks a lost node dead after ~3 s instead of ~15 s. Taken down node
    by node: ``Cluster.shutdown()`` would also reset this process's own Ray internal-KV client.
    """
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="qeu-rn-")  # short: Ray's socket paths are limited
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir

    port_names = (  # per-node ports that default to fixed numbers
        "object_manager_port",
        "dashboard_agent_listen_port",
        "metrics_agent_port",
        "metrics_export_port",
        "runtime_env_agent_port",
    )
    pool = free_ports(len(port_names) * (num_workers + 1))

    def ports() -> Dict[str, int]:
        return {name: pool.pop() for name in port_names}

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
            **ports(),
        },
    )
    try:
        workers = [cluster.add_node(num_cpus=worker_cpus, wait=False, **ports()) for _ in range(num_workers)]
        cluster.wait_for_nodes(timeout=150)
        yield cluster, workers
    finally:
        for node in [*cluster.worker_nodes, cluster.head_node]:
            if node is not None:
                cluster.remove_node(node, allow_graceful=False)
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(temp_dir, ignore_errors=True)
