"""The side panel's groups. Each is a plain widget that emits intents and shows what it is given; the parts in
app/parts connect them to the engine."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.widgets import DirectionRow

MAX_SEED = 2**31 - 1


def _muted(text: str) -> QLabel:
    lbl = QLabel(text)
    lbl.setProperty("muted", True)
    lbl.setWordWrap(True)
    return lbl


def _status_line(text: str) -> QLabel:
    """A muted two-line status: its height is kept when the text shortens, so the panel below does not jump."""
    lbl = _muted(text)
    lbl.setMinimumHeight(2 * lbl.fontMetrics().lineSpacing() + 4)
    return lbl


def _button(text: str, tip: str, clicked, enabled: bool = True) -> QPushButton:
    b = QPushButton(text)
    b.setToolTip(tip)
    b.clicked.connect(clicked)
    b.setEnabled(enabled)
    return b


def _steps_box(lo: int, hi: int, step: int, value: int, tip: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    box.setSuffix(" steps")
    if tip:
        box.setToolTip(tip)
    return box


def _progress_row(panel) -> QHBoxLayout:
    """The bar and Cancel button of a panel's long job, as panel.progress and panel.cancel (per mille)."""
    row = QHBoxLayout()
    panel.progress = QProgressBar()
    panel.progress.setRange(0, 1000)
    panel.progress.setTextVisible(True)
    panel.progress.setFormat("")
    panel.cancel = QPushButton("Cancel")
    panel.cancel.clicked.connect(panel.cancelRequested)
    row.addWidget(panel.progress, 1)
    row.addWidget(panel.cancel)
    return row


class ModelPanel(QGroupBox):
    openModel = Signal()
    openTeacher = Signal()
    sideBySideToggled = Signal(bool)

    def __init__(self, parent=None):
        super().__init__("Model", parent)
        g = QGridLayout(self)
        g.setColumnStretch(1, 1)
        self.model_label = QLabel("—")
        self.model_label.setWordWrap(True)
        self.teacher_label = _muted("no teacher")
        open_model = QPushButton("Open…")
        open_model.setToolTip("Open a model (.safetensors, NVIDIA .pkl, rosinality .pt)  Ctrl+Shift+O")
        open_model.clicked.connect(self.openModel)
        self.open_teacher = QPushButton("Teacher…")
        self.open_teacher.setToolTip("Open the StyleGAN2 teacher of this student to compare them side by side")
        self.open_teacher.clicked.connect(self.openTeacher)
        self.side_by_side = QCheckBox("Teacher | student side by side")
        self.side_by_side.setToolTip("Render the teacher next to the student with the same W+  (T)")
        self.side_by_side.setEnabled(False)
        self.side_by_side.toggled.connect(self.sideBySideToggled)
        g.addWidget(self.model_label, 0, 0, 1, 2)
        g.addWidget(open_model, 0, 2)
        g.addWidget(self.teacher_label, 1, 0, 1, 2)
        g.addWidget(self.open_teacher, 1, 2)
        g.addWidget(self.side_by_side, 2, 0, 1, 3)

    def set_model(self, text: str, teacher_text: str | None, can_compare: bool):
        self.model_label.setText(text)
        self.teacher_label.setText(teacher_text or "no teacher")
        self.side_by_side.setEnabled(can_compare)
        if not can_compare:
            self.side_by_side.setChecked(False)


