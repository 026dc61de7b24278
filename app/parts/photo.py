"""The photo part: a photo (a file or a camera snapshot) is aligned, encoded (and refined if asked) into W+, edited
with the sliders, and shown with the edited face pasted back into it; the pasted result can be saved."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal

from app import jobs
from app.editor import Source
from app.panels import PhotoPanel
from app.parts.task_part import TaskPart
from app.workers import run_task

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"


class PhotoPart(TaskPart):
    photoReady = Signal()  # a photo was aligned, inverted and is shown pasted back

    def __init__(self, editor, display, parent=None):
        super().__init__(parent)
        self.editor, self.display = editor, display
        self.panel = PhotoPanel()
        self.panel.openRequested.connect(self.choose_photo)
        self.panel.cancelRequested.connect(self.cancel)
        self.panel.saveRequested.connect(self.save_result)
        self.panel.refineRequested.connect(self.refine)
        self.panel.tuneRequested.connect(self.tune)
        self.panel.mode.set_mode(editor.edit_mode)
        self.panel.mode.modeChosen.connect(editor.set_edit_mode)
        editor.editModeChanged.connect(self._on_mode)
        self.panel.setEnabled(False)
        self._task = None
        self._ready_version: int | None = None  # photoReady fires on the first pasted frame at least this new
        editor.modelLoading.connect(self._cancel_task)
        editor.modelsChanged.connect(lambda _m: self.panel.setEnabled(True))
        editor.sourceChanged.connect(self._on_source)
        display.frameShown.connect(self._on_frame)

    def choose_photo(self):
        if self.editor.models is None:
            self.editor.notify("open a model first")
            return
        path = self.editor.places.ask_open(self.parent(), "Open photo", "photos", IMAGE_FILTER)
        if path:
            self.open_photo(path)

    def open_photo(self, source, name: str | None = None):
        """Align, encode (and refine if asked) a photo path or RGB array; then edit it pasted back."""
        ed = self.editor
        if ed.models is None:
            ed.notify("open a model first")
            return
        self._cancel_task()
        ed.set_camera(False)
        if isinstance(source, (str, Path)):
            ed.places.remember_recent("photos", str(source))
            name = name or Path(source).name
        label = name or "snapshot"
        refine = self.panel.refine.isChecked()
        steps = self.panel.steps.value()
        self.panel.set_running(True, f"{label}: aligning…")
        self.panel.info.setText(f"Working on {label}…")
        models = ed.models

        def done(photo: jobs.PhotoState):
            self._task = None
            self.panel.set_running(False)
            if ed.models is not models:  # another model was opened meanwhile
                return
            photo.name = label
            self._edit(photo)
            if refine:
                self.refine(steps)

        def failed(msg):
            self._task = None
            self.panel.set_running(False)
            self.panel.info.setText(msg)
            ed.notify(msg, "error", 8000)

        def cancelled():
            self._task = None
            self.panel.set_running(False)
            self.panel.info.setText("Cancelled.")

        self._task = ed.track(run_task(jobs.encode_photo, models, source, done=done, failed=failed,
                                       cancelled=cancelled, progress=self.panel.set_progress))

    def _edit(self, photo):
        ed = self.editor
        ed.focus(Source.PHOTO)
        ed.remember_photo(photo)
        # A photo starts fresh: no sliders, ψ = 1 (truncation would pull the likeness toward the average face).
        ed.session.set_base(photo.ws, photo.name, keep_edits=False, kind="photo", photo=photo.name,
                            photo_id=id(photo))
        self._ready_version = ed.session.version
        ed.discard_older_frames()
        q = photo.quality
        self.panel.info.setText(
            f"{photo.name}: {photo.rgb.shape[1]}×{photo.rgb.shape[0]}, "
            f"{photo.faces} face{'s' if photo.faces != 1 else ''} found" + (f" · {q}" if q else "")
        )
        self.panel.save.setEnabled(True)
        self.panel.refine_now.setEnabled(True)
        self.panel.tune.setEnabled(True)

    def refine(self, steps: int | None = None):
        ed = self.editor
        photo = ed.photo
        if photo is None or ed.models is None:
            return
        steps = int(steps or self.panel.steps.value())
        self.panel.set_running(True, "refining…")

        def done(ws):
            self._task = None
            self.panel.set_running(False)
            if ed.photo is photo and ed.source is Source.PHOTO:
                photo.ws = ws
                ed.session.set_base(ws, f"{photo.name} refined", keep_edits=True, kind="photo", photo=photo.name,
                                    photo_id=id(photo))
                self.panel.info.setText(f"{photo.name}: refined ({steps} steps)")

        def failed(msg):
            self._task = None
            self.panel.set_running(False)
            ed.notify(f"refinement failed: {msg}", "error")

        def cancelled():
            self._task = None
            self.panel.set_running(False)

        self._task = ed.track(run_task(jobs.refine_photo, ed.models, photo, steps, done=done, failed=failed,
                                       progress=self.panel.set_progress, cancelled=cancelled))

    def tune(self, steps: int | None = None):
        """Tune a copy of the generator to the face being edited; its renders then replace the model's for it."""
        ed = self.editor
        photo = ed.photo
        if photo is None or ed.models is None:
            return
        steps = int(steps or self.panel.tune_steps.value())
        self.panel.set_running(True, "tuning…")

        def done(G):
            self._task = None
            self.panel.set_running(False)
            photo.tuned = G
            if ed.photo is photo and ed.source is Source.PHOTO:
                self._on_source(Source.PHOTO)  # the post-process now renders with the tuned copy
                ed.session.request_render()
                self.panel.info.setText(f"{photo.name}: {photo.quality}")

        def failed(msg):
            self._task = None
            self.panel.set_running(False)
            ed.notify(f"tuning failed: {msg}", "error")

        def cancelled():
            self._task = None
            self.panel.set_running(False)

        self._task = ed.track(run_task(jobs.tune_photo, ed.models, photo, steps, done=done, failed=failed,
                                       progress=self.panel.set_progress, cancelled=cancelled))

    def save_result(self, path=None):
        ed, frame = self.editor, self.display.last_frame
        if ed.source is not Source.PHOTO or frame is None or "pasted" not in frame.extra:
            ed.notify("open a photo first; the result is the edited face pasted back into it")
            return
        if path is None:
            stem = Path(ed.photo.name).stem
            path = ed.places.ask_save(self.parent(), "Save result", "photos", f"{stem}-edited.png", IMAGE_FILTER)
        if path:
            ed.write_image(frame.extra["pasted"], path)

    def _on_mode(self, mode: str):
        self.panel.mode.set_mode(mode)
        if self.editor.source is Source.PHOTO:
            self._on_source(Source.PHOTO)
            self.editor.session.request_render()

    def _on_source(self, source):
        """While a photo is edited, every rendered frame becomes the edited photo (on the render worker, so that the
        UI thread only shows the result): transfer carries the edit over to the photo's own pixels; regenerate pastes
        the render back. A photo tuned to its face renders with its tuned copy of the generator (unless a stylized
        model renders instead)."""
        if source is Source.CAMERA:
            return
        ed = self.editor
        s, photo = ed.session, ed.photo
        if source is not Source.PHOTO or photo is None:
            s.set_postprocess(None)
            return
        from engine.edit.transfer import EditTransfer

        mode, tuned, models = ed.edit_mode, photo.tuned, ed.models
        transfer = EditTransfer()
        befores: dict[str, object] = {}  # render of the photo's own codes, per model: what an edit is compared with

        def render(G, ws):
            from engine.render import to_uint8

            return to_uint8(G.synthesis(ws, noise_mode="const"))[0]

        def edited(name, G, image, ws):
            from engine.faces import paste_back

            if tuned is not None and name == "main" and G is models.G:  # tuned from the model: a style wins over it
                G, image = tuned, render(tuned, ws)
            if mode == "regenerate":
                return paste_back(photo.rgb, image, photo.aligned)
            key = (name, id(photo.ws))  # a refine replaces the photo's codes
            if key not in befores or befores[key][0] is not G:  # a style (or its strength) changed what renders
                befores[key] = (G, render(G, photo.ws))
            return transfer(photo.rgb, photo.aligned, befores[key][1], image)

        def post(frame):
            # The generator that rendered this frame, not the one set since: before and after from one model.
            out = {"pasted": edited("main", frame.generators.get("main", ed.generator), frame.main, frame.ws)}
            if frame.teacher is not None and models.teacher is not None:
                out["pasted_teacher"] = edited("teacher", models.teacher, frame.teacher, frame.ws)
            return out

        s.set_postprocess(post)

    def _on_frame(self, frame):
        if self._ready_version is not None and "pasted" in frame.extra and self.editor.source is Source.PHOTO \
                and frame.version >= self._ready_version:
            self._ready_version = None
            self.photoReady.emit()

    def restore(self, settings):
        self.panel.refine.setChecked(settings.value("photo/refine", False, bool))
        self.panel.steps.setValue(settings.value("photo/steps", 100, int))
        self.panel.tune_steps.setValue(settings.value("photo/tune_steps", 100, int))

    def save(self, settings):
        settings.setValue("photo/refine", self.panel.refine.isChecked())
        settings.setValue("photo/steps", self.panel.steps.value())
        settings.setValue("photo/tune_steps", self.panel.tune_steps.value())

