"""Honest interrupts: the first Ctrl-C or SIGTERM stops the sweep cleanly, a second stops hard.

Ray Tune catches the first SIGINT itself and makes ``Tuner.fit()`` return normally, and
``ray.init()`` installs a SIGTERM handler that calls ``sys.exit``. Neither tells the caller
that the sweep was interrupted. ``InterruptGuard`` sits in front of both:

1. ``install()`` (after ``ray.init``, before ``fit``) takes SIGINT and SIGTERM.
2. ``arm(tune_handler)`` (from a Tune callback's ``setup``, when Tune's own handler is in
   place) routes the first signal of either kind to Tune's graceful stop: trials stop,
   Tune saves its experiment state, ``fit()`` returns.
3. Any further signal raises ``KeyboardInterrupt`` (stop now; runs still get closed).

``received`` tells which signal arrived, so the caller can exit 130 (SIGINT) or 143
(SIGTERM) instead of reporting a finished sweep.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable, Dict, Optional

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells do


class InterruptGuard:
    """Remembers the first SIGINT/SIGTERM and turns it into Tune's graceful stop."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._tune_handler: Optional[Callable[[int, Optional[FrameType]], Any]] = None
        self._previous: Dict[int, Any] = {}

    @property
    def exit_code(self) -> Optional[int]:
        return EXIT_CODES.get(self.received) if self.received is not None else None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def install(self) -> None:
        """Takes SIGINT and SIGTERM (main thread only; elsewhere signals stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in EXIT_CODES:
            self._previous[sig] = signal.getsignal(sig)
        # Tune saves the SIGINT handler it finds as its "original" and puts it back after
        # the first SIGINT: that must be the hard stop.
        signal.signal(signal.SIGINT, self._hard)
        signal.signal(signal.SIGTERM, self._graceful)

    def arm(self) -> None:
        """Called when Tune's own SIGINT handler is installed (``Callback.setup``)."""
        if threading.current_thread() is not threading.main_thread():
            return
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler not in (self._hard, self._graceful):
            self._tune_handler = handler
        if self.received is None:
            signal.signal(signal.SIGINT, self._graceful)
            signal.signal(signal.SIGTERM, self._graceful)
        elif self._tune_handler is not None:  # a signal came before Tune started
            self._tune_handler(signal.SIGINT, None)

    def restore(self) -> None:
        """Puts back the handlers found by ``install``."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _graceful(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.received is not None:
            self._hard(signum, frame)
            return
        self.received = signum
        signal.signal(signal.SIGINT, self._hard)
        signal.signal(signal.SIGTERM, self._hard)
        if self._tune_handler is not None:
            self._tune_handler(signal.SIGINT, frame)  # Tune: stop trials, save state, return
        else:
            raise KeyboardInterrupt

    def _hard(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.received is None:
            self.received = signum
        raise KeyboardInterrupt