class SeedPanel(QGroupBox):
    seedChanged = Signal(int)
    randomRequested = Signal()
    stepRequested = Signal(int)
    psiChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__("Seed", parent)
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        row.setSpacing(4)
        self.prev = QToolButton()
        self.prev.setText("◀")
        self.prev.setToolTip("Previous seed  (P)")
        self.prev.clicked.connect(lambda: self.stepRequested.emit(-1))
        self.seed = QSpinBox()
        self.seed.setRange(0, MAX_SEED)
        self.seed.setKeyboardTracking(False)
        self.seed.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.seed.setMinimumWidth(90)
        self.seed.setToolTip("Seed of the random latent z")
        self.seed.valueChanged.connect(self.seedChanged)
        self.next = QToolButton()
        self.next.setText("▶")
        self.next.setToolTip("Next seed  (N)")
        self.next.clicked.connect(lambda: self.stepRequested.emit(1))
        self.random = QPushButton("Random")
        self.random.setToolTip("A random seed  (R)")
        self.random.clicked.connect(self.randomRequested)
        for w in (self.prev, self.seed, self.next, self.random):
            row.addWidget(w)
        v.addLayout(row)

        psi_row = QHBoxLayout()
        psi_row.addWidget(QLabel("Truncation ψ"))
        self.psi_value = QLabel("0.70")
        self.psi_value.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        psi_row.addStretch(1)
        psi_row.addWidget(self.psi_value)
        v.addLayout(psi_row)
        self.psi = QSlider(Qt.Horizontal)
        self.psi.setRange(0, 150)  # ψ × 100
        self.psi.setValue(70)
        self.psi.setToolTip("Truncation ψ: 0 = the average face, 1 = untruncated, >1 = exaggerated")
        self.psi.valueChanged.connect(self._on_psi)
        v.addWidget(self.psi)

    def _on_psi(self, v: int):
        self.psi_value.setText(f"{v / 100:.2f}")
        self.psiChanged.emit(v / 100)

    def set_seed(self, seed: int):
        self.seed.blockSignals(True)
        self.seed.setValue(int(seed))
        self.seed.blockSignals(False)

    def set_psi(self, psi: float):
        self.psi.blockSignals(True)
        self.psi.setValue(round(psi * 100))
        self.psi.blockSignals(False)
        self.psi_value.setText(f"{psi:.2f}")

    def set_photo_mode(self, on: bool):
        """A photo's latent has no seed or truncation; keep the controls but say why they are off."""
        for w in (self.prev, self.seed, self.next, self.psi):
            w.setEnabled(not on)
        self.random.setText("Seeds" if on else "Random")
        self.random.setToolTip("Back to editing seeds  (Ctrl+B)" if on else "A random seed  (R)")


LOCK_COLUMNS = 3


