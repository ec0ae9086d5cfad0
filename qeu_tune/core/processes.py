"""Child processes that serve on loopback (MLflow UI, tracking server): ports, readiness, stopping.

Shared by ``qeu-tune ui``, ``qeu-tune server`` and the tests that start such servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from typing import List, Optional


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """``count`` distinct TCP ports free on ``host`` right now.

    The probes stay open until the last is found: ``free_port`` called twice may hand out the
    same port (the system reuses a port as soon as its probe closes).
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def wait_http(url: str, timeout: float = 90.0, process: Optional[subprocess.Popen] = None) -> None:
    """Waits until ``url`` answers 200.

    Raises:
        RuntimeError: ``process`` exited first.
        TimeoutError: No answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before answering {url}.")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s.")


def stop_process_group(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """Stops a process started with ``start_new_session=True`` and every worker it started.

    SIGTERM first, SIGKILL if the group is still there after ``timeout``; returns the exit code.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def wait_port_closed(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> bool:
    """Waits until nothing listens on ``host:port`` (a stopped server's workers let go of it);
    returns False if something still does after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while port_open(port, host):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
