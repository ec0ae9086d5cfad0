"""One console line per trial failure (retry or final), and Ray's and Tune's own text about the
same event kept off the console below verbose=2: the raylet's last log lines, Tune's traceback
and its errored-trials table. The node-loss sweep itself is in tests/e2e/test_cluster.py."""

from __future__ import annotations

import importlib.util
import logging
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_sweep import make_template

from qeu_tune.commands.console import NOISE, loud_console, quiet_console
from qeu_tune.core import names
from qeu_tune.engine import callback as callback_module
from qeu_tune.engine import startup
from qeu_tune.engine.callback import MLflowTrialCallback
from qeu_tune.engine.failures import error_summary, failure_cause, final_line, process_gone, restart_text, retry_line
from qeu_tune.engine.node import RESULT_NODE_ID, RESULT_NODE_IP, node_lost
from qeu_tune.engine.progress import ERROR_TABLE, without_error_table

NODE = "9b027c1ecd95426d84de7213b2d319119bf2eaed79aa89d427d1de6c"
# What Tune writes to a trial's error file when Ray loses the trial's process (str(exception)).
UNAVAILABLE = (
    "Failure # 1 (occurred at 2026-12-05_21-58-58)\n"
    "The actor ff27c09d1166351b41ee8dc301000000 is unavailable: The actor is temporarily unavailable: "
    "RpcError: RPC error: Socket closed rpc_code: 14. The task may or may not have been executed on the actor.\n"
)
DIED = "Failure # 1 (occurred at x)\nThe actor died because its node has died. Node Id: 9b027c1e\n"
RAISED = "Failure # 1 (occurred at x)\nray.exceptions.RayTaskError(RuntimeError): ...\nRuntimeError: boom\n"


def test_the_line_says_what_happened_retry_n_of_max_and_the_checkpoint():
    node = {"qeu.node_id": NODE, "qeu.node_ip": "10.0.0.7"}
    assert process_gone(UNAVAILABLE) and process_gone(DIED) and not process_gone(RAISED)
    assert failure_cause(UNAVAILABLE, node, True) == "lost its node 9b027c1e (10.0.0.7)"
    assert failure_cause(UNAVAILABLE, node, False) == "lost its process on node 9b027c1e (10.0.0.7)"
    assert failure_cause(RAISED, node, None) == "failed (RuntimeError: boom)"
    assert error_summary("Failure # 1 (occurred at x)\nsomething odd\n") == "something odd"
    restart = restart_text("checkpoint_000001", 4, 400.0)
    assert restart == "from checkpoint_000001 (iteration 4, 400 env steps)"
    assert restart_text(None, None, None) == "from the start (no checkpoint yet)"
    assert retry_line("t1", "lost its node 9b027c1e (10.0.0.7)", 1, 3, restart) == (
        "trial t1 lost its node 9b027c1e (10.0.0.7); retry 1 of 3 from checkpoint_000001 (iteration 4, 400 env steps)"
    )
    assert retry_line("t1", "failed (x)", 2, -1, restart).startswith("trial t1 failed (x); retry 2 of unlimited from")
    assert final_line("t1", "failed (RuntimeError: boom)", 1, 1) == (
        "trial t1 failed (RuntimeError: boom) after 1 retry; it ends FAILED (max_failures=1)"
    )
    assert final_line("t1", "failed (x)", 0, 0) == "trial t1 failed (x); it ends FAILED (max_failures=0)"


class _Tracker:
    """Takes every tracker call; nothing is recorded."""

    def create_run(self, **kwargs):
        return "run-1"

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _trial(error_file: Path) -> SimpleNamespace:
    latest = SimpleNamespace(metrics={names.ITERATION: 4.0, names.ENV_STEPS: 400.0, "training_iteration": 4})
    return SimpleNamespace(
        trial_id="t1",
        config={"seed": 0},
        error_file=str(error_file),
        max_failures=2,
        checkpoint=SimpleNamespace(path="/shared/sweep/t1/checkpoint_000001"),
        run_metadata=SimpleNamespace(checkpoint_manager=SimpleNamespace(latest_checkpoint_result=latest)),
    )


