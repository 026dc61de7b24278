"""Running engine work off the UI thread.

`Task` runs one function on Qt's global thread pool and reports back through signals, which Qt delivers on the UI
thread (the signal object lives there). The function receives a `TaskContext` to report progress and to poll for
cancellation. Errors never escape: a `UserError` arrives as its message, anything else as a one-line summary with the
traceback printed for developers.
"""

from __future__ import annotations

import threading
import traceback

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from engine.errors import UserError


class Cancelled(Exception):
    """Raised inside a task by `TaskContext.check()` after the user pressed Cancel."""


class TaskContext:
    def __init__(self, signals: TaskSignals):
        self._signals = signals
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """Set by Cancel: for engine functions that take a `cancel` event (the projector)."""
        return self._cancel

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def progress(self, done: float, total: float = 1.0, text: str = "") -> None:
        frac = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
        self._signals.progress.emit(frac, text)

    def partial(self, value) -> None:
        """An intermediate result (e.g. the projector's current image)."""
        self._signals.partial.emit(value)


class TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    progress = Signal(float, str)
    partial = Signal(object)
    finished = Signal()  # after done / failed / cancelled


def describe_error(e: BaseException) -> str:
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory; close other programs or use a smaller model"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Task(QRunnable):
    """One function run on a pool thread: `fn(ctx, *args)`; connect to `task.signals` before `start()`."""

    _live: set[Task] = set()  # keeps Python wrappers alive until they finish

    def __init__(self, fn, *args, pool: QThreadPool | None = None):
        super().__init__()
        self.setAutoDelete(False)
        self.fn, self.args = fn, args
        self.signals = TaskSignals()
        self.ctx = TaskContext(self.signals)
        self._pool = pool or QThreadPool.globalInstance()
        self.running = False

    def start(self) -> Task:
        Task._live.add(self)
        self.running = True
        self._pool.start(self)
        return self

    def cancel(self) -> None:
        self.ctx.cancel()

    def run(self):
        try:
            result = self.fn(self.ctx, *self.args)
        except Cancelled:
            self._emit(self.signals.cancelled)
        except BaseException as e:  # noqa: BLE001 - a worker must never take the app down
            if not isinstance(e, UserError):
                traceback.print_exc()
            self._emit(self.signals.failed, describe_error(e))
        else:
            # A function that returns after a cancel request chose to deliver what it has (the projector's best
            # codes so far); one that wants to abort raises Cancelled via ctx.check().
            self._emit(self.signals.done, result)
        finally:
            self.running = False
            self._emit(self.signals.finished)
            Task._live.discard(self)

    @staticmethod
    def _emit(signal, *args):
        try:
            signal.emit(*args)
        except RuntimeError:  # the receiver was deleted while we worked (window closed)
            pass


def run_task(fn, *args, done=None, failed=None, progress=None, cancelled=None, finished=None, partial=None,
             pool: QThreadPool | None = None) -> Task:
    t = Task(fn, *args, pool=pool)
    for sig, slot in (
        (t.signals.done, done),
        (t.signals.failed, failed),
        (t.signals.progress, progress),
        (t.signals.cancelled, cancelled),
        (t.signals.finished, finished),
        (t.signals.partial, partial),
    ):
        if slot is not None:
            sig.connect(slot)
    return t.start()
