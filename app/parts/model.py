"""The model part: opening a model (with the teacher, directions and encoder found beside it), its teacher and its
encoder later on, and the model panel that names them."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QLabel, QProgressDialog

from app import jobs
from app.panels import ModelPanel
from app.workers import run_task

MODEL_FILTER = "Models (*.safetensors *.pkl *.pt *.pth);;All files (*)"


class ModelPart(QObject):
    modelLoaded = Signal()
    modelFailed = Signal(str)

    def __init__(self, editor, view, parent=None):
        super().__init__(parent)
        self.editor, self.view = editor, view
        self.panel = ModelPanel()
        self.panel.openModel.connect(self.choose_model)
        self.panel.openTeacher.connect(self.choose_teacher)
        self.status_model = QLabel("")
        editor.modelsChanged.connect(self._show_models)
        editor.teacherChanged.connect(lambda _t: self._show_models(editor.models))
        self._show_models(None)

    def choose_model(self):
        path = self.editor.places.ask_open(self.parent(), "Open model", "models", MODEL_FILTER)
        if path:
            self.open_model(path)

    def choose_teacher(self):
        if self.editor.models is None:
            self.editor.notify("open a student model first")
            return
        path = self.editor.places.ask_open(self.parent(), "Open teacher model", "models", MODEL_FILTER, remember=False)
        if path:
            self.open_teacher(path)

    def open_default(self, **kw) -> bool:
        """The bundled student (with its teacher), else the model used last; an empty state with 'Open model…'
        when there is neither."""
        from engine.assets import STUDENT

        last = self.editor.settings.value("model/last", "", str)
        path = STUDENT if STUDENT.exists() else (Path(last) if last and Path(last).exists() else None)
        if path is None:
            self.view.set_empty(True)
            self.editor.notify("the bundled model is missing; open a model file to start", "info", 8000)
            return False
        self.open_model(str(path), **kw)
        return True

    def open_model(self, path, teacher=None, encoder=None, directions=None):
        ed = self.editor
        ed.begin_model_load()
        self.view.set_busy(f"Loading {Path(path).name}…")
        self.view.set_empty(False)
        dlg = QProgressDialog(f"Loading {Path(path).name}…", "Hide", 0, 0, self.parent())
        dlg.setWindowTitle("Opening model")
        dlg.setMinimumDuration(600)  # only big models stay long enough to show it
        dlg.setWindowModality(Qt.NonModal)
        dlg.setAutoClose(True)

        def done(models):
            dlg.reset()
            self.view.set_busy("")
            ed.set_models(models)
            G = models.G
            ed.places.remember_recent("models", G.source_path)
            ed.settings.setValue("model/last", G.source_path)
            if models.note:
                ed.notify(models.note, "info", 7000)
            self.modelLoaded.emit()

        def failed(msg):
            dlg.reset()
            self.view.set_busy("")
            if ed.models is None:
                self.view.set_empty(True)
            ed.notify(f"could not open the model: {msg}", "error", 8000)
            self.modelFailed.emit(msg)

        ed.track(run_task(jobs.load_models, str(path), teacher, encoder, directions, done=done, failed=failed,
                          progress=lambda f, t: dlg.setLabelText(t) if t else None))

    def open_teacher(self, path):
        ed = self.editor

        def done(T):
            ed.set_teacher(T)
            self.panel.side_by_side.setChecked(True)
            ed.notify(f"teacher loaded: {Path(path).name}")

        ed.track(run_task(jobs.load_teacher_for, ed.models.G, path, done=done,
                          failed=lambda m: ed.notify(f"could not open the teacher: {m}", "error", 8000)))

    def choose_encoder(self):
        if self.editor.models is None:
            return
        path = self.editor.places.ask_open(self.parent(), "Open encoder", "models", "Encoders (*.safetensors)",
                                           remember=False)
        if path:
            self.open_encoder(path)

    def open_encoder(self, path):
        ed, models = self.editor, self.editor.models

        def done(E):
            models.set_encoder(E)
            ed.notify(f"encoder loaded: {Path(path).name}; photos and the camera now start from its codes")

        ed.track(run_task(jobs.load_encoder_for, models.G, path, done=done,
                          failed=lambda m: ed.notify(f"could not open the encoder: {m}", "error", 8000)))

    def show_side_by_side(self, on: bool) -> None:
        box = self.panel.side_by_side
        box.blockSignals(True)
        box.setChecked(on)
        box.blockSignals(False)

    def _show_models(self, models):
        if models is None:
            self.panel.set_model("No model loaded", None, False)
            self.panel.open_teacher.setEnabled(False)
            self.status_model.setText("no model")
            self.view.set_empty(True)
            return
        G, T = models.G, models.teacher
        name = Path(G.source_path).name
        kind = "BlazeStyleGAN student" if G.is_student else "StyleGAN2"
        self.panel.set_model(
            f"<b>{name}</b><br><span style='color:#8b8e94'>{kind} · {G.resolution} px · {G.num_ws} W+ layers</span>",
            f"teacher: {Path(T.source_path).name}" if T is not None else None,
            T is not None,
        )
        self.panel.open_teacher.setEnabled(G.is_student)
        self.status_model.setText(f"{name} · {G.resolution} px")
        self.view.set_empty(False)
