"""The viewport's part: decides what the edit session renders after each change (the model, or its teacher too; nothing
while the camera runs) and shows the frames it finishes (the model's render, its teacher's beside it, or the edited
face pasted back into the photo), with render time and frame rate in the status bar. The camera's live frames come
in through `show_live`."""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel

from app.editor import MAIN, TEACHER, Source
from app.widgets import Pane


class DisplayPart(QObject):
    frameShown = Signal(object)  # engine.edit.Frame, once it is on screen
    showTeacherChanged = Signal(bool)

    def __init__(self, editor, view, parent=None):
        super().__init__(parent)
        self.editor, self.view = editor, view
        self.show_teacher = False
        self.show_original = True
        self.last_frame = None
        self.status_render = QLabel("")
        self.status_fps = QLabel("")
        self._frame_times: list[float] = []
        self._source = editor.source
        editor.signals.frameRendered.connect(self._on_frame)
        editor.signals.renderFailed.connect(lambda msg: editor.notify(msg, "error"))
        editor.sourceChanged.connect(self._on_source)
        editor.modelsChanged.connect(self._on_models)
        editor.teacherChanged.connect(self.request_render)

    # --- asking for renders ----------------------------------------------------------------------------------------
    def request_render(self, *_):
        """Set what the session renders after each change, and ask for a frame of its state now."""
        s = self.editor.session
        if s is None:
            return
        # While the camera runs it renders every frame itself; the session's renders would only compete.
        live = self.editor.source is not Source.CAMERA
        which = None if self.show_teacher and TEACHER in s.models else MAIN
        s.render_on_change(live, which)
        if live:
            s.request_render(which=which)

    def set_show_teacher(self, on: bool) -> None:
        """The teacher's render of the same W+ beside the student's (remembered for the next model)."""
        on = bool(on) and self.editor.models is not None and self.editor.models.teacher is not None
        self.editor.settings.setValue("view/side_by_side", on)
        self._show_teacher(on)
        self.request_render()

    def _show_teacher(self, on: bool) -> None:
        self.show_teacher = on
        self.showTeacherChanged.emit(on)

    def set_show_original(self, on: bool) -> None:
        self.show_original = bool(on)
        self.refresh()

    def _on_models(self, models):
        if models.teacher is None and self.show_teacher:
            self.set_show_teacher(False)  # as unticking the box does: remembered
        self._show_teacher(self.editor.settings.value("view/side_by_side", False, bool) and models.teacher is not None)
        self.editor.session.render_on_change(True, None if self.show_teacher else MAIN)

    def _on_source(self, source):
        camera_changed = (self._source is Source.CAMERA) != (source is Source.CAMERA)
        self._source = source
        self.refresh()
        if camera_changed:
            self.request_render()

    # --- showing frames --------------------------------------------------------------------------------------------
    def _on_frame(self, frame):
        ed = self.editor
        if ed.source is Source.CAMERA or frame.version < ed.min_version:
            return
        self.last_frame = frame
        now = time.monotonic()
        self._frame_times = [t for t in self._frame_times if now - t < 1.0] + [now]
        self.refresh()
        ms = frame.main_ms
        if ms > 0:  # 0: the session served the image from its cache (e.g. undo to a seen state)
            txt = f"render {ms:.1f} ms"
            teacher_ms = frame.ms.get(TEACHER, 0.0)
            if self.show_teacher and frame.teacher is not None and teacher_ms > 0:
                txt += f" · teacher {teacher_ms:.1f} ms"
            self.status_render.setText(txt)
        n = len(self._frame_times)
        if n >= 3:  # frames are streaming (a drag): the rate they reach the screen
            fps = (n - 1) / max(self._frame_times[-1] - self._frame_times[0], 1e-6)
            self.status_fps.setText(f"{fps:.0f} fps")
        elif ms > 0:  # a single frame: the rate this render time allows
            self.status_fps.setText(f"up to {1000 / ms:.0f} fps")
        self.frameShown.emit(frame)

    def refresh(self, *_):
        """Lay out the last frame again (after a change of what is shown beside it)."""
        frame, ed = self.last_frame, self.editor
        if frame is None or ed.models is None or ed.source is Source.CAMERA:
            return
        G, T = ed.models.G, ed.models.teacher
        teacher = frame.teacher if self.show_teacher else None
        panes = []
        if ed.source is Source.PHOTO and "pasted" in frame.extra:
            if self.show_original:
                panes.append(Pane("Original", ed.photo.rgb))
            if teacher is not None and "pasted_teacher" in frame.extra:
                panes.append(Pane("Teacher · edited", frame.extra["pasted_teacher"]))
                panes.append(Pane("Student · edited", frame.extra["pasted"]))
            else:
                panes.append(Pane("Edited", frame.extra["pasted"]))
        else:
            if teacher is not None and T is not None:
                panes.append(Pane(f"Teacher · StyleGAN2 · {T.resolution} px", teacher))
            kind = "Student · BlazeStyleGAN" if G.is_student else "StyleGAN2"
            style = " · stylized" if ed.generator is not G else ""
            panes.append(Pane(f"{kind} · {G.resolution} px{style}", frame.main))
        self.view.set_panes(panes)

    def show_live(self, lf, fps: float) -> None:
        """A processed camera frame (engine.live.LiveFrame) and the rate they arrive at."""
        panes = [Pane("Camera", lf.frame)] if self.show_original else []
        panes.append(Pane("Edited live" if lf.face else "Edited live · no face in view", lf.output))
        self.view.set_panes(panes)
        self.status_fps.setText(f"{fps:.1f} fps")
        if lf.timings:
            self.status_render.setText(" · ".join(f"{k} {v:.0f}" for k, v in lf.timings.items()) + " ms")
