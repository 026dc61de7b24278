"""The live camera view: runs `engine.live.LiveRunner` and hands its newest frame to the UI thread.

Frames are handed over through a one-slot mailbox: the runner's thread stores the newest frame and posts a signal
only when the UI has taken the previous one, so a busy UI skips frames instead of queueing them.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal

from app.workers import describe_error


class CameraController(QObject):
    frame = Signal(object, float)  # engine.live.LiveFrame, output fps
    failed = Signal(str)
    stopped = Signal()
    _posted = Signal()

    def __init__(self, parent, models, bridge):
        super().__init__(parent)
        self.models, self.bridge = models, bridge
        self.runner = None
        self.source = None
        self._lock = threading.Lock()
        self._latest = None
        self._waiting = False
        self._closing = False
        self._posted.connect(self._deliver)
        self._starter = None

    def start(self, source):
        """Open the source and start on a worker (opening a camera and building MediaPipe take a moment)."""
        from app.workers import run_task

        def open_and_run(ctx):
            from engine.live import FrameSource, LivePipeline, LiveRunner

            src = FrameSource(source)
            try:
                ctx.check()
                pipeline = LivePipeline(self.models.inverter(), edit=self.bridge.edit_function())
            except BaseException:
                src.close()
                raise
            return LiveRunner(src, pipeline, self._on_frame, self._on_error, self._on_end)

        def started(runner):
            if self._closing:
                runner.source.close()
                runner.pipeline.close()
                return
            self.runner = runner.start()

        self._starter = run_task(open_and_run, done=started, failed=self._fail)

    def _fail(self, msg):
        if not self._closing:
            self.failed.emit(msg)

    def stop(self):
        self._closing = True
        if self._starter is not None:
            self._starter.cancel()
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.stop()
            runner.source.close()
            runner.pipeline.close()

    # --- called on the runner's threads ---
    def _on_frame(self, lf):
        with self._lock:
            self._latest = lf
            if self._waiting:
                return
            self._waiting = True
        try:
            self._posted.emit()
        except RuntimeError:
            pass

    def _on_error(self, e):
        if not self._closing:
            try:
                self.failed.emit(describe_error(e))
            except RuntimeError:
                pass

    def _on_end(self):
        if not self._closing:
            try:
                self.stopped.emit()
            except RuntimeError:
                pass

    # --- UI thread ---
    def _deliver(self):
        with self._lock:
            lf, self._latest = self._latest, None
            self._waiting = False
        if lf is not None and not self._closing and self.runner is not None:
            self.frame.emit(lf, self.runner.fps())
