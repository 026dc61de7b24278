"""Named events with plain callbacks, for engine objects that others observe (no Qt: a Qt front end re-emits them as
signals, as napari's Qt controls connect to its layers' events).

    session.events.connect("changed", on_changed)   # on_changed(state)
    session.events.disconnect("changed", on_changed)

Callbacks run on the thread that emits, in the order they were connected. One that raises is reported and the others
still run: an observer's bug must not break the object that emits (a render worker, for example).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable


class Events:
    def __init__(self, *names: str):
        self._callbacks: dict[str, list[Callable]] = {name: [] for name in names}
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._callbacks)

    def _list(self, name: str) -> list[Callable]:
        try:
            return self._callbacks[name]
        except KeyError:
            raise ValueError(f"no event named {name!r} (have {', '.join(self._callbacks)})") from None

    def connect(self, name: str, fn: Callable) -> Callable:
        with self._lock:
            self._list(name).append(fn)
        return fn

    def disconnect(self, name: str, fn: Callable | None = None) -> None:
        """Remove one callback (every callback of the event when fn is None); an absent one is no error."""
        with self._lock:
            callbacks = self._list(name)
            callbacks[:] = [] if fn is None else [c for c in callbacks if c != fn]

    def emit(self, name: str, *args) -> None:
        with self._lock:
            callbacks = list(self._list(name))
        for fn in callbacks:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - reported; the emitter and the other observers carry on
                traceback.print_exc()
