"""What the editor's parts share: the loaded models (and what renders in the model's place: a stylized stand-in, set
by `render_with`), the edit session (its events as Qt signals), what is being edited (`Source`), the photos that undo
can return to, and the window's services (messages, settings, remembered places, background tasks).

Parts observe this object and the session through signals and change them through their public methods; none of
them calls into another part. What is being edited is not set by hand: it follows the session's state (its base
latent came from a seed, a latent file or a photo) unless the camera runs.
"""

from __future__ import annotations

from enum import Enum

from PySide6.QtCore import QObject, Signal

from app.places import Places
from app.session_signals import SessionSignals

MAIN, TEACHER = "main", "teacher"  # the session's model names
PHOTO_MEMORY = 8  # photos kept for undo to return to


class Source(Enum):
    """What the sliders edit: a seed's latent, a loaded latent, an inverted photo, or the live camera."""

    SEED = "seed"
    LATENT = "latent"
    PHOTO = "photo"
    CAMERA = "camera"


class Editor(QObject):
    modelLoading = Signal()  # a model starts loading: work for the current one is moot
    modelsChanged = Signal(object)  # jobs.LoadedModels: a new model and a fresh edit session
    teacherChanged = Signal(object)  # the teacher added to the current model (same edits, a new session)
    sourceChanged = Signal(object)  # Source; also when another photo is edited
    focusRequested = Signal(object)  # Source whose controls should come to the front
    editModeChanged = Signal(str)  # "transfer" | "regenerate": how photos and the camera show an edit
    generatorChanged = Signal(object)  # what renders the edits now: the model, or a stand-in (a stylization)
    notified = Signal(str, str, int)  # text, level ("info" | "error"), ms: a message for the user
    statusShown = Signal(str, int)  # text, ms: a passing word in the status bar only

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.places = Places(settings, self)
        self.signals = SessionSignals(self)
        self.models = None  # jobs.LoadedModels
        self.source = Source.SEED
        self.photo = None  # jobs.PhotoState being edited (Source.PHOTO)
        # Frames older than this show a state from before the last switch of what is edited (seed, photo, latent,
        # undo): skipped, so a late frame never flashes the previous picture.
        self.min_version = 0
        self._photos: dict[int, object] = {}  # by id, so undo can go back to an earlier photo
        self._camera = False
        self._tasks: set = set()
        # Photos and the camera: the person's own pixels changed by the edit (transfer), or the generator's rendition
        # pasted in (regenerate; what a stylized model needs).
        mode = settings.value("edit/mode", "transfer", str)
        self.edit_mode = mode if mode in ("transfer", "regenerate") else "transfer"
        self.signals.stateChanged.connect(self._follow_state)

    @property
    def session(self):
        """The engine.edit.EditSession of the loaded model (None before one is loaded)."""
        return self.signals.session

    @property
    def generator(self):
        """What renders the model's edits (seeds, photos, the camera): the loaded model, or a generator of its W space
        standing in for it (`render_with`). Safe to read on the render worker."""
        s = self.session
        return s.models[MAIN] if s is not None else None

    # --- models ----------------------------------------------------------------------------------------------------
    def begin_model_load(self) -> None:
        self.set_camera(False)
        self.modelLoading.emit()

    def set_models(self, models) -> None:
        """A new model: a new edit session for it (and its teacher), announced to the parts."""
        from engine.edit import EditSession

        named = {MAIN: models.G} if models.teacher is None else {MAIN: models.G, TEACHER: models.teacher}
        session = EditSession(named, models.directions)
        session.render_on_change(True, MAIN)  # an editor shows every change (the display part refines what renders)
        old = self.session
        self.signals.attach(session)
        if old is not None:
            old.close()
        self.models = models
        self.min_version = 0  # a new session counts its versions from 0 again
        self._photos.clear()
        self._camera = False
        self._follow_state(self.session.state)
        self.modelsChanged.emit(models)

    def set_teacher(self, teacher) -> None:
        """Render the model's teacher too: a session with both that carries the current state over (history
        restarts there)."""
        old = self.session
        self.models.teacher = teacher
        self.signals.attach(old.with_models({MAIN: old.models[MAIN], TEACHER: teacher}))  # keeps a stand-in
        old.close()
        self.teacherChanged.emit(teacher)

    def render_with(self, G=None) -> None:
        """Render seeds, photos and the camera with G (a stylized model of the same W space, or a blend of one)
        instead of the loaded model; None: the loaded model again. The edits and their history stay."""
        if self.session is None:
            return
        G = self.models.G if G is None else G
        if G is not self.generator:
            self.session.set_model(MAIN, G)
            self.generatorChanged.emit(G)

    # --- what is edited --------------------------------------------------------------------------------------------
    def remember_photo(self, photo) -> None:
        """Keep a photo that a base latent will name by `photo_id=id(photo)`, so that undo can return to it."""
        self._photos[id(photo)] = photo
        while len(self._photos) > PHOTO_MEMORY:
            self._photos.pop(next(iter(self._photos)))

    def set_edit_mode(self, mode: str) -> None:
        from engine.edit.transfer import check_mode

        mode = check_mode(mode)
        if mode != self.edit_mode:
            self.edit_mode = mode
            self.settings.setValue("edit/mode", mode)
            self.editModeChanged.emit(mode)

    def set_camera(self, on: bool) -> None:
        self._camera = bool(on)
        if self.session is not None:
            self._follow_state(self.session.state)

    def _follow_state(self, state) -> None:
        info = state.base_info
        photo = self._photos.get(info.get("photo_id")) if info.get("kind") == "photo" else None
        if self._camera:
            source = Source.CAMERA
        elif "seed" in info or info.get("w_avg"):  # a new session starts at the average face, before its first seed
            source = Source.SEED
        elif photo is not None:
            source = Source.PHOTO
        else:  # a latent file, or a photo forgotten since
            source = Source.LATENT
        if (source, photo) != (self.source, self.photo):
            self.source, self.photo = source, photo
            self.sourceChanged.emit(source)

    def focus(self, source: Source) -> None:
        """Bring the controls of `source` to the front (the user chose to edit it)."""
        self.focusRequested.emit(source)

    def discard_older_frames(self) -> None:
        """What is edited just switched: frames of earlier versions are stale."""
        if self.session is not None:
            self.min_version = self.session.version

    def undo(self) -> bool:
        if self.session is None or not self.session.undo():
            return False
        self.discard_older_frames()
        return True

    def redo(self) -> bool:
        if self.session is None or not self.session.redo():
            return False
        self.discard_older_frames()
        return True

    # --- services --------------------------------------------------------------------------------------------------
    def notify(self, text: str, level: str = "info", ms: int = 5000) -> None:
        self.notified.emit(text, level, ms)

    def status(self, text: str, ms: int = 2000) -> None:
        self.statusShown.emit(text, ms)

    def write_image(self, rgb, path) -> None:
        """Save a picture (as PNG when the name has no suffix), saying where, or why not."""
        from pathlib import Path

        from engine.render import save_image

        path = str(path)
        if not Path(path).suffix:
            path += ".png"
        try:
            save_image(rgb, path)
            self.notify(f"saved {Path(path).name}")
        except Exception as e:  # noqa: BLE001
            self.notify(str(e), "error")

    def track(self, task):
        """Keep a background task to cancel when the window closes."""
        self._tasks.add(task)
        task.signals.finished.connect(lambda: self._tasks.discard(task))
        return task

    def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.session is not None:
            self.session.close()
            self.signals.attach(None)
