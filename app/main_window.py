"""The editor's main window: viewport and seed history on the left, grouped controls on the right.

Everything heavy runs elsewhere: renders on the EditSession's worker (through `SessionBridge`), model loading,
inversion, direction computation and export on `Task`s, the webcam on `LiveRunner`'s threads. The window only
forwards intents, blits finished frames and keeps the widgets in step with the session (after undo, for example).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressDialog,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import models as app_models
from app.panels import CameraPanel, DirectionsPanel, MixPanel, ModelPanel, PhotoPanel, SeedPanel
from app.session import SessionBridge
from app.widgets import FitTabs, HistoryStrip, ImageView, Pane
from app.workers import run_task

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
MODEL_FILTER = "Models (*.safetensors *.pkl *.pt *.pth);;All files (*)"
LATENT_FILTER = "Latents (*.npz)"
VIDEO_FILTER = "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v);;All files (*)"
MODEL_SUFFIXES = (".safetensors", ".pkl", ".pt", ".pth")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
RECENT_LIMIT = 8


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
        self.models: app_models.LoadedModels | None = None
        self.mode = "seed"  # "seed" | "latent" | "photo" | "camera"
        self.photo: app_models.PhotoState | None = None
        self.live = None  # app.camera.CameraController while the camera runs
        self._tasks: set = set()
        self._photo_task = None
        self._frame_times: list[float] = []
        self._thumb_seed: int | None = None
        self._thumb_version = 0
        self._photo_version: int | None = None  # photoReady fires on the first frame at least this new
        # Frames older than this show a state from before the last switch of what is edited (seed, photo, latent,
        # undo): skipped, so a late frame never flashes the previous picture.
        self._min_version = 0
        self._photos: dict[int, app_models.PhotoState] = {}  # by id, so undo can go back to an earlier photo
        self._last_frame = None
        self._pending_latent = None
        self._mix_snapshot = None

        self.bridge = SessionBridge(self)
        self.bridge.rendered.connect(self._on_frame)
        self.bridge.failed.connect(lambda msg: self.notify(msg, "error"))

        self._build_ui()
        self._build_actions()
        self._restore_settings()
        self._set_model_state(None)

    # ================================================================================================ UI building
    def _build_ui(self):
        self.view = ImageView()
        self.view.filesDropped.connect(self.open_paths)
        self.view.openModelRequested.connect(self.choose_model)
        self.history = HistoryStrip()
        self.history.seedChosen.connect(self.set_seed)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.setSpacing(0)
        lv.addWidget(self.view, 1)
        lv.addWidget(self.history)

        self.model_panel = ModelPanel()
        self.model_panel.openModel.connect(self.choose_model)
        self.model_panel.openTeacher.connect(self.choose_teacher)
        self.model_panel.sideBySideToggled.connect(self.set_side_by_side)
        self.seed_panel = SeedPanel()
        self.seed_panel.seedChanged.connect(self.set_seed)
        self.seed_panel.randomRequested.connect(self._random_or_back)
        self.seed_panel.stepRequested.connect(self.step_seed)
        self.seed_panel.psiChanged.connect(self._on_psi)
        self.dir_panel = DirectionsPanel()
        self.dir_panel.valueChanged.connect(self._on_strength)
        self.dir_panel.layersChanged.connect(self._on_layers)
        self.dir_panel.renamed.connect(self._on_rename)
        self.dir_panel.resetRequested.connect(self._on_reset_one)
        self.dir_panel.resetAllRequested.connect(self.reset_all)
        self.dir_panel.computeRequested.connect(self.compute_directions)
        self.dir_panel.openRequested.connect(self.choose_directions)
        self.dir_panel.saveRequested.connect(self.save_directions)
        self.mix_panel = MixPanel()
        self.mix_panel.changed.connect(self._on_mix)
        self.mix_panel.useCurrentRequested.connect(self._capture_mix)
        self.photo_panel = PhotoPanel()
        self.photo_panel.openRequested.connect(self.choose_photo)
        self.photo_panel.cancelRequested.connect(self.cancel_photo)
        self.photo_panel.saveRequested.connect(self.save_result)
        self.photo_panel.refineRequested.connect(self.refine_photo)
        self.camera_panel = CameraPanel()
        self.camera_panel.startRequested.connect(self.start_camera)
        self.camera_panel.stopRequested.connect(self.stop_camera)
        self.camera_panel.snapshotRequested.connect(self.camera_snapshot)
        self.camera_panel.refreshRequested.connect(self.probe_cameras)
        self.camera_panel.openVideoRequested.connect(self.choose_video)

        side = QWidget()
        sv = QVBoxLayout(side)
        sv.setContentsMargins(10, 4, 10, 10)
        sv.setSpacing(6)
        # What is being edited (a seed, a photo, the camera) shares one tabbed box; the sliders below act on all.
        self.source_tabs = FitTabs()
        self.source_tabs.setObjectName("sourceTabs")
        for panel, title in ((self.seed_panel, "Seed"), (self.photo_panel, "Photo"), (self.camera_panel, "Camera")):
            panel.setTitle("")
            panel.setFlat(True)
            self.source_tabs.addTab(panel, title)
        self._cameras_probed = False
        self.source_tabs.currentChanged.connect(self._on_tab)
        for w in (self.model_panel, self.source_tabs, self.dir_panel, self.mix_panel):
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
        self.status_model = QLabel("")
        self.status_render = QLabel("")
        self.status_fps = QLabel("")
        for w in (self.status_model, self.status_render, self.status_fps):
            sb.addPermanentWidget(w)

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

    def _build_actions(self):
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self.act_open_photo = self._action(f, "Open &photo…", self.choose_photo, QKeySequence.Open,
                                           "Open a photo to align, invert and edit")
        self.recent_photos_menu = f.addMenu("Open &recent photo")
        self._action(f, "Open &model…", self.choose_model, "Ctrl+Shift+O", "Open a generator model")
        self.recent_models_menu = f.addMenu("Open recent model")
        self.act_open_teacher = self._action(f, "Open &teacher…", self.choose_teacher, None,
                                             "Open the StyleGAN2 teacher to compare with the student")
        self.act_open_encoder = self._action(f, "Open e&ncoder…", self.choose_encoder, None,
                                             "Open an inversion encoder trained for this model")
        self._action(f, "Open video as camera…", self.choose_video, None, "Use a video file as the camera")
        f.addSeparator()
        self.act_save_image = self._action(f, "&Save image…", self.save_image, QKeySequence.Save,
                                           "Save the current picture as PNG")
        self.act_save_result = self._action(f, "Save pasted &result…", self.save_result, "Ctrl+Shift+E",
                                            "Save the edited face pasted back into the photo")
        self.act_save_latent = self._action(f, "Save &latent…", self.save_latent, "Ctrl+Shift+S",
                                            "Save the edited W+ latent (.npz)")
        self.act_load_latent = self._action(f, "&Load latent…", self.choose_latent, "Ctrl+L",
                                            "Load a W+ latent (.npz)")
        f.addSeparator()
        self.act_sweep = self._action(f, "Export slider s&weep…", self.export_sweep, "Ctrl+Shift+W",
                                      "Render one slider's sweep as a video or GIF")
        self.act_export = self._action(f, "&Export for mobile…", self.export_mobile, "Ctrl+E",
                                       "Export the student for Core ML, TFLite and ONNX, verified")
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.Quit)

        e = mb.addMenu("&Edit")
        self.act_undo = self._action(e, "&Undo", self.undo, QKeySequence.Undo)
        self.act_redo = self._action(e, "&Redo", self.redo, QKeySequence.Redo)
        self.addAction(self._make_extra_shortcut("Ctrl+Y", self.redo))
        e.addSeparator()
        self._action(e, "Reset all sliders", self.reset_all, "Ctrl+0")
        self._action(e, "Copy image", self.copy_image, QKeySequence.Copy)

        s = mb.addMenu("&Seed")
        self._action(s, "&Random seed", self.random_seed, "R")
        self._action(s, "&Next seed", lambda: self.step_seed(1), "N")
        self._action(s, "&Previous seed", lambda: self.step_seed(-1), "P")
        self._action(s, "Back to seeds", self.back_to_seeds, "Ctrl+B", "Leave photo/latent editing")
        s.addSeparator()
        self._action(s, "Toggle style &mixing", lambda: self.mix_panel.enabled.toggle(), "M")

        d = mb.addMenu("&Directions")
        self._action(d, "Compute &SeFa directions", lambda: self.compute_directions("sefa"), "Ctrl+Shift+F")
        self._action(d, "Compute &GANSpace directions", lambda: self.compute_directions("ganspace"), "Ctrl+Shift+G")
        d.addSeparator()
        self._action(d, "&Open direction set…", self.choose_directions, "Ctrl+Shift+D")
        self._action(d, "Sa&ve direction set…", self.save_directions, None)
        self._action(d, "&Rename direction…", self.rename_direction_dialog, "F2")

        v = mb.addMenu("&View")
        self.act_side = self._action(v, "&Teacher | student side by side", self.set_side_by_side, "T",
                                     checkable=True)
        self.act_original = self._action(v, "Show &original photo beside the result", self._refresh_panes, "O",
                                         checkable=True)
        self.act_original.setChecked(True)
        self._action(v, "&Full screen", self._toggle_fullscreen, "F11")

        c = mb.addMenu("&Camera")
        self._action(c, "Start / stop camera", self._toggle_camera, "Ctrl+K")
        self._action(c, "&Snapshot into photo editing", self.camera_snapshot, "Ctrl+Shift+K")
        self._action(c, "Look for cameras", self.probe_cameras, None)

        h = mb.addMenu("&Help")
        self._action(h, "&Keyboard shortcuts", self.show_shortcuts, "F1")
        self._action(h, "&About BlazeStudio", self.show_about, None)

    def _make_extra_shortcut(self, key, slot):
        a = QAction(self)
        a.setShortcut(QKeySequence(key))
        a.triggered.connect(lambda _=False: slot())
        return a

    # ============================================================================================ notifications
    def notify(self, text: str, level: str = "info", ms: int = 5000):
        """Non-blocking message: a toast over the viewport plus the status bar."""
        self.statusBar().showMessage(text, ms)
        self.view.show_toast(text, level, ms)

    # ============================================================================================ model loading
    def choose_model(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open model", self._last_dir("models"), MODEL_FILTER)
        if path:
            self._remember_dir("models", path)
            self.open_model(path)

    def choose_teacher(self):
        if self.models is None:
            self.notify("open a student model first")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open teacher model", self._last_dir("models"), MODEL_FILTER)
        if path:
            self.open_teacher(path)

    def open_default_model(self, **kw):
        """The bundled student (with its teacher), else the model used last; an empty state with 'Open model…'
        when there is neither."""
        from engine.assets import STUDENT

        last = self.settings.value("model/last", "", str)
        path = STUDENT if STUDENT.exists() else (Path(last) if last and Path(last).exists() else None)
        if path is None:
            self.view.set_empty(True)
            self.notify("the bundled model is missing; open a model file to start", "info", 8000)
            return False
        self.open_model(str(path), **kw)
        return True

    def open_model(self, path, teacher=None, encoder=None, directions=None):
        self.stop_camera()
        if self._photo_task is not None:
            self._photo_task.cancel()
        self.view.set_busy(f"Loading {Path(path).name}…")
        self.view.set_empty(False)
        dlg = QProgressDialog(f"Loading {Path(path).name}…", "Hide", 0, 0, self)
        dlg.setWindowTitle("Opening model")
        dlg.setMinimumDuration(600)  # only big models stay long enough to show it
        dlg.setWindowModality(Qt.NonModal)
        dlg.setAutoClose(True)

        def done(models):
            dlg.reset()
            self.view.set_busy("")
            self._set_models(models)

        def failed(msg):
            dlg.reset()
            self.view.set_busy("")
            if self.models is None:
                self.view.set_empty(True)
            self.notify(f"could not open the model: {msg}", "error", 8000)
            self.modelFailed.emit(msg)

        task = run_task(app_models.load_models, str(path), teacher, encoder, directions, done=done, failed=failed,
                        progress=lambda f, t: dlg.setLabelText(t) if t else None)
        self._track(task)

    def open_teacher(self, path):
        G = self.models.G

        def done(T):
            self.models.teacher = T
            self._min_version = 0  # a new session counts its versions from 0 again
            self.bridge.set_teacher(T)
            self._update_model_labels()
            self.model_panel.side_by_side.setChecked(True)
            self.notify(f"teacher loaded: {Path(path).name}")

        task = run_task(app_models.load_teacher_for, G, path, done=done,
                        failed=lambda m: self.notify(f"could not open the teacher: {m}", "error", 8000))
        self._track(task)

    def choose_encoder(self):
        if self.models is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open encoder", self._last_dir("models"),
                                              "Encoders (*.safetensors)")
        if path:
            self.open_encoder(path)

    def open_encoder(self, path):
        G = self.models.G
        models = self.models

        def load(ctx):
            from engine.models.encoder import check_compatible, load_encoder

            E = load_encoder(path)
            check_compatible(E, G)
            return E

        def done(E):
            models.encoder, models._inverter = E, None
            self.notify(f"encoder loaded: {Path(path).name}; photos and the camera now start from its codes")

        self._track(run_task(load, done=done,
                             failed=lambda m: self.notify(f"could not open the encoder: {m}", "error", 8000)))

    def _set_models(self, models: app_models.LoadedModels):
        self.models = models
        G = models.G
        self._min_version = 0  # a new session counts its versions from 0 again
        self.bridge.attach(G, teacher=models.teacher, directions=models.directions, source=models.directions_source)
        self._remember_recent("models", G.source_path)
        self.settings.setValue("model/last", G.source_path)
        self.mix_panel.set_num_ws(G.num_ws)
        self.history.clear()
        self._set_model_state(G)
        self._update_model_labels()
        self._sync_directions()
        self.mode = "seed"
        self.photo = None
        self.bridge.set_postprocess(None)
        self.seed_panel.set_photo_mode(False)
        side = self.settings.value("view/side_by_side", False, bool) and models.teacher is not None
        for w in (self.model_panel.side_by_side, self.act_side):
            w.blockSignals(True)
            w.setChecked(side)
            w.blockSignals(False)
        self.bridge.set_show_teacher(side, render=False)  # the seed below renders
        self.set_seed(self.seed_panel.seed.value())
        if models.note:
            self.notify(models.note, "info", 7000)
        self.modelLoaded.emit()

    def _set_model_state(self, G):
        has = G is not None
        for w in (self.seed_panel, self.dir_panel, self.mix_panel, self.photo_panel, self.camera_panel):
            w.setEnabled(has)
        for a in (self.act_save_image, self.act_save_latent, self.act_load_latent, self.act_sweep,
                  self.act_open_teacher, self.act_open_encoder, self.act_export, self.act_open_photo):
            a.setEnabled(has)
        self.view.set_empty(not has)
        self.history.setVisible(has)
        self.model_panel.open_teacher.setEnabled(has)
        if not has:
            self.model_panel.set_model("No model loaded", None, False)
            self.status_model.setText("no model")

    def _update_model_labels(self):
        m = self.models
        G = m.G
        kind = "BlazeStyleGAN student" if G.is_student else "StyleGAN2"
        self.model_panel.set_model(
            f"<b>{Path(G.source_path).name}</b><br><span style='color:#8b8e94'>{kind} · {G.resolution} px · "
            f"{G.num_ws} W+ layers</span>",
            f"teacher: {Path(m.teacher.source_path).name}" if m.teacher is not None else None,
            m.teacher is not None,
        )
        self.model_panel.open_teacher.setEnabled(G.is_student)
        self.status_model.setText(f"{Path(G.source_path).name} · {G.resolution} px")
        self.setWindowTitle(f"BlazeStudio — {Path(G.source_path).name}")

    # ================================================================================================== seeds
    def set_seed(self, seed: int):
        if self.models is None:
            return
        if self.mode == "camera":
            self.stop_camera()
        leaving = self.mode in ("photo", "latent")
        if leaving:
            self._leave_photo()
        self.seed_panel.set_seed(seed)
        self.source_tabs.setCurrentWidget(self.seed_panel)
        self._thumb_seed = int(seed)
        psi = self.seed_panel.psi.value() / 100
        # A photo or latent sits at ψ = 1; seeds get the truncation the slider shows. Each is its own undo step,
        # so order them to leave the less surprising state in between: on a fresh session ψ goes first (onto the
        # start state, which undo never returns to); after a photo, the seed goes first.
        psi_first = not leaving
        if psi_first and (self.bridge.snapshot() or {}).get("psi") != psi:
            self.bridge.set_psi(psi, render=False)
        self._thumb_version = self.bridge.set_seed(int(seed))
        if not psi_first and (self.bridge.snapshot() or {}).get("psi") != psi:
            self._thumb_version = self.bridge.set_psi(psi)
        self._min_version = self._thumb_version

    def step_seed(self, delta: int):
        if self.mode in ("photo", "latent"):
            return
        self.set_seed(max(0, self.seed_panel.seed.value() + delta))

    def random_seed(self):
        self.set_seed(random.randrange(0, 100000))

    def _random_or_back(self):
        if self.mode in ("photo", "latent"):
            self.back_to_seeds()
        else:
            self.random_seed()

    def back_to_seeds(self):
        if self.mode in ("photo", "latent"):
            self.set_seed(self.seed_panel.seed.value())

    def _on_psi(self, psi: float):
        if self.mode != "seed":
            return
        self.bridge.set_psi(psi, merge=self.seed_panel.psi.isSliderDown())
        self.settings.setValue("edit/psi", psi)

    # ============================================================================================== directions
    def _sync_directions(self):
        items = self.bridge.direction_items()
        src = self.bridge.directions_source()
        self.dir_panel.set_directions(items, self.models.G.num_ws if self.models else 0, src)

    def _on_strength(self, key: str, value: float):
        row = self.dir_panel.rows.get(key)
        # One drag is one undo step; keyboard and wheel steps are each their own.
        self.bridge.set_strength(key, value, merge=row is not None and row.slider.isSliderDown())

    def _on_layers(self, key: str, a: int, b: int):
        try:
            self.bridge.set_layers(key, a, b)
        except Exception as e:  # noqa: BLE001
            self.notify(str(e), "error")

    def _on_reset_one(self, key: str):
        self.bridge.set_strength(key, 0.0)
        self.dir_panel.rows[key].set_strength(0.0)

    def reset_all(self):
        if self.models is None:
            return
        self.bridge.reset_strengths()
        for row in self.dir_panel.rows.values():
            row.set_strength(0.0)

    def _on_rename(self, key: str, name: str):
        try:
            self.bridge.rename(key, name)
        except Exception as e:  # noqa: BLE001 - a duplicate name is a user error, shown, not raised
            self.notify(str(e), "error")
        self._sync_directions()

    def rename_direction_dialog(self):
        names = [k for k in self.dir_panel.rows]
        if not names:
            self.notify("no directions to rename")
            return
        old, ok = QInputDialog.getItem(self, "Rename direction", "Direction:", names, 0, False)
        if not ok:
            return
        new, ok = QInputDialog.getText(self, "Rename direction", f"New name for '{old}':", text=old)
        if ok and new.strip():
            self._on_rename(old, new.strip())

    def compute_directions(self, method: str):
        if self.models is None:
            return
        G = self.models.G
        self.dir_panel.set_busy(True)
        self.notify(f"computing {'SeFa' if method == 'sefa' else 'GANSpace'} directions…")

        def done(dset):
            self.dir_panel.set_busy(False)
            self.bridge.set_directions(dset, f"{method} · computed from {Path(G.source_path).name}")
            self._sync_directions()
            self.notify(f"{len(dset)} {method} directions ready; double-click a name to rename it")

        def failed(msg):
            self.dir_panel.set_busy(False)
            self.notify(f"could not compute directions: {msg}", "error")

        self._track(run_task(app_models.compute_directions, G, method, done=done, failed=failed))

    def choose_directions(self):
        if self.models is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open direction set", self._last_dir("directions"),
                                              "Direction sets (*.npz)")
        if path:
            self._remember_dir("directions", path)
            self.open_directions(path)

    def open_directions(self, path):
        from engine.io.directions import load_directions

        def done(dset):
            self.bridge.set_directions(dset, Path(path).name)
            self._sync_directions()
            self.notify(f"{len(dset)} directions from {Path(path).name}")

        self._track(run_task(lambda ctx: load_directions(path, self.models.G), done=done,
                             failed=lambda m: self.notify(m, "error")))

    def save_directions(self):
        if not self.dir_panel.rows:
            self.notify("no directions to save")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save direction set",
                                              str(Path(self._last_dir("directions")) / "directions.npz"),
                                              "Direction sets (*.npz)")
        if not path:
            return
        if not path.endswith(".npz"):
            path += ".npz"
        self._remember_dir("directions", path)
        try:
            self.bridge.save_directions(path)
            self.notify(f"saved {Path(path).name}")
        except Exception as e:  # noqa: BLE001
            self.notify(str(e), "error")

    # ================================================================================================= mixing
    def _on_mix(self):
        if self.models is None:
            return
        p = self.mix_panel
        if not p.enabled.isChecked():
            self.bridge.set_mix(None)
        elif p.source.currentIndex() == 0:
            self.bridge.set_mix(("seed", p.seed.value()), p.layers())
        elif self._mix_snapshot is not None:
            self.bridge.set_mix(("ws", self._mix_snapshot), p.layers())
        else:
            self.bridge.set_mix(None)
            p.snapshot_label.setText("press Capture")

    def _capture_mix(self):
        ws = self.bridge.current_ws()
        if ws is None:
            return
        self._mix_snapshot = ws.clone()
        self.mix_panel.snapshot_label.setText("captured")
        self._on_mix()

    # ============================================================================================= undo / redo
    def undo(self):
        if self.bridge.undo():
            self._min_version = self.bridge.session.version
            self._sync_from_session()
        else:
            self.statusBar().showMessage("nothing to undo", 2000)

    def redo(self):
        if self.bridge.redo():
            self._min_version = self.bridge.session.version
            self._sync_from_session()
        else:
            self.statusBar().showMessage("nothing to redo", 2000)

    def _sync_from_session(self):
        """Put every widget in line with the session after undo/redo."""
        st = self.bridge.snapshot()
        if st is None:
            return
        if st.get("seed") is not None:
            self.seed_panel.set_seed(st["seed"])
        self.seed_panel.set_psi(st.get("psi", 1.0))
        strengths, layers = st.get("strengths", {}), st.get("layers", {})
        if set(self.dir_panel.rows) != set(layers) and layers:
            self._sync_directions()
        for key, row in self.dir_panel.rows.items():
            row.set_strength(strengths.get(key, 0.0))
            if key in layers:
                row.set_layers(*layers[key])
        base_kind = st.get("base")
        if base_kind == "seed" and self.mode in ("photo", "latent"):
            self._leave_photo()
        elif base_kind == "photo":
            photo = self._photos.get(st.get("photo_id"))
            if photo is not None and (self.mode != "photo" or photo is not self.photo):
                self.photo = photo
                self._enter_photo_mode()
            elif photo is None:
                self.mode = "latent"
                self.bridge.set_postprocess(None)
        elif base_kind == "latent" and self.mode != "latent":
            self.mode = "latent"
            self.bridge.set_postprocess(None)
            self.seed_panel.set_photo_mode(True)
        self._refresh_panes()
        mix = st.get("mix")
        p = self.mix_panel
        for w in (p.enabled, p.source, p.seed, p.first, p.last):
            w.blockSignals(True)
        p.enabled.setChecked(mix is not None)
        if mix is not None:
            kind, value, (a, b) = mix
            p.source.setCurrentIndex(0 if kind == "seed" else 1)
            if kind == "seed":
                p.seed.setValue(int(value))
            p.first.setValue(a)
            p.last.setValue(b)
        for w in (p.enabled, p.source, p.seed, p.first, p.last):
            w.blockSignals(False)
        p._sync()

    # ================================================================================================= frames
    def _on_frame(self, frame):
        if self.mode == "camera" or frame.version < self._min_version:
            return
        self._last_frame = frame
        now = time.monotonic()
        self._frame_times = [t for t in self._frame_times if now - t < 1.0] + [now]
        self._refresh_panes()
        if self._thumb_seed is not None and self.mode == "seed" and frame.version >= self._thumb_version:
            self.history.add(self._thumb_seed, frame.student)
            self._thumb_seed = None
        if frame.ms > 0:  # 0: the session served the image from its cache (e.g. undo to a seen state)
            txt = f"render {frame.ms:.1f} ms"
            if frame.teacher is not None and frame.teacher_ms > 0:
                txt += f" · teacher {frame.teacher_ms:.1f} ms"
            self.status_render.setText(txt)
        n = len(self._frame_times)
        if n >= 3:  # frames are streaming (a drag): the rate they reach the screen
            fps = (n - 1) / max(self._frame_times[-1] - self._frame_times[0], 1e-6)
            self.status_fps.setText(f"{fps:.0f} fps")
        elif frame.ms > 0:  # a single frame: the rate this render time allows
            self.status_fps.setText(f"up to {1000 / frame.ms:.0f} fps")
        self.frameShown.emit()
        if self._photo_version is not None and self.mode == "photo" and "pasted" in frame.extra \
                and frame.version >= self._photo_version:
            self._photo_version = None
            self.photoReady.emit()

    def _refresh_panes(self, *_):
        frame = self._last_frame
        if frame is None or self.models is None or self.mode == "camera":
            return
        G, T = self.models.G, self.models.teacher
        s_name = "Student · BlazeStyleGAN" if G.is_student else "StyleGAN2"
        panes = []
        if self.mode == "photo" and self.photo is not None and "pasted" in frame.extra:
            if self.act_original.isChecked():
                panes.append(Pane("Original", self.photo.rgb))
            if frame.teacher is not None and "pasted_teacher" in frame.extra:
                panes.append(Pane("Teacher · edited", frame.extra["pasted_teacher"]))
                panes.append(Pane("Student · edited", frame.extra["pasted"]))
            else:
                panes.append(Pane("Edited", frame.extra["pasted"]))
        else:
            if frame.teacher is not None and T is not None:
                panes.append(Pane(f"Teacher · StyleGAN2 · {T.resolution} px", frame.teacher))
            panes.append(Pane(f"{s_name} · {G.resolution} px", frame.student))
        self.view.set_panes(panes)

    def set_side_by_side(self, on: bool):
        on = bool(on) and self.models is not None and self.models.teacher is not None
        for w in (self.model_panel.side_by_side, self.act_side):
            w.blockSignals(True)
            w.setChecked(on)
            w.blockSignals(False)
        self.settings.setValue("view/side_by_side", on)
        self.bridge.set_show_teacher(on)

    # ================================================================================================= photos
    def choose_photo(self):
        if self.models is None:
            self.notify("open a model first")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open photo", self._last_dir("photos"), IMAGE_FILTER)
        if path:
            self._remember_dir("photos", path)
            self.open_photo(path)

    def open_photo(self, source, name: str | None = None):
        """Align, encode (and refine if asked) a photo path or RGB array; then edit it pasted back."""
        if self.models is None:
            self.notify("open a model first")
            return
        if self._photo_task is not None:
            self._photo_task.cancel()
        self.stop_camera()
        if isinstance(source, (str, Path)):
            self._remember_recent("photos", str(source))
            name = name or Path(source).name
        label = name or "snapshot"
        refine = self.photo_panel.refine.isChecked()
        steps = self.photo_panel.steps.value()
        self.photo_panel.set_running(True, f"{label}: aligning…")
        self.photo_panel.info.setText(f"Working on {label}…")

        models = self.models

        def done(state: app_models.PhotoState):
            self._photo_task = None
            self.photo_panel.set_running(False)
            if self.models is not models:  # another model was opened meanwhile
                return
            state.name = label
            self._set_photo(state)
            if refine:
                self.refine_photo(steps)

        def failed(msg):
            self._photo_task = None
            self.photo_panel.set_running(False)
            self.photo_panel.info.setText(msg)
            self.notify(msg, "error", 8000)

        def cancelled():
            self._photo_task = None
            self.photo_panel.set_running(False)
            self.photo_panel.info.setText("Cancelled.")

        self._photo_task = run_task(
            app_models.encode_photo, self.models, source, done=done, failed=failed, cancelled=cancelled,
            progress=self.photo_panel.set_progress,
        )
        self._track(self._photo_task)

    def _set_photo(self, state):
        self.photo = state
        self.source_tabs.setCurrentWidget(self.photo_panel)
        self._enter_photo_mode()
        # A photo starts fresh: no sliders, ψ = 1 (truncation would pull the likeness toward the average face).
        self._photos[id(state)] = state
        while len(self._photos) > 8:
            self._photos.pop(next(iter(self._photos)))
        self._photo_version = self.bridge.set_base(state.ws, "photo", state.name, photo=state.name,
                                                   photo_id=id(state))
        self._min_version = self._photo_version
        self._sync_from_session()
        q = state.quality
        self.photo_panel.info.setText(
            f"{state.name}: {state.rgb.shape[1]}×{state.rgb.shape[0]}, "
            f"{state.faces} face{'s' if state.faces != 1 else ''} found"
            + (f" · {q}" if q else "")
        )
        self.photo_panel.save.setEnabled(True)
        self.photo_panel.refine_now.setEnabled(True)

    def _enter_photo_mode(self):
        self.mode = "photo"
        self.seed_panel.set_photo_mode(True)
        photo = self.photo
        models = self.models

        def paste(frame):
            from engine.faces import paste_back

            out = {"pasted": paste_back(photo.rgb, frame.student, photo.aligned)}
            if frame.teacher is not None:
                out["pasted_teacher"] = paste_back(photo.rgb, frame.teacher, photo.aligned)
            return out

        del models
        self.bridge.set_postprocess(paste)

    def _leave_photo(self):
        self.mode = "seed"
        self.bridge.set_postprocess(None)
        self.seed_panel.set_photo_mode(False)

    def refine_photo(self, steps: int | None = None):
        if self.photo is None or self.models is None:
            return
        steps = int(steps or self.photo_panel.steps.value())
        state = self.photo
        self.photo_panel.set_running(True, "refining…")

        def progress(frac, text):
            self.photo_panel.set_progress(frac, text)

        def done(ws):
            self._photo_task = None
            self.photo_panel.set_running(False)
            if self.photo is state and self.mode == "photo":
                state.ws = ws
                self.bridge.set_base(ws, "photo", f"{state.name} refined", keep_edits=True, photo=state.name,
                                     photo_id=id(state))
                self.photo_panel.info.setText(f"{state.name}: refined ({steps} steps)")

        def failed(msg):
            self._photo_task = None
            self.photo_panel.set_running(False)
            self.notify(f"refinement failed: {msg}", "error")

        def cancelled():
            self._photo_task = None
            self.photo_panel.set_running(False)

        self._photo_task = run_task(app_models.refine_photo, self.models, state, steps, done=done, failed=failed,
                                    progress=progress, cancelled=cancelled)
        self._track(self._photo_task)

    def cancel_photo(self):
        if self._photo_task is not None:
            self._photo_task.cancel()
            self.photo_panel.set_progress(self.photo_panel.progress.value() / 1000, "cancelling…")

    def save_result(self):
        frame = self._last_frame
        if self.mode != "photo" or frame is None or "pasted" not in frame.extra:
            self.notify("open a photo first; the result is the edited face pasted back into it")
            return
        stem = Path(self.photo.name).stem if self.photo else "result"
        path = self._ask_save("Save result", "photos", f"{stem}-edited.png", IMAGE_FILTER)
        if path:
            self._write_image(frame.extra["pasted"], path)

    # ================================================================================================= files
    def open_paths(self, paths: list[str]):
        """Drag & drop: photos open for editing, models load, .npz load as latents (or direction sets), videos
        play as the camera."""
        from engine.live import VIDEO_SUFFIXES

        for p in paths[:1]:
            suffix = Path(p).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                self.open_photo(p)
            elif suffix in MODEL_SUFFIXES:
                self.open_model(p)
            elif suffix == ".npz":
                self.open_npz(p)
            elif suffix in VIDEO_SUFFIXES:
                self._use_video(p)
            else:
                self.notify(f"{Path(p).name}: drop a photo, a model, a latent (.npz) or a video", "error")

    def open_npz(self, path):
        """A latent or a direction set, whichever the file holds."""
        if self.models is None:
            self.notify("open a model first")
            return
        from engine.io.directions import is_direction_file

        if is_direction_file(path):
            self.open_directions(path)
        else:
            self.open_latent(path)

    def save_image(self):
        frame = self._last_frame
        if frame is None:
            self.notify("nothing to save yet")
            return
        if self.mode == "photo" and "pasted" in frame.extra:
            rgb, default = frame.extra["pasted"], "edited.png"
        else:
            rgb = frame.student
            default = f"seed{self.seed_panel.seed.value()}.png" if self.mode == "seed" else "image.png"
        path = self._ask_save("Save image", "images", default, "PNG images (*.png)")
        if path:
            self._write_image(rgb, path)

    def _write_image(self, rgb, path):
        from engine.render import save_image

        if not Path(path).suffix:
            path += ".png"
        try:
            save_image(rgb, path)
            self.notify(f"saved {Path(path).name}")
        except Exception as e:  # noqa: BLE001
            self.notify(str(e), "error")

    def copy_image(self):
        from app.widgets import qimage_from_rgb

        frame = self._last_frame
        if frame is None:
            return
        rgb = frame.extra.get("pasted", frame.student) if self.mode == "photo" else frame.student
        QApplication.clipboard().setImage(qimage_from_rgb(rgb))
        self.statusBar().showMessage("image copied", 2000)

    def save_latent(self):
        if self.models is None or self._last_frame is None:
            self.notify("nothing to save yet")
            return
        default = f"seed{self.seed_panel.seed.value()}.npz" if self.mode == "seed" else "latent.npz"
        path = self._ask_save("Save latent", "latents", default, LATENT_FILTER)
        if not path:
            return
        if not path.endswith(".npz"):
            path += ".npz"
        try:
            self.bridge.save_latent(path, self._latent_meta())
            self.notify(f"saved {Path(path).name}")
        except Exception as e:  # noqa: BLE001
            self.notify(str(e), "error")

    def _latent_meta(self) -> dict:
        meta = {"app": "blazestudio", "edits": self.bridge.edit_summary()}
        if self.mode == "seed":
            meta.update(seeds=[self.seed_panel.seed.value()], psi=self.seed_panel.psi.value() / 100)
        if self.mode == "photo" and self.photo is not None:
            meta.update(source=self.photo.name, alignment=self.photo.aligned.to_json())
        return meta

    def choose_latent(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load latent", self._last_dir("latents"), LATENT_FILTER)
        if path:
            self._remember_dir("latents", path)
            self.open_latent(path)

    def open_latent(self, path):
        from engine.io.latents import load_latent

        if self.models is None:
            self.notify("open a model first")
            return
        try:
            ws, meta = load_latent(path, self.models.G)
        except Exception as e:  # noqa: BLE001
            self.notify(str(e), "error", 8000)
            return
        self.stop_camera()
        self.mode = "latent"
        self.photo = None
        self.bridge.set_postprocess(None)
        self.seed_panel.set_photo_mode(True)
        # The file holds an already edited W+: it becomes the base, without ψ or the current sliders on top.
        self._min_version = self.bridge.set_base(ws[:1], "latent", Path(path).name, latent=Path(path).name)
        self._sync_from_session()
        extra = f" (first of {len(ws)})" if len(ws) > 1 else ""
        self.notify(f"loaded {Path(path).name}{extra}")

    # ================================================================================================= export
    def export_sweep(self):
        if self.models is None:
            return
        if not self.dir_panel.rows:
            self.notify("compute or open directions first; a sweep moves one slider", "error")
            return
        from app.dialogs import SweepDialog

        dlg = SweepDialog(self, self.bridge, list(self.dir_panel.rows), self._last_dir("sweeps"))
        dlg.finished.connect(lambda *_: self._remember_dir("sweeps", dlg.out_path.text() or "."))
        dlg.show()

    def export_mobile(self):
        if self.models is None:
            return
        from app.dialogs import ExportDialog

        dlg = ExportDialog(self, self.models, self.settings)
        dlg.show()
        self._export_dialog = dlg

    # ================================================================================================= camera
    def _on_tab(self, index: int):
        if self.source_tabs.widget(index) is self.camera_panel and not self._cameras_probed:
            self.probe_cameras()

    def probe_cameras(self):
        from engine.live import probe_cameras

        self._cameras_probed = True
        self.camera_panel.status.setText("Looking for cameras…")
        keep = self.camera_panel.source.currentData()
        videos = [(self.camera_panel.source.itemText(i), self.camera_panel.source.itemData(i))
                  for i in range(self.camera_panel.source.count())
                  if isinstance(self.camera_panel.source.itemData(i), str)]

        def done(indices):
            items = [(f"Camera {i}", i) for i in indices] + videos
            self.camera_panel.set_sources(items, keep)
            self.camera_panel.status.setText(
                f"{len(indices)} camera{'s' if len(indices) != 1 else ''} found." if indices
                else "No camera found (connect one and press ⟳)."
            )

        self._track(run_task(lambda ctx: probe_cameras(), done=done,
                             failed=lambda m: self.camera_panel.status.setText(f"camera search failed: {m}")))

    def choose_video(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open video as camera", self._last_dir("videos"), VIDEO_FILTER)
        if path:
            self._remember_dir("videos", path)
            self._use_video(path)

    def _use_video(self, path):
        self.camera_panel.add_video(path, f"Video: {Path(path).name}")
        self.start_camera(path)

    def _toggle_camera(self):
        if self.live is not None:
            self.stop_camera()
        else:
            self.start_camera(self.camera_panel.source.currentData())

    def start_camera(self, source):
        from app.camera import CameraController

        if self.models is None:
            return
        if source is None:
            self.camera_panel.set_running(False)
            msg = "No camera available. Connect a camera and press ⟳, or use “Open video as camera…”."
            self.camera_panel.status.setText(msg)
            self.notify(msg, "error", 8000)
            return
        self.stop_camera()
        self.live = CameraController(self, self.models, self.bridge)
        self.live.frame.connect(self._on_camera_frame)
        self.live.failed.connect(self._on_camera_failed)
        self.live.stopped.connect(self._on_camera_stopped)
        self.source_tabs.setCurrentWidget(self.camera_panel)
        self.camera_panel.status.setText("Starting…")
        self.camera_panel.set_running(True)
        self.mode = "camera"
        self.bridge.set_paused(True)
        self.live.start(source)

    def stop_camera(self):
        live, self.live = self.live, None
        if live is None:
            return
        live.stop()
        self.camera_panel.set_running(False)
        self.camera_panel.status.setText("Stopped.")
        if self.mode == "camera":
            base = (self.bridge.snapshot() or {}).get("base", "seed")
            self.mode = "photo" if base == "photo" and self.photo is not None else \
                "seed" if base == "seed" else "latent"
        self.bridge.set_paused(False)

    def _on_camera_frame(self, lf, fps: float):
        if self.live is None:
            return
        self._live_frame = lf
        panes = []
        if self.act_original.isChecked():
            panes.append(Pane("Camera", lf.frame))
        panes.append(Pane("Edited live" if lf.face else "Edited live · no face in view", lf.output))
        self.view.set_panes(panes)
        self.camera_panel.fps.setText(f"{fps:.1f} fps")
        self.status_fps.setText(f"{fps:.1f} fps")
        t = lf.timings
        if t:
            self.status_render.setText(" · ".join(f"{k} {v:.0f}" for k, v in t.items()) + " ms")
        self.camera_panel.status.setText("Live." if lf.face else "Live — no face in view.")

    def _on_camera_failed(self, msg: str):
        self.stop_camera()
        self.camera_panel.status.setText(msg)
        self.notify(msg, "error", 8000)

    def _on_camera_stopped(self):
        if self.live is not None:
            self.stop_camera()

    def camera_snapshot(self):
        lf = getattr(self, "_live_frame", None)
        if self.live is None or lf is None:
            self.notify("start the camera first")
            return
        frame = lf.frame.copy()
        self.stop_camera()
        self.open_photo(frame, name="snapshot")

    # ================================================================================================= misc
    def show_shortcuts(self):
        rows = [
            ("Ctrl+O", "Open photo"), ("Ctrl+Shift+O", "Open model"), ("Ctrl+S", "Save image"),
            ("Ctrl+Shift+E", "Save pasted result"), ("Ctrl+Shift+S / Ctrl+L", "Save / load latent"),
            ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo"), ("R / N / P", "Random, next, previous seed"),
            ("Ctrl+B", "Back to seeds"), ("M", "Toggle style mixing"), ("T", "Teacher | student side by side"),
            ("O", "Show the original photo"), ("Ctrl+0", "Reset all sliders"), ("F2", "Rename a direction"),
            ("Ctrl+Shift+F / G", "Compute SeFa / GANSpace directions"), ("Ctrl+K", "Start / stop camera"),
            ("Ctrl+Shift+K", "Camera snapshot into photo editing"), ("Ctrl+Shift+W", "Export slider sweep"),
            ("Ctrl+E", "Export for mobile"), ("F11", "Full screen"),
        ]
        html = "<table cellspacing=6>" + "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows)
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

    def _track(self, task):
        self._tasks.add(task)
        task.signals.finished.connect(lambda: self._tasks.discard(task))
        return task

    def _ask_save(self, title, kind, default_name, filt):
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path(self._last_dir(kind)) / default_name), filt)
        if path:
            self._remember_dir(kind, path)
        return path

    def _last_dir(self, kind: str) -> str:
        return self.settings.value(f"dirs/{kind}", str(Path.home()), str)

    def _remember_dir(self, kind: str, path: str):
        p = Path(path)
        self.settings.setValue(f"dirs/{kind}", str(p if p.is_dir() else p.parent))

    def _recent(self, kind: str) -> list[str]:
        v = self.settings.value(f"recent/{kind}", [], list)
        return [p for p in (v or []) if isinstance(p, str)]

    def _remember_recent(self, kind: str, path: str):
        path = str(Path(path).resolve())
        items = [path] + [p for p in self._recent(kind) if p != path]
        self.settings.setValue(f"recent/{kind}", items[:RECENT_LIMIT])
        self._rebuild_recent_menus()

    def _rebuild_recent_menus(self):
        for menu, kind, opener in ((self.recent_photos_menu, "photos", self.open_photo),
                                   (self.recent_models_menu, "models", self.open_model)):
            menu.clear()
            items = self._recent(kind)
            for p in items:
                a = menu.addAction(Path(p).name)
                a.setToolTip(p)
                a.triggered.connect(lambda _=False, p=p, f=opener: f(p))
            if not items:
                a = menu.addAction("(none)")
                a.setEnabled(False)

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
        self.seed_panel.set_seed(s.value("edit/seed", 0, int))
        self.seed_panel.set_psi(s.value("edit/psi", 0.7, float))
        self.photo_panel.refine.setChecked(s.value("photo/refine", False, bool))
        self.photo_panel.steps.setValue(s.value("photo/steps", 100, int))
        self.act_original.setChecked(s.value("view/original", True, bool))
        self._rebuild_recent_menus()

    def save_settings(self):
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/splitter", self.splitter.saveState())
        s.setValue("edit/seed", self.seed_panel.seed.value())
        s.setValue("edit/psi", self.seed_panel.psi.value() / 100)
        s.setValue("photo/refine", self.photo_panel.refine.isChecked())
        s.setValue("photo/steps", self.photo_panel.steps.value())
        s.setValue("view/original", self.act_original.isChecked())
        s.sync()

    def closeEvent(self, e):
        self.save_settings()
        self.stop_camera()
        for t in list(self._tasks):
            t.cancel()
        self.bridge.close()
        super().closeEvent(e)

    # drag & drop onto the whole window (the viewport handles its own)
    def dragEnterEvent(self, e):
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e):
        paths = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)