class DirectionsPanel(QGroupBox):
    """One DirectionRow per direction of the loaded set (`rows`, whose signals say what the user did to each), plus
    set-level actions."""

    resetAllRequested = Signal()
    computeRequested = Signal(str)  # "sefa" | "ganspace"
    openRequested = Signal()
    saveRequested = Signal()
    locksChanged = Signal(list)  # the attributes to hold still while the sliders move

    def __init__(self, parent=None):
        super().__init__("Attributes", parent)
        self._v = QVBoxLayout(self)
        self._v.setSpacing(2)
        self.source = _muted("")
        self.source.setVisible(False)
        self._v.addWidget(self.source)
        self._rows_box = QWidget()
        self._rows = QVBoxLayout(self._rows_box)
        self._rows.setContentsMargins(0, 0, 0, 0)
        self._rows.setSpacing(2)
        self._v.addWidget(self._rows_box)
        # "Hold still": one toggle per attribute the set has a boundary for (a direction fitted to a measure).
        # A grid, not a row: a set fitted to a dozen attributes would otherwise widen the side panel past the window.
        self.locks_box = QWidget()
        self._locks = QGridLayout(self.locks_box)
        self._locks.setContentsMargins(0, 4, 0, 0)
        self._locks.setSpacing(3)
        self.lock_buttons: dict[str, QToolButton] = {}
        self.locks_box.setVisible(False)
        self._v.addWidget(self.locks_box)
        self.empty = _muted(
            "No directions yet. Compute them from the model's own weights (SeFa, a second) "
            "or from samples (GANSpace), or open a direction file."
        )
        self._v.addWidget(self.empty)
        row = QHBoxLayout()
        self.sefa = QPushButton("SeFa")
        self.sefa.setToolTip("Compute closed-form directions from the style layers' weights (Shen & Zhou 2021)")
        self.sefa.clicked.connect(lambda: self.computeRequested.emit("sefa"))
        self.ganspace = QPushButton("GANSpace")
        self.ganspace.setToolTip("Compute principal directions of sampled W (Härkönen et al. 2020)")
        self.ganspace.clicked.connect(lambda: self.computeRequested.emit("ganspace"))
        self.open = QPushButton("Open…")
        self.open.setToolTip("Open a direction set (.npz)")
        self.open.clicked.connect(self.openRequested)
        self.save = QPushButton("Save…")
        self.save.setToolTip("Save the directions with their names and layer ranges")
        self.save.clicked.connect(self.saveRequested)
        for b in (self.sefa, self.ganspace, self.open, self.save):
            row.addWidget(b)
        self._v.addLayout(row)
        self.reset_all = QPushButton("Reset all sliders")
        self.reset_all.setToolTip("Set every slider back to 0  (Ctrl+0)")
        self.reset_all.clicked.connect(self.resetAllRequested)
        self._v.addWidget(self.reset_all)
        self.rows: dict[str, DirectionRow] = {}
        self._sync_empty()

    def set_directions(self, items, num_ws: int, source: str = ""):
        """items: iterable of (name, (first, last), α, (slider lo, slider hi))."""
        for row in self.rows.values():
            row.setParent(None)
            row.deleteLater()
        self.rows = {}
        for name, layers, alpha, slider in items:
            row = DirectionRow(name, num_ws, layers, slider)
            row.set_alpha(alpha)
            self._rows.addWidget(row)
            self.rows[name] = row
        self.source.setText(source)
        self.source.setVisible(bool(source))
        self._sync_empty()

    def set_lockable(self, attributes: list[str], locked=()):
        """Toggles for the attributes that can be held still (the set's fitted boundaries)."""
        for b in self.lock_buttons.values():
            b.setParent(None)
            b.deleteLater()
        self.lock_buttons = {}
        while self._locks.count():
            item = self._locks.takeAt(0)
            if item.widget() is not None:
                item.widget().setParent(None)
        if attributes:
            self._locks.addWidget(_muted("Hold still:"), 0, 0, 1, LOCK_COLUMNS)
        for k, name in enumerate(attributes):
            b = QToolButton()
            b.setText(name.replace("_", " "))
            b.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
            b.setCheckable(True)
            b.setChecked(name in locked)
            b.setToolTip(f"Keep {name} as it is while the other sliders move (its boundary is projected out of every "
                         "other direction)")
            b.toggled.connect(lambda _on: self.locksChanged.emit(self.locked()))
            self._locks.addWidget(b, 1 + k // LOCK_COLUMNS, k % LOCK_COLUMNS)
            self.lock_buttons[name] = b
        self.locks_box.setVisible(bool(attributes))

    def locked(self) -> list[str]:
        return [n for n, b in self.lock_buttons.items() if b.isChecked()]

    def show_locks(self, locked) -> None:
        for n, b in self.lock_buttons.items():
            b.blockSignals(True)
            b.setChecked(n in locked)
            b.blockSignals(False)

    def _sync_empty(self):
        has = bool(self.rows)
        self.empty.setVisible(not has)
        self.save.setEnabled(has)
        self.reset_all.setEnabled(has)

    def set_busy(self, busy: bool):
        self.sefa.setEnabled(not busy)
        self.ganspace.setEnabled(not busy)


class MixPanel(QGroupBox):
    changed = Signal()
    useCurrentRequested = Signal()

    def __init__(self, num_ws: int = 14, parent=None):
        super().__init__("Style mixing", parent)
        g = QGridLayout(self)
        self.enabled = QCheckBox("Mix in styles from a second latent")
        self.enabled.setToolTip("Replace a range of W+ layers with those of another seed or latent  (M)")
        self.source = QComboBox()
        self.source.addItems(["Seed", "Latent snapshot"])
        self.source.setToolTip("Take the layers from another seed, or from a latent you captured")
        self.seed = QSpinBox()
        self.seed.setRange(0, MAX_SEED)
        self.seed.setValue(1)
        self.seed.setKeyboardTracking(False)
        self.capture = QPushButton("Capture current")
        self.capture.setToolTip("Use the current (edited) latent as the mixing source")
        self.capture.clicked.connect(self.useCurrentRequested)
        self.snapshot_label = _muted("no snapshot")
        self.first = QSpinBox()
        self.last = QSpinBox()
        self.set_num_ws(num_ws)
        g.addWidget(self.enabled, 0, 0)
        # Collapsed while mixing is off, so the panel stays short.
        self.body = QWidget()
        b = QGridLayout(self.body)
        b.setContentsMargins(0, 4, 0, 0)
        b.setColumnStretch(1, 1)
        b.addWidget(QLabel("From"), 0, 0)
        b.addWidget(self.source, 0, 1, 1, 2)
        b.addWidget(QLabel("Seed"), 1, 0)
        b.addWidget(self.seed, 1, 1, 1, 2)
        b.addWidget(self.capture, 2, 0, 1, 2)
        b.addWidget(self.snapshot_label, 2, 2)
        b.addWidget(QLabel("Layers"), 3, 0)
        lr = QHBoxLayout()
        lr.addWidget(self.first)
        lr.addWidget(QLabel("–"))
        lr.addWidget(self.last)
        lr.addStretch(1)
        b.addLayout(lr, 3, 1, 1, 2)
        hint = _muted("Low layers carry pose and face shape; middle layers features; high layers colour.")
        b.addWidget(hint, 4, 0, 1, 3)
        g.addWidget(self.body, 1, 0)
        for w in (self.enabled, self.source, self.seed, self.first, self.last):
            sig = getattr(w, "toggled", None) or getattr(w, "currentIndexChanged", None) or w.valueChanged
            sig.connect(self._changed)
        self._sync()

    def set_num_ws(self, num_ws: int):
        for sb in (self.first, self.last):
            sb.blockSignals(True)
            sb.setRange(0, max(num_ws - 1, 0))
            sb.blockSignals(False)
        self.first.blockSignals(True)
        self.last.blockSignals(True)
        self.first.setValue(min(num_ws // 2, num_ws - 1))
        self.last.setValue(num_ws - 1)
        self.first.blockSignals(False)
        self.last.blockSignals(False)

    def _changed(self, *_):
        if self.first.value() > self.last.value():
            other = self.last if self.sender() is self.first else self.first
            other.blockSignals(True)
            other.setValue(self.sender().value())
            other.blockSignals(False)
        self._sync()
        self.changed.emit()

    def show_mix(self, mix) -> None:
        """Show a mixing state (engine.edit.Mix, or None for off) without emitting `changed`."""
        widgets = (self.enabled, self.source, self.seed, self.first, self.last)
        for w in widgets:
            w.blockSignals(True)
        self.enabled.setChecked(mix is not None)
        if mix is not None:
            self.source.setCurrentIndex(0 if mix.seed is not None else 1)
            if mix.seed is not None:
                self.seed.setValue(mix.seed)
            self.first.setValue(mix.layers[0])
            self.last.setValue(mix.layers[1])
        for w in widgets:
            w.blockSignals(False)
        self._sync()

    def _sync(self):
        on = self.enabled.isChecked()
        by_seed = self.source.currentIndex() == 0
        self.body.setVisible(on)
        self.source.setEnabled(on)
        self.seed.setEnabled(on and by_seed)
        self.capture.setEnabled(on and not by_seed)
        for w in (self.first, self.last):
            w.setEnabled(on)

    def layers(self) -> tuple[int, int]:
        return self.first.value(), self.last.value()


EDIT_MODES = (
    ("transfer", "Your photo, edited",
     "Edit transfer: the photo keeps its own pixels, changed only by what the sliders change"),
    ("regenerate", "The generator's rendition",
     "Regenerate: the generator's picture of the edited face is pasted in (for stylized models; it is not the "
     "person's own face)"),
)


class EditModeBox(QComboBox):
    """How a photo or the camera shows an edit: transfer (default) or regenerate."""

    modeChosen = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        for key, label, tip in EDIT_MODES:
            self.addItem(label, key)
            self.setItemData(self.count() - 1, tip, Qt.ToolTipRole)
        self.setToolTip("How the edit is shown: your own pixels, edited (transfer), or the generator's rendition "
                        "pasted in (regenerate)")
        self.currentIndexChanged.connect(lambda i: self.modeChosen.emit(self.itemData(i)))

    def set_mode(self, mode: str) -> None:
        self.blockSignals(True)
        self.setCurrentIndex(max(0, self.findData(mode)))
        self.blockSignals(False)


class PhotoPanel(QGroupBox):
    openRequested = Signal()
    cancelRequested = Signal()
    saveRequested = Signal()
    refineRequested = Signal()
    tuneRequested = Signal()

    def __init__(self, parent=None):
        super().__init__("Photo", parent)
        v = QVBoxLayout(self)
        row = QHBoxLayout()
        self.open = _button("Open photo…", "Open a photo to align, invert and edit  (Ctrl+O); or drop it on the view",
                            self.openRequested)
        self.save = _button("Save result…", "Save the edited face pasted back into the photo  (Ctrl+Shift+E)",
                            self.saveRequested, enabled=False)
        row.addWidget(self.open)
        row.addWidget(self.save)
        v.addLayout(row)
        mode = QHBoxLayout()
        mode.addWidget(QLabel("Show"))
        self.mode = EditModeBox()
        mode.addWidget(self.mode, 1)
        v.addLayout(mode)
        opt = QHBoxLayout()
        self.refine = QCheckBox("Refine")
        self.refine.setToolTip("After the encoder, optimise the latent for a closer likeness (slower)")
        self.steps = _steps_box(10, 2000, 10, 100)
        self.refine_now = _button("Refine now", "Run the refinement on the current photo", self.refineRequested,
                                  enabled=False)
        opt.addWidget(self.refine)
        opt.addWidget(self.steps)
        opt.addWidget(self.refine_now)
        v.addLayout(opt)
        tune = QHBoxLayout()
        self.tune_steps = _steps_box(10, 1000, 10, 100)
        self.tune = _button("Tune to photo", "Fine-tune a copy of the generator to this face (pivotal tuning): a "
                            "closer likeness for the generator's rendition and more accurate edits; the model file "
                            "is not changed", self.tuneRequested, enabled=False)
        tune.addWidget(self.tune_steps)
        tune.addWidget(self.tune, 1)
        v.addLayout(tune)
        v.addLayout(_progress_row(self))
        self.info = _status_line("Open a photo with a clearly visible face.")
        v.addWidget(self.info)
        self.set_running(False)

    def set_running(self, running: bool, text: str = ""):
        self.progress.setVisible(running)
        self.cancel.setVisible(running)
        self.open.setEnabled(not running)
        self.refine_now.setEnabled(not running and self.save.isEnabled())
        self.tune.setEnabled(not running and self.save.isEnabled())
        if running:
            self.progress.setValue(0)
            self.progress.setFormat(text or "%p%")

    def set_progress(self, frac: float, text: str = ""):
        self.progress.setValue(int(frac * 1000))
        if text:
            self.progress.setFormat(text)


class CameraPanel(QGroupBox):
    startRequested = Signal(object)  # camera index (int) or a video path (str)
    stopRequested = Signal()
    snapshotRequested = Signal()
    refreshRequested = Signal()
    openVideoRequested = Signal()

    def __init__(self, parent=None):
        super().__init__("Camera", parent)
        g = QGridLayout(self)
        g.setColumnStretch(0, 1)
        self.source = QComboBox()
        self.source.setPlaceholderText("no camera")
        self.source.setToolTip("Camera to use; a video file can stand in for a camera")
        self.refresh = QToolButton()
        self.refresh.setText("⟳")
        self.refresh.setToolTip("Look for cameras again")
        self.refresh.clicked.connect(self.refreshRequested)
        self.start = QPushButton("Start")
        self.start.setCheckable(True)
        self.start.setToolTip("Start or stop the live edited camera view  (Ctrl+K)")
        self.start.clicked.connect(self._on_start)
        self.snapshot = QPushButton("Snapshot")
        self.snapshot.setToolTip("Take the current frame into photo editing  (Ctrl+Shift+K)")
        self.snapshot.clicked.connect(self.snapshotRequested)
        self.snapshot.setEnabled(False)
        self.video = QPushButton("Open video as camera…")
        self.video.setToolTip("Use a video file as the camera source")
        self.video.clicked.connect(self.openVideoRequested)
        self.mode = EditModeBox()
        self.status = _muted("Cameras not searched yet.")
        self.status.setMinimumHeight(2 * self.status.fontMetrics().lineSpacing() + 4)  # room for a wrapped line
        self.fps = QLabel("")
        self.fps.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        g.addWidget(self.source, 0, 0, 1, 2)
        g.addWidget(self.refresh, 0, 2)
        g.addWidget(self.start, 1, 0)
        g.addWidget(self.snapshot, 1, 1, 1, 2)
        g.addWidget(self.video, 2, 0, 1, 3)
        g.addWidget(QLabel("Show"), 3, 0)
        g.addWidget(self.mode, 3, 1, 1, 2)
        g.addWidget(self.status, 4, 0, 1, 2)
        g.addWidget(self.fps, 4, 2)

    def set_sources(self, sources: list[tuple[str, object]], keep=None):
        self.source.clear()
        for label, value in sources:
            self.source.addItem(label, value)
        if keep is not None:
            idx = self.source.findData(keep)
            if idx >= 0:
                self.source.setCurrentIndex(idx)
        self.start.setEnabled(self.source.count() > 0 or self.start.isChecked())

    def add_video(self, path: str, label: str):
        idx = self.source.findData(path)
        if idx < 0:
            self.source.addItem(label, path)
            idx = self.source.count() - 1
        self.source.setCurrentIndex(idx)
        self.start.setEnabled(True)

    def _on_start(self, checked: bool):
        if checked:
            if self.source.count() == 0:
                self.start.setChecked(False)
                self.startRequested.emit(None)
                return
            self.startRequested.emit(self.source.currentData())
        else:
            self.stopRequested.emit()

    def set_running(self, running: bool):
        self.start.blockSignals(True)
        self.start.setChecked(running)
        self.start.blockSignals(False)
        self.start.setText("Stop" if running else "Start")
        self.snapshot.setEnabled(running)
        self.source.setEnabled(not running)
        self.video.setEnabled(not running)
        if not running:
            self.fps.setText("")


class StylePanel(QGroupBox):
    """Few-shot stylization: style images, fine-tuning with progress, a stylized model loaded or saved, and how it is
    shown (base | stylized, strength)."""

    addRequested = Signal()
    clearRequested = Signal()
    stylizeRequested = Signal()
    cancelRequested = Signal()
    loadRequested = Signal()
    saveRequested = Signal()
    styledToggled = Signal(bool)  # show the stylized model (True) or the base (False)
    strengthChanged = Signal(float)  # 0..1, when the slider is let go (a blend per value is not free)

    def __init__(self, parent=None):
        super().__init__("Style", parent)
        self._running = self._available = False
        v = QVBoxLayout(self)
        self.images = QListWidget()
        self.images.setViewMode(QListWidget.IconMode)
        self.images.setIconSize(QSize(48, 48))
        self.images.setFlow(QListWidget.LeftToRight)
        self.images.setWrapping(False)
        self.images.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.images.setFixedHeight(66)
        self.images.setToolTip("Style images: one to a few pictures (a drawing, a painting, a cartoon) of a face")
        self.images.setVisible(False)
        v.addWidget(self.images)
        row = QHBoxLayout()
        self.add = QPushButton("Add style images…")
        self.add.clicked.connect(self.addRequested)
        self.clear = QPushButton("Clear")
        self.clear.clicked.connect(self.clearRequested)
        row.addWidget(self.add, 1)
        row.addWidget(self.clear)
        v.addLayout(row)
        self.aligned = QCheckBox("Aligned crops (--aligned)")
        self.aligned.setToolTip("The style images are square crops of the face already (drawings the face detector "
                                "misses): no face detection")
        v.addWidget(self.aligned)
        run = QHBoxLayout()
        self.steps = _steps_box(1, 5000, 50, 200, "Fine-tuning steps (JoJoGAN uses 300; the style shows after about "
                                "100)")
        self.stylize = _button("Stylize", "Fine-tune a copy of the model so that every face renders in the style of "
                               "the images", self.stylizeRequested)
        self.stylize.setObjectName("primary")
        run.addWidget(self.steps)
        run.addWidget(self.stylize, 1)
        v.addLayout(run)
        v.addLayout(_progress_row(self))
        files = QHBoxLayout()
        self.load = _button("Load stylized model…", "Open a model made by main.py stylize from this model",
                            self.loadRequested)
        self.save = _button("Save…", "Save the stylized model at the strength shown (.safetensors)", self.saveRequested)
        files.addWidget(self.load, 1)
        files.addWidget(self.save)
        v.addLayout(files)
        show = QHBoxLayout()
        show.setSpacing(0)
        self.base = QPushButton("Base")
        self.styled = QPushButton("Stylized")
        self.base.setToolTip("Render with the model itself")
        self.styled.setToolTip("Render seeds, photos and the camera with the stylized model")
        group = QButtonGroup(self)
        for b in (self.base, self.styled):
            b.setCheckable(True)
            group.addButton(b)
            show.addWidget(b, 1)
        self.base.setChecked(True)
        self.styled.toggled.connect(self.styledToggled)
        v.addLayout(show)
        strength = QHBoxLayout()
        strength.addWidget(QLabel("Strength"))
        self.strength = QSlider(Qt.Horizontal)
        self.strength.setRange(0, 100)
        self.strength.setValue(100)
        self.strength.setTracking(False)
        self.strength.setToolTip("How much of the style: the weights blended between the base (0 %) and the stylized "
                                 "model (100 %)")
        self.strength.sliderMoved.connect(self._show_strength)
        self.strength.valueChanged.connect(self._on_strength)
        self.strength_value = QLabel("100 %")
        self.strength_value.setMinimumWidth(44)
        self.strength_value.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        strength.addWidget(self.strength, 1)
        strength.addWidget(self.strength_value)
        v.addLayout(strength)
        self.status = _status_line("Add one to a few style images, or load a stylized model.")
        v.addWidget(self.status)
        self.set_running(False)
        self.set_stylized(False)

    def _show_strength(self, v: int):
        self.strength_value.setText(f"{v} %")

    def _on_strength(self, v: int):
        self._show_strength(v)
        self.strengthChanged.emit(v / 100)

    def set_images(self, paths: list[str]):
        from pathlib import Path

        self.images.clear()
        for p in paths:
            pix = QPixmap(p)
            item = QListWidgetItem(QIcon(pix.scaled(48, 48, Qt.KeepAspectRatio, Qt.SmoothTransformation))
                                   if not pix.isNull() else QIcon(), "")
            item.setToolTip(Path(p).name)
            self.images.addItem(item)
        self.images.setVisible(bool(paths))
        self._enable()

    def set_running(self, running: bool, text: str = ""):
        self._running = running
        self.progress.setVisible(running)
        self.cancel.setVisible(running)
        if running:
            self.progress.setValue(0)
            self.progress.setFormat(text or "%p%")
        self._enable()

    def set_progress(self, frac: float, text: str = ""):
        self.progress.setValue(int(frac * 1000))
        if text:
            self.progress.setFormat(text)

    def set_stylized(self, available: bool, on: bool = False):
        """Whether a stylized model exists (the switch, strength and save need one) and whether it is shown."""
        self._available = available
        self.styled.blockSignals(True)
        (self.styled if on else self.base).setChecked(True)
        self.styled.blockSignals(False)
        self._enable()

    def _enable(self):
        idle = not self._running
        for w in (self.add, self.clear, self.aligned, self.steps, self.load):
            w.setEnabled(idle)
        self.stylize.setEnabled(idle and self.images.count() > 0)
        for w in (self.base, self.styled, self.strength, self.save):  # the last style stays usable while one trains
            w.setEnabled(self._available)
