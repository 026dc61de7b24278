"""The editor's main window: it composes the parts (app/parts), the menus, the viewport and the status bar.

Each part owns its panel and connects it to the engine: model, display (the viewport's frames), seeds, edits
(direction sliders and mixing), photo, camera, files (saving, opening, recent files, drag & drop, export), style
(stylization, a stylized model rendering in the model's place). They share the `Editor` (models, edit session, what is
edited) and observe it and the session through signals; the window only wires one part's requests to another's public
methods and keeps the menus in step. Everything heavy runs elsewhere: renders on the EditSession's worker, loading,
inversion, directions, stylization and export on `Task`s, the webcam on `LiveRunner`'s threads.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMessageBox, QScrollArea, QSplitter, QVBoxLayout, QWidget

from app.editor import Editor, Source
from app.parts.camera import CameraPart
from app.parts.display import DisplayPart
from app.parts.edits import EditsPart
from app.parts.files import FilesPart
from app.parts.model import ModelPart
from app.parts.photo import PhotoPart
from app.parts.seeds import SeedsPart
from app.parts.style import StylePart
from app.widgets import FitTabs, ImageView

SHORTCUTS = [
    ("Ctrl+O", "Open photo"), ("Ctrl+Shift+O", "Open model"), ("Ctrl+S", "Save image"),
    ("Ctrl+Shift+E", "Save pasted result"), ("Ctrl+Shift+S / Ctrl+L", "Save / load latent"),
    ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo"), ("R / N / P", "Random, next, previous seed"),
    ("Ctrl+B", "Back to seeds"), ("M", "Toggle style mixing"), ("T", "Teacher | student side by side"),
    ("O", "Show the original photo"), ("Ctrl+0", "Reset all sliders"), ("F2", "Rename a direction"),
    ("Ctrl+Shift+F / G", "Compute SeFa / GANSpace directions"), ("Ctrl+K", "Start / stop camera"),
    ("Ctrl+Shift+K", "Camera snapshot into photo editing"), ("Ctrl+Shift+W", "Export slider sweep"),
    ("Ctrl+E", "Export for mobile"), ("F11", "Full screen"),
]


class MainWindow(QMainWindow):
    frameShown = Signal()  # after a rendered frame reached the viewport
    photoReady = Signal()  # after a photo was aligned, inverted and shown pasted back
    modelLoaded = Signal()
    modelFailed = Signal(str)

    def __init__(self, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.settings = settings or QSettings("BlazeStudio", "BlazeStudio")
        self.setWindowTitle("BlazeStudio")
        self.setAcceptDrops(True)
        self.editor = ed = Editor(self.settings, self)
        self.view = ImageView()
        self.model = ModelPart(ed, self.view, self)
        self.display = DisplayPart(ed, self.view, self)
        self.display.frameShown.connect(lambda _frame: self.frameShown.emit())
        self.seeds = SeedsPart(ed, self.display, self)
        self.edits = EditsPart(ed, self)
        self.photo = PhotoPart(ed, self.display, self)
        self.camera = CameraPart(ed, self)
        self.files = FilesPart(ed, self.display, self)
        self.stylization = StylePart(ed, self)  # not "style": QWidget.style() must stay
        self._build_ui()
        self._build_menus()
        self._connect()
        self._restore_settings()

    # ================================================================================================ composition
    def _build_ui(self):
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.setSpacing(0)
        lv.addWidget(self.view, 1)
        lv.addWidget(self.seeds.history)

        side = QWidget()
        sv = QVBoxLayout(side)
        sv.setContentsMargins(10, 4, 10, 10)
        sv.setSpacing(6)
        # What is being edited (a seed, a photo, the camera) shares one tabbed box; the sliders below act on all.
        self.source_tabs = FitTabs()
        self.source_tabs.setObjectName("sourceTabs")
        self._tab_of = {Source.SEED: self.seeds.panel, Source.PHOTO: self.photo.panel,
                        Source.CAMERA: self.camera.panel}
        for panel, title in ((self.seeds.panel, "Seed"), (self.photo.panel, "Photo"), (self.camera.panel, "Camera")):
            panel.setTitle("")
            panel.setFlat(True)
            self.source_tabs.addTab(panel, title)
        for w in (self.model.panel, self.source_tabs, self.edits.panel, self.edits.mix_panel, self.stylization.panel):
            sv.addWidget(w)
        sv.addStretch(1)
        self.side = QScrollArea()
        self.side.setObjectName("sidePanel")
        self.side.setWidgetResizable(True)
        self.side.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.side.setWidget(side)
        # Wide enough for the widest group plus the scroll bar, so nothing is ever clipped on the right.
        self.side.setMinimumWidth(max(340, side.minimumSizeHint().width() + 14))

        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.side)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setCollapsible(0, False)
        self.splitter.setSizes([1000, 360])
        self.setCentralWidget(self.splitter)

        sb = self.statusBar()
        sb.setSizeGripEnabled(True)
        for w in (self.model.status_model, self.display.status_render, self.display.status_fps):
            sb.addPermanentWidget(w)

    def _connect(self):
        ed, m, d, p, c, f = self.editor, self.model, self.display, self.photo, self.camera, self.files
        ed.notified.connect(self.notify)
        ed.statusShown.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
        ed.focusRequested.connect(lambda source: self.source_tabs.setCurrentWidget(self._tab_of[source]))
        ed.modelsChanged.connect(self._on_models)
        m.modelLoaded.connect(self.modelLoaded)
        m.modelFailed.connect(self.modelFailed)
        m.panel.sideBySideToggled.connect(d.set_show_teacher)
        d.showTeacherChanged.connect(self._show_side_by_side)
        p.photoReady.connect(self.photoReady)
        c.liveFrame.connect(d.show_live)
        c.snapshotTaken.connect(lambda rgb: p.open_photo(rgb, name="snapshot"))
        f.photoRequested.connect(p.open_photo)
        f.modelRequested.connect(m.open_model)
        f.videoRequested.connect(c.use_video)
        f.directionsRequested.connect(self.edits.open_directions)
        self.view.filesDropped.connect(f.open_paths)
        self.view.openModelRequested.connect(m.choose_model)
        self.source_tabs.currentChanged.connect(
            lambda i: c.shown() if self.source_tabs.widget(i) is c.panel else None)

    def _action(self, menu, text, slot, shortcut=None, tip=None, checkable=False):
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut) if isinstance(shortcut, str) else shortcut)
            a.setShortcutContext(Qt.WindowShortcut)
        if tip:
            a.setStatusTip(tip)
        a.setCheckable(checkable)
        if checkable:
            a.toggled.connect(slot)
        else:
            a.triggered.connect(lambda _=False: slot())
        menu.addAction(a)
        self.addAction(a)
        return a

    def _build_menus(self):
        m, d, s, e, p, c, f = self.model, self.display, self.seeds, self.edits, self.photo, self.camera, self.files
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        act = self._action
        self.act_open_photo = act(fm, "Open &photo…", p.choose_photo, QKeySequence.Open,
                                  "Open a photo to align, invert and edit")
        f.add_recent_menu("photos", fm.addMenu("Open &recent photo"))
        act(fm, "Open &model…", m.choose_model, "Ctrl+Shift+O", "Open a generator model")
        f.add_recent_menu("models", fm.addMenu("Open recent model"))
        self.act_open_teacher = act(fm, "Open &teacher…", m.choose_teacher, None,
                                    "Open the StyleGAN2 teacher to compare with the student")
        self.act_open_encoder = act(fm, "Open e&ncoder…", m.choose_encoder, None,
                                    "Open an inversion encoder trained for this model")
        act(fm, "Open video as camera…", c.choose_video, None, "Use a video file as the camera")
        fm.addSeparator()
        self.act_save_image = act(fm, "&Save image…", f.save_image, QKeySequence.Save,
                                  "Save the current picture as PNG")
        act(fm, "Save pasted &result…", p.save_result, "Ctrl+Shift+E",
            "Save the edited face pasted back into the photo")
        self.act_save_latent = act(fm, "Save &latent…", f.save_latent, "Ctrl+Shift+S",
                                   "Save the edited W+ latent (.npz)")
        self.act_load_latent = act(fm, "&Load latent…", f.choose_latent, "Ctrl+L", "Load a W+ latent (.npz)")
        fm.addSeparator()
        self.act_sweep = act(fm, "Export slider s&weep…", f.export_sweep, "Ctrl+Shift+W",
                             "Render one slider's sweep as a video or GIF")
        self.act_export = act(fm, "&Export for mobile…", f.export_mobile, "Ctrl+E",
                              "Export the student for Core ML, TFLite and ONNX, verified")
        fm.addSeparator()
        act(fm, "&Quit", self.close, QKeySequence.Quit)

        em = mb.addMenu("&Edit")
        act(em, "&Undo", self.undo, QKeySequence.Undo)
        act(em, "&Redo", self.redo, QKeySequence.Redo)
        redo = QAction(self)
        redo.setShortcut(QKeySequence("Ctrl+Y"))
        redo.triggered.connect(lambda _=False: self.redo())
        self.addAction(redo)
        em.addSeparator()
        act(em, "Reset all sliders", self.reset_all, "Ctrl+0")
        act(em, "Copy image", f.copy_image, QKeySequence.Copy)

        sm = mb.addMenu("&Seed")
        act(sm, "&Random seed", s.random_seed, "R")
        act(sm, "&Next seed", lambda: s.step_seed(1), "N")
        act(sm, "&Previous seed", lambda: s.step_seed(-1), "P")
        act(sm, "Back to seeds", s.back_to_seeds, "Ctrl+B", "Leave photo/latent editing")
        sm.addSeparator()
        act(sm, "Toggle style &mixing", e.toggle_mixing, "M")

        dm = mb.addMenu("&Directions")
        act(dm, "Compute &SeFa directions", lambda: e.compute_directions("sefa"), "Ctrl+Shift+F")
        act(dm, "Compute &GANSpace directions", lambda: e.compute_directions("ganspace"), "Ctrl+Shift+G")
        dm.addSeparator()
        act(dm, "&Open direction set…", e.choose_directions, "Ctrl+Shift+D")
        act(dm, "Sa&ve direction set…", e.save_directions, None)
        act(dm, "&Rename direction…", lambda: e.rename_dialog(self), "F2")
        act(dm, "&Describe directions…", lambda: e.describe(self), "Ctrl+Shift+I",
            "Measure what each slider moves (face mesh and pixels) and name it by that")

        vm = mb.addMenu("&View")
        self.act_side = act(vm, "&Teacher | student side by side", d.set_show_teacher, "T", checkable=True)
        self.act_original = act(vm, "Show &original photo beside the result", d.set_show_original, "O",
                                checkable=True)
        self.act_original.setChecked(True)
        act(vm, "&Full screen", self._toggle_fullscreen, "F11")

        cm = mb.addMenu("&Camera")
        act(cm, "Start / stop camera", c.toggle, "Ctrl+K")
        act(cm, "&Snapshot into photo editing", c.snapshot, "Ctrl+Shift+K")
        act(cm, "Look for cameras", c.probe_cameras, None)

        stm = mb.addMenu("S&tyle")
        act(stm, "&Add style images…", self.stylization.choose_images, None,
            "Pictures whose style the faces should take")
        act(stm, "&Load stylized model…", self.stylization.choose_stylized, None,
            "Open a model made by main.py stylize from this model")
        act(stm, "&Save stylized model…", self.stylization.save_stylized, None,
            "Save the stylized model at the strength shown")

        hm = mb.addMenu("&Help")
        act(hm, "&Keyboard shortcuts", self.show_shortcuts, "F1")
        act(hm, "&About BlazeStudio", self.show_about, None)
        self._model_actions = (self.act_save_image, self.act_save_latent, self.act_load_latent, self.act_sweep,
                               self.act_open_teacher, self.act_open_encoder, self.act_export, self.act_open_photo)
        for a in self._model_actions:
            a.setEnabled(False)

    def _on_models(self, models):
        for a in self._model_actions:
            a.setEnabled(True)
        self.setWindowTitle(f"BlazeStudio — {Path(models.G.source_path).name}")

    def _show_side_by_side(self, on: bool):
        self.model.show_side_by_side(on)
        self.act_side.blockSignals(True)
        self.act_side.setChecked(on)
        self.act_side.blockSignals(False)

    # ======================================================================= commands (menus, main.py app, tests)
    def open_model(self, path, teacher=None, encoder=None, directions=None):
        self.model.open_model(path, teacher, encoder, directions)

    def open_default_model(self, **kw) -> bool:
        return self.model.open_default(**kw)

    def open_teacher(self, path):
        self.model.open_teacher(path)

    def open_photo(self, source, name: str | None = None):
        self.photo.open_photo(source, name)

    def refine_photo(self, steps: int | None = None):
        self.photo.refine(steps)

    def open_npz(self, path):
        self.files.open_npz(path)

    def open_paths(self, paths: list[str]):
        self.files.open_paths(paths)

    def set_seed(self, seed: int):
        self.seeds.set_seed(seed)

    def set_side_by_side(self, on: bool):
        self.display.set_show_teacher(on)

    def start_camera(self, source):
        self.camera.start_camera(source)

    def camera_snapshot(self):
        self.camera.snapshot()

    def reset_all(self):
        self.edits.reset_all()

    def undo(self):
        if not self.editor.undo():
            self.statusBar().showMessage("nothing to undo", 2000)

    def redo(self):
        if not self.editor.redo():
            self.statusBar().showMessage("nothing to redo", 2000)

    def notify(self, text: str, level: str = "info", ms: int = 5000):
        """Non-blocking message: a toast over the viewport plus the status bar."""
        self.statusBar().showMessage(text, ms)
        self.view.show_toast(text, level, ms)

    # ================================================================================================= misc
    def show_shortcuts(self):
        html = "<table cellspacing=6>" + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS)
        box = QMessageBox(self)
        box.setWindowTitle("Keyboard shortcuts")
        box.setText(html + "</table>")
        box.setWindowModality(Qt.NonModal)
        box.show()

    def show_about(self):
        box = QMessageBox(self)
        box.setWindowTitle("About BlazeStudio")
        box.setText("<b>BlazeStudio</b><br>Real-time StyleGAN face editing with a BlazeStyleGAN student "
                    "(Jia et al., CVPR Workshops 2023).")
        box.setWindowModality(Qt.NonModal)
        box.show()

    def _toggle_fullscreen(self):
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    # ================================================================================================ settings
    def _restore_settings(self):
        s = self.settings
        geo = s.value("window/geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        else:
            self.resize(1360, 860)
        state = s.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        split = s.value("window/splitter")
        if isinstance(split, QByteArray) and not split.isEmpty():
            self.splitter.restoreState(split)
        self.seeds.restore(s)
        self.photo.restore(s)
        self.act_original.setChecked(s.value("view/original", True, bool))

    def save_settings(self):
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/splitter", self.splitter.saveState())
        self.seeds.save(s)
        self.photo.save(s)
        s.setValue("view/original", self.display.show_original)
        s.sync()

    def closeEvent(self, e):
        self.save_settings()
        self.camera.stop_camera()
        self.editor.close()
        super().closeEvent(e)

    # drag & drop onto the whole window (the viewport handles its own)
    def dragEnterEvent(self, e):
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e):
        paths = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.files.open_paths(paths)
