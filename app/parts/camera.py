"""The camera part: a webcam (or a video file standing in for one) edited live with the current sliders, its panel,
and a snapshot that goes on to photo editing.

`CameraController` runs `engine.live.LiveRunner` and hands its newest frame to the UI thread through a one-slot
mailbox: the runner's thread stores the newest frame and posts a signal only when the UI has taken the previous one,
so a busy UI skips frames instead of queueing them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.editor import Source
from app.panels import CameraPanel
from app.workers import describe_error, run_task

VIDEO_FILTER = "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v);;All files (*)"


class CameraPart(QObject):
    liveFrame = Signal(object, float)  # engine.live.LiveFrame, output fps
    snapshotTaken = Signal(object)  # RGB frame to edit as a photo

    def __init__(self, editor, parent=None):
        super().__init__(parent)
        self.editor = editor
        self.panel = CameraPanel()
        self.panel.startRequested.connect(self.start_camera)
        self.panel.stopRequested.connect(self.stop_camera)
        self.panel.snapshotRequested.connect(self.snapshot)
        self.panel.refreshRequested.connect(self.probe_cameras)
        self.panel.openVideoRequested.connect(self.choose_video)
        self.panel.mode.set_mode(editor.edit_mode)
        self.panel.mode.modeChosen.connect(editor.set_edit_mode)
        editor.editModeChanged.connect(self._on_mode)
        editor.generatorChanged.connect(self._on_generator)
        self.panel.setEnabled(False)
        self.live: CameraController | None = None  # while the camera runs
        self._live_frame = None
        self._probed = False
        editor.modelsChanged.connect(lambda _m: self.panel.setEnabled(True))
        editor.sourceChanged.connect(self._on_source)

    def shown(self):
        """The panel came to the front: look for cameras the first time."""
        if not self._probed:
            self.probe_cameras()

    def probe_cameras(self):
        from engine.live import probe_cameras

        self._probed = True
        panel = self.panel
        panel.status.setText("Looking for cameras…")
        keep = panel.source.currentData()
        videos = [(panel.source.itemText(i), panel.source.itemData(i)) for i in range(panel.source.count())
                  if isinstance(panel.source.itemData(i), str)]

        def done(indices):
            panel.set_sources([(f"Camera {i}", i) for i in indices] + videos, keep)
            panel.status.setText(f"{len(indices)} camera{'s' if len(indices) != 1 else ''} found." if indices
                                 else "No camera found (connect one and press ⟳).")

        self.editor.track(run_task(lambda ctx: probe_cameras(), done=done,
                                   failed=lambda m: panel.status.setText(f"camera search failed: {m}")))

    def choose_video(self):
        path = self.editor.places.ask_open(self.parent(), "Open video as camera", "videos", VIDEO_FILTER)
        if path:
            self.use_video(path)

    def use_video(self, path):
        self.panel.add_video(path, f"Video: {Path(path).name}")
        self.start_camera(path)

    def toggle(self):
        if self.live is not None:
            self.stop_camera()
        else:
            self.start_camera(self.panel.source.currentData())

    def start_camera(self, source):
        ed = self.editor
        if ed.models is None:
            return
        if source is None:
            self.panel.set_running(False)
            msg = "No camera available. Connect a camera and press ⟳, or use “Open video as camera…”."
            self.panel.status.setText(msg)
            ed.notify(msg, "error", 8000)
            return
        self.stop_camera()
        self.live = CameraController(self, ed.models, ed.session.edit_latent, ed.edit_mode, ed.generator)
        self.live.frame.connect(self._on_frame)
        self.live.failed.connect(self._on_failed)
        self.live.stopped.connect(self._on_stopped)
        ed.focus(Source.CAMERA)
        self.panel.status.setText("Starting…")
        self.panel.set_running(True)
        ed.set_camera(True)
        self.live.start(source)

    def stop_camera(self):
        live, self.live = self.live, None
        if live is None:
            return
        live.stop()
        self.panel.set_running(False)
        self.panel.status.setText("Stopped.")
        self.editor.set_camera(False)

    def snapshot(self):
        if self.live is None or self._live_frame is None:
            self.editor.notify("start the camera first")
            return
        frame = self._live_frame.frame.copy()
        self.stop_camera()
        self.snapshotTaken.emit(frame)

    def _on_mode(self, mode: str):
        self.panel.mode.set_mode(mode)
        if self.live is not None:
            self.live.set_mode(mode)

    def _on_generator(self, G):
        if self.live is not None:
            self.live.set_generator(G)

    def _on_source(self, source):
        if source is not Source.CAMERA and self.live is not None:  # another part took over what is edited
            self.stop_camera()

    def _on_frame(self, lf, fps: float):
        if self.live is None:
            return
        self._live_frame = lf
        self.panel.fps.setText(f"{fps:.1f} fps")
        self.panel.status.setText("Live." if lf.face else "Live — no face in view.")
        self.liveFrame.emit(lf, fps)

    def _on_failed(self, msg: str):
        self.stop_camera()
        self.panel.status.setText(msg)
        self.editor.notify(msg, "error", 8000)

    def _on_stopped(self):
        if self.live is not None:
            self.stop_camera()


class CameraController(QObject):
    frame = Signal(object, float)  # engine.live.LiveFrame, output fps
    failed = Signal(str)
    stopped = Signal()
    _posted = Signal()

    def __init__(self, parent, models, edit, mode: str = "transfer", G=None):
        """edit: ws -> edited ws, called on the runner's threads for every frame (the editor's current sliders);
        mode: "transfer" or "regenerate" (see engine.live.LivePipeline); G: what renders the faces (default: the
        model; the encoder is always the model's)."""
        super().__init__(parent)
        self.models, self.edit, self.mode, self.G = models, edit, mode, G
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

        def open_and_run(ctx):
            from engine.live import FrameSource, LivePipeline, LiveRunner

            src = FrameSource(source)
            try:
                ctx.check()
                pipeline = LivePipeline(self.models.inverter(), edit=self.edit, mode=self.mode, G=self.G)
            except BaseException:
                src.close()
                raise
            return LiveRunner(src, pipeline, self._on_frame, self._on_error, self._on_end)

        def started(runner):
            if self._closing:
                runner.source.close()
                runner.pipeline.close()
                return
            if self.G is not None:  # a style may have been turned on or off while the camera opened
                runner.pipeline.G = self.G
            self.runner = runner.start()

        self._starter = run_task(open_and_run, done=started, failed=self._fail)

    def _fail(self, msg):
        if not self._closing:
            self.failed.emit(msg)

    def set_mode(self, mode: str) -> None:
        """Switch transfer/regenerate while running (the pipeline reads it every frame)."""
        self.mode = mode
        if self.runner is not None:
            self.runner.pipeline.mode = mode

    def set_generator(self, G) -> None:
        """Render with G from the next frame on (the pipeline reads it every frame)."""
        self.G = G
        if self.runner is not None:
            self.runner.pipeline.G = G

    def stop(self):
        self._closing = True
        if self._starter is not None:
            self._starter.cancel()
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.stop()
            runner.source.close()
            runner.pipeline.close()

    # --- called on the runner's threads ----------------------------------------------------------------------------
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

    # --- UI thread -------------------------------------------------------------------------------------------------
    def _deliver(self):
        with self._lock:
            lf, self._latest = self._latest, None
            self._waiting = False
        if lf is not None and not self._closing and self.runner is not None:
            self.frame.emit(lf, self.runner.fps())
