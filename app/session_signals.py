"""The one place where the edit session's events (engine.events, no Qt) become Qt signals.

`EditSession.events` calls its observers on whichever thread emits: `changed` and `directions` on the thread that
edits (the UI's), `frame` on the render worker. Re-emitted as signals of this object, which lives on the UI thread,
they reach the editor's parts on the UI thread either way (Qt queues what comes from the worker).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class SessionSignals(QObject):
    stateChanged = Signal(object)  # engine.edit.EditState, after every change, undo, redo and new base
    directionsChanged = Signal(object)  # engine.io.directions.DirectionSet: directions added, replaced or renamed
    frameRendered = Signal(object)  # engine.edit.Frame, finished on the render worker
    renderFailed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None

    def attach(self, session) -> None:
        """Follow `session` (None: none) instead of the one followed so far."""
        if self.session is not None:
            for name, fn in self._callbacks():
                self.session.events.disconnect(name, fn)
        self.session = session
        if session is not None:
            for name, fn in self._callbacks():
                session.events.connect(name, fn)

    def _callbacks(self):
        return (("changed", self._changed), ("directions", self._directions), ("frame", self._frame))

    def _changed(self, state):
        self._emit(self.stateChanged, state)

    def _directions(self, dset):
        self._emit(self.directionsChanged, dset)

    def _frame(self, frame):
        if frame.error:
            self._emit(self.renderFailed, f"render failed: {frame.error}")
        else:
            self._emit(self.frameRendered, frame)

    @staticmethod
    def _emit(signal, *args):
        try:
            signal.emit(*args)
        except RuntimeError:  # the window is gone
            pass
