"""The interrupt guard and the CLI's exit codes, without Ray (real signals to this process)."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from qeu_tune.commands.sweep import finish
from qeu_tune.engine.interrupts import InterruptGuard


class FakeTune:
    """Does what Tune's ``_setup_signal_catching`` does: keeps the handler it finds, installs its own,
    and on the first SIGINT sets its stop flag and puts the kept handler back."""

    def __init__(self):
        self.stopped = 0
        self.original = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self.handler)

    def handler(self, signum, frame):
        self.stopped += 1
        signal.signal(signal.SIGINT, self.original)


@pytest.fixture
def guard():
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    g = InterruptGuard()
    g.install()
    yield g
    g.restore()
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_is_tunes_graceful_stop_and_is_remembered(guard, sig, code):
    tune = FakeTune()
    guard.arm()
    os.kill(os.getpid(), sig)
    assert tune.stopped == 1  # Tune's own stop path ran, once
    assert guard.received == sig and guard.exit_code == code and guard.signal_name == signal.Signals(sig).name
    with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
        os.kill(os.getpid(), signal.SIGINT)
    assert tune.stopped == 1


def test_signal_outside_tune_raises_keyboard_interrupt(guard):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
    assert guard.exit_code == 143


def result(**kw):
    base = dict(
        interrupted=None,
        exit_code=0,
        num_trials=2,
        num_errors=0,
        best=None,
        report=None,
        spool=None,
        status="FINISHED",
        parent_run_id="p",
        experiment_id="1",
        tracking_uri="sqlite:///x.db",
    )
    return SimpleNamespace(**{**base, **kw})


def test_finish_exits_130_with_the_resume_command_when_interrupted(capsys):
    with pytest.raises(SystemExit) as stop:
        finish(result(interrupted="SIGINT", exit_code=130, status="KILLED"))
    assert stop.value.code == 130
    out = capsys.readouterr().out
    assert "qeu-tune --tracking-uri sqlite:///x.db resume p" in out and "FINISHED" not in out


def test_finish_exits_1_with_one_line_when_every_trial_failed(capsys):
    with pytest.raises(SystemExit) as stop:
        finish(result(num_errors=2, status="FAILED"))
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every trial failed (2 of 2)" in err[0]


def test_finish_states_partial_failure_and_returns_the_best_value(capsys):
    best = {
        "label": "lr=0.01",
        "by": "final_mean",
        "value": 12.5,
        "ci": "12.5 [10, 15]",
        "seeds": 2,
        "run_id": "r",
        "last": None,
    }
    assert finish(result(num_errors=1, best=best)) == 12.5
    out = capsys.readouterr().out
    assert "2 trials, 1 failed" in out and "Best configuration (IQM over 2 seeds of final_mean): lr=0.01" in out