@pytest.mark.parametrize(
    "error, lost, cause",
    [
        (UNAVAILABLE, True, "lost its node 9b027c1e (10.0.0.7)"),
        (UNAVAILABLE, False, "lost its process on node 9b027c1e (10.0.0.7)"),
        (RAISED, None, "failed (RuntimeError: boom)"),
    ],
    ids=["node lost", "process lost", "exception"],
)
def test_the_callback_logs_one_line_per_retry_and_per_final_failure(tmp_path, monkeypatch, caplog, error, lost, cause):
    asked = []

    def fake_node_lost(node_id):
        asked.append(node_id)
        return lost

    monkeypatch.setattr(callback_module, "node_lost", fake_node_lost)
    (tmp_path / "error.txt").write_text(error)
    trial = _trial(tmp_path / "error.txt")
    callback = MLflowTrialCallback(tracker=_Tracker(), parent_run_id=None, template=make_template(), sweep_name="s")
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {names.ENV_STEPS: 100.0, RESULT_NODE_ID: NODE, RESULT_NODE_IP: "10.0.0.7"})
    with caplog.at_level(logging.WARNING, logger="qeu_tune.engine.callback"):
        callback.on_trial_recover(0, [], trial)
        callback.on_trial_error(0, [], trial)
    assert [r.getMessage() for r in caplog.records] == [
        f"trial t1 {cause}; retry 1 of 2 from checkpoint_000001 (iteration 4, 400 env steps)",
        f"trial t1 {cause} after 1 retry; it ends FAILED (max_failures=2)",
    ]
    assert asked == ([NODE, NODE] if lost is not None else [])  # Ray is asked only when the process is gone


def test_node_lost_asks_ray_then_the_raylet_itself(monkeypatch):
    import ray

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    nodes = [
        {
            "NodeID": "up",
            "Alive": True,
            "NodeManagerAddress": "127.0.0.1",
            "NodeManagerPort": listening.getsockname()[1],
        },
        {
            "NodeID": "gone",
            "Alive": True,
            "NodeManagerAddress": "127.0.0.1",
            "NodeManagerPort": closed.getsockname()[1],
        },
        {"NodeID": "dead", "Alive": False},
    ]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    try:
        assert node_lost("up") is False
        assert node_lost("gone") is True  # Ray's health check has not noticed yet; the raylet is gone
        assert node_lost("dead") is True
        assert node_lost("unknown") is None
    finally:
        listening.close()
        closed.close()


def test_rays_node_death_messages_are_dropped_and_its_other_messages_kept(monkeypatch):
    from ray._private import worker

    printed = []
    monkeypatch.setattr(worker, "print_to_stdstream", lambda data, ignore_prefix: printed.append(data["lines"][0]))
    startup.quiet_node_deaths()
    startup.quiet_node_deaths()  # once is enough: not wrapped twice
    for message in (
        "Raylet is terminated. Termination is unexpected. ... Last 20 lines of the Raylet logs:\n    [state-dump] ...",
        "The node with node id: 9b027c1e and address: 10.0.0.7 and node name: w1 has been marked dead because ...",
        "A worker died or was killed while executing a task by an unexpected system error.",
    ):
        worker.print_to_stdstream({"lines": [message], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    assert printed == ["A worker died or was killed while executing a task by an unexpected system error."]


def test_tunes_traceback_and_errored_trials_table_are_left_out():
    tune = importlib.util.find_spec("ray.tune").origin
    controller = (Path(tune).parent / "execution" / "tune_controller.py").read_text()
    reporter = (Path(tune).parent / "progress_reporter.py").read_text()
    (prefix,) = NOISE["ray.tune.execution.tune_controller"]
    assert f'f"{prefix} {{trial}}"' in controller  # Ray's wording (2.60)
    assert '"Number of errored trials: {}"' in reporter and ERROR_TABLE == "Number of errored trials:"

    logger = logging.getLogger("ray.tune.execution.tune_controller")  # "ray" does not propagate to root
    seen = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        quiet_console()
        try:
            logger.error(f"{prefix} 443afea3")
            logger.warning("something else")
        finally:
            loud_console()
        assert seen == ["something else"]
    finally:
        logger.removeHandler(handler)

    status = "== Status ==\nProgress: ...\n+---+\n| t |\n+---+\nNumber of errored trials: 1\n+---+\n| t | 1* |\n+---+\n"
    assert without_error_table(status) == "== Status ==\nProgress: ...\n+---+\n| t |\n+---+\n"
    assert without_error_table("== Status ==\n+---+\n") == "== Status ==\n+---+\n"
