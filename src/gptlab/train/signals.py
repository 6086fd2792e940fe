"""Stopping a run cleanly on a signal: finish the step, save a checkpoint, exit.

Within ``with StopOnSignal() as stop:`` the first SIGTERM (a cluster preempting the job, a
shutdown), SIGINT (Ctrl-C) or SIGUSR1 (SLURM's warning before a requeue) only sets
``stop.signal``; the training loop checks it between steps, saves and returns. The previous
handlers are put back at once, so a second signal acts as it normally would: stop at once.
Outside the main thread (where Python cannot install handlers) this does nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)


class StopOnSignal:
    """Turns the first stop signal into a request (``self.signal``) the loop honours between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 128 + its number (143 for SIGTERM)."""
        return 128 + (self.signal or 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        self._restore()  # a second signal acts as usual: stops at once
        log.warning("%s received: finishing this step and saving a checkpoint (send it again to stop at once)",
                    signal.Signals(signum).name)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
