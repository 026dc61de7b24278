"""A clean stop on Ctrl-C / SIGTERM for long loops (training, distillation, stylization): finish the step, save, end."""

from __future__ import annotations

import signal
import threading
import time


class StopFlag:
    """`with StopFlag(announce) as stop:` a training loop checks `stop.requested` between steps, then saves and ends.

    Ctrl-C (SIGINT) and SIGTERM set the flag. A second signal more than `grace` seconds after the first quits at once
    (KeyboardInterrupt): torchrun repeats the user's Ctrl-C to its workers, which must not count as a second one. On
    exit exactly the handlers found on entry are put back, whatever they were (Python's, SIG_IGN in a job started in
    the background, a host program's). Off the main thread no handler can be installed and the flag stays down."""

    def __init__(self, announce=None, grace: float = 3.0, signals=(signal.SIGINT, signal.SIGTERM)):
        self.requested = False
        self._first = 0.0
        self._announce = announce
        self._grace = grace
        self._signals = tuple(signals)
        self._old: dict = {}

    def _handler(self, signum, frame):
        now = time.monotonic()
        if self.requested and now - self._first > self._grace:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self._first = True, now
            if self._announce is not None:
                self._announce(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                               "(again to quit without saving)")

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in self._signals:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            # None: the old handler was not installed from Python and cannot be put back; the default is nearest.
            signal.signal(s, signal.SIG_DFL if h is None else h)
        self._old.clear()
