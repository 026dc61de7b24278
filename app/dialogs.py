"""Non-modal dialogs that run long jobs: the slider sweep (video / GIF) and the mobile export."""

from __future__ import annotations

import dataclasses
import inspect
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.editor import MAIN, TEACHER, Source
from app.workers import run_task


def _path_row(edit: QLineEdit, browse) -> QWidget:
    w = QWidget()
    h = QHBoxLayout(w)
    h.setContentsMargins(0, 0, 0, 0)
    h.addWidget(edit, 1)
    b = QPushButton("Browse…")
    b.clicked.connect(browse)
    h.addWidget(b)
    return w


class JobDialog(QDialog):
    """A form, a progress bar, a result line and Run / Close buttons; subclasses fill the form and the job."""

    run_text = "Run"

    def __init__(self, parent, title: str):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.NonModal)
        self.setAttribute(Qt.WA_DeleteOnClose, False)
        self.setMinimumWidth(580)
        self.form = QFormLayout()
        self.form.setLabelAlignment(Qt.AlignRight)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.buttons = QDialogButtonBox()
        self.run_button = self.buttons.addButton(self.run_text, QDialogButtonBox.AcceptRole)
        self.run_button.setObjectName("primary")
        self.close_button = self.buttons.addButton("Close", QDialogButtonBox.RejectRole)
        self.run_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.close)
        v = QVBoxLayout(self)
        v.addLayout(self.form)
        v.addWidget(self.progress)
        v.addWidget(self.result)
        v.addWidget(self.buttons)
        self.task = None
        self.outcome = None  # the job's return value, once done

    def set_running(self, running: bool):
        self.progress.setVisible(running)
        self.run_button.setEnabled(not running)
        if running:
            self.progress.setValue(0)
            self.result.setText("")

    def on_progress(self, frac: float, text: str):
        if frac < 0:
            self.progress.setRange(0, 0)  # busy
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(frac * 1000))
        if text:
            self.progress.setFormat(text)

    def show_result(self, text: str, ok: bool = True):
        colour = "#8fd18f" if ok else "#e5534b"
        self.result.setText(f"<span style='color:{colour}'>{text}</span>")

    def start(self):
        raise NotImplementedError

    def closeEvent(self, e):
        if self.task is not None and self.task.running:
            self.task.cancel()
        super().closeEvent(e)


class SweepDialog(JobDialog):
    """Render one direction swept over a range, with everything else as the editor shows it, to MP4 or GIF."""

    run_text = "Render"

    def __init__(self, parent, editor, names: list[str], folder: str):
        super().__init__(parent, "Export slider sweep")
        self.editor = editor
        session = editor.session
        self.direction = QComboBox()
        self.direction.addItems(names)
        self.lo = QDoubleSpinBox()
        self.hi = QDoubleSpinBox()
        for sb in (self.lo, self.hi):
            sb.setRange(-1000, 1000)
            sb.setDecimals(2)
            sb.setSingleStep(0.5)
        self.direction.currentTextChanged.connect(self._range_from_direction)
        rng = QWidget()
        h = QHBoxLayout(rng)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(self.lo)
        h.addWidget(QLabel("to"))
        h.addWidget(self.hi)
        self.frames = QSpinBox()
        self.frames.setRange(2, 1000)
        self.frames.setValue(48)
        self.fps = QDoubleSpinBox()
        self.fps.setRange(1, 60)
        self.fps.setValue(24)
        self.bounce = QCheckBox("There and back (seamless loop)")
        self.bounce.setChecked(True)
        self.teacher = QCheckBox("Teacher beside the student")
        self.teacher.setEnabled(TEACHER in session.models)
        self.photo = QCheckBox("Pasted into the photo")
        self.photo.setEnabled(editor.source is Source.PHOTO)
        self.photo.setChecked(self.photo.isEnabled())
        self.out_path = QLineEdit(str(Path(folder) / "sweep.gif"))
        self.form.addRow("Direction", self.direction)
        self.form.addRow("Amounts", rng)
        self.form.addRow("Frames", self.frames)
        self.form.addRow("Frames per second", self.fps)
        self.form.addRow("", self.bounce)
        self.form.addRow("", self.teacher)
        self.form.addRow("", self.photo)
        self.form.addRow("Save as (.gif / .mp4)", _path_row(self.out_path, self._browse))
        # The first slider that is not at 0, as the user most likely wants to show that one.
        name = next((n for n in names if session.alpha(n) != 0), names[0] if names else None)
        if name:
            self.direction.setCurrentText(name)
        self._range_from_direction(self.direction.currentText())

    def _range_from_direction(self, name):
        s = self.editor.session
        if s is None or name not in s.directions:
            return
        lo, hi = s.directions[name].slider
        self.lo.setValue(lo)
        self.hi.setValue(hi)

    def _browse(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save sweep", self.out_path.text(),
                                              "GIF (*.gif);;MP4 video (*.mp4)")
        if path:
            self.out_path.setText(path)

    def start(self):
        from engine.edit.sweep import alphas_for, render_sweep, write_video

        s = self.editor.session
        name = self.direction.currentText()
        out = self.out_path.text().strip()
        if not out:
            self.show_result("choose where to save the sweep", False)
            return
        try:
            alphas = alphas_for(self.lo.value(), self.hi.value(), self.frames.value(), self.bounce.isChecked())
        except Exception as e:  # noqa: BLE001
            self.show_result(str(e), False)
            return
        state = s.state
        states = [dataclasses.replace(state, alphas={**state.alphas, name: float(a)}) for a in alphas]
        models = [s.models[MAIN]] + ([s.models[TEACHER]] if self.teacher.isChecked() else [])
        photo = self.editor.photo if self.photo.isChecked() else None
        fps = self.fps.value()

        def job(ctx):
            import torch

            from engine.faces import paste_back

            ctx.check()
            ws = torch.cat([s.compute_ws(st) for st in states])
            paste = None if photo is None else (lambda img: paste_back(photo.rgb, img, photo.aligned))

            def on_frame(done, total):
                ctx.progress(done, total, f"frame {done}/{total}")
                ctx.check()

            frames = render_sweep(models, ws, noise_mode=s.noise_mode, batch=1, paste=paste, pad=4, on_batch=on_frame)
            ctx.progress(1, 1, "writing…")
            return write_video(frames, out, fps=fps)

        self.set_running(True)

        def done(path):
            self.set_running(False)
            self.outcome = path
            self.show_result(f"wrote {path} ({len(states)} frames)")

        def failed(msg):
            self.set_running(False)
            self.show_result(msg, False)

        def cancelled():
            self.set_running(False)
            self.show_result("cancelled", False)

        self.task = run_task(job, done=done, failed=failed, cancelled=cancelled, progress=self.on_progress)


class ExportDialog(JobDialog):
    """Drives engine.export.export_model: formats, precision, output folder, progress, the verification result."""

    run_text = "Export"

    def __init__(self, parent, editor):
        super().__init__(parent, "Export for mobile")
        self.editor = editor
        self.models, self.settings = editor.models, editor.settings
        settings = self.settings
        G = self.models.G
        # What the editor shows is what gets exported: a stylized stand-in (Style panel) at its strength, if one is on.
        shown = editor.generator
        self.stylized = shown is not None and shown is not G
        self.formats = {}
        fmts = QWidget()
        h = QHBoxLayout(fmts)
        h.setContentsMargins(0, 0, 0, 0)
        for key, label, tip in (
            ("coreml", "Core ML", "iOS / macOS .mlpackage (structural checks; Core ML runs only on Apple devices)"),
            ("tflite", "TFLite", "Android / LiteRT .tflite, FP32 and FP16 (and 8-bit with int8), run and compared "
                                 "here"),
            ("onnx", "ONNX", "onnxruntime (desktop, web, mobile), run and compared here"),
        ):
            cb = QCheckBox(label)
            cb.setToolTip(tip)
            cb.setChecked(settings.value(f"export/{key}", True, bool))
            self.formats[key] = cb
            h.addWidget(cb)
        h.addStretch(1)
        self.precision = QComboBox()
        self.precision.addItems(["fp16", "fp32", "int8"])
        self.precision.setCurrentText(settings.value("export/precision", "fp16", str))
        self.precision.setToolTip("Core ML's precision (int8: 8-bit weights); TFLite is always written in FP32 and "
                                  "FP16, plus two 8-bit files with int8; ONNX in FP32")
        self.bits = QComboBox()
        self.bits.addItems(["8", "6", "4"])
        self.bits.setToolTip("With int8: Core ML weight bits (8 linear; 6 or 4 palettised, smaller, softer)")
        self.bits.setEnabled(self.precision.currentText() == "int8")
        self.precision.currentTextChanged.connect(lambda p: self.bits.setEnabled(p == "int8"))
        self.with_directions = QCheckBox("Include the direction set (sliders on the phone)")
        self.with_directions.setChecked(True)
        has_encoder = self.models.encoder is not None
        self.with_encoder = QCheckBox("Include the encoder (the phone takes a face in)")
        self.with_encoder.setChecked(has_encoder)
        self.with_encoder.setEnabled(has_encoder)
        self.fused = QCheckBox("One fused stylizer model too (face + sliders → edited face)")
        self.fused.setEnabled(has_encoder)
        self.with_encoder.toggled.connect(self.fused.setEnabled)
        stem = Path(G.source_path).stem + ("-stylized" if self.stylized else "")
        default_out = Path(settings.value("dirs/export", str(Path.home()), str)) / f"{stem}-export"
        self.out_path = QLineEdit(str(default_out))
        self.force = QCheckBox("Replace an earlier export in this folder")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setVisible(False)
        self.details.setMinimumHeight(140)
        self.details.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.open_folder = QPushButton("Open folder")
        self.open_folder.setVisible(False)
        self.open_folder.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(self.out_path.text())))
        what = " · stylized (as shown)" if self.stylized else ""
        self.form.addRow("Model", QLabel(f"{Path(G.source_path).name}{what} · {G.cfg.arch} · {G.resolution} px"))
        self.form.addRow("Formats", fmts)
        self.form.addRow("Precision", self.precision)
        self.form.addRow("Core ML bits", self.bits)
        self.form.addRow("", self.with_directions)
        self.form.addRow("", self.with_encoder)
        self.form.addRow("", self.fused)
        self.form.addRow("Output folder", _path_row(self.out_path, self._browse))
        self.form.addRow("", self.force)
        self.layout().insertWidget(3, self.details)
        self.buttons.addButton(self.open_folder, QDialogButtonBox.ActionRole)
        if not G.is_student:
            self.show_result("this is a StyleGAN2 teacher: exports are for BlazeStyleGAN students", False)
            self.run_button.setEnabled(False)

    def _browse(self):
        path = QFileDialog.getExistingDirectory(self, "Export folder", str(Path(self.out_path.text()).parent))
        if path:
            self.out_path.setText(str(Path(path) / Path(self.out_path.text()).name))

    def start(self):
        from engine.export import export_model
        from engine.export.exporter import summary

        fmts = [k for k, cb in self.formats.items() if cb.isChecked()]
        if not fmts:
            self.show_result("choose at least one format", False)
            return
        out = Path(self.out_path.text().strip())
        precision = self.precision.currentText()
        force = self.force.isChecked()
        for k, cb in self.formats.items():
            self.settings.setValue(f"export/{k}", cb.isChecked())
        self.settings.setValue("export/precision", precision)
        self.settings.setValue("dirs/export", str(out.parent))
        session = self.editor.session
        dset = session.directions if (self.with_directions.isChecked() and session) else None
        G = self.editor.generator or self.models.G
        encoder = self.models.encoder if self.with_encoder.isChecked() else False
        fused = self.fused.isChecked() and self.fused.isEnabled() and encoder is not False
        bits = int(self.bits.currentText()) if precision == "int8" else 8
        takes_callback = "callback" in inspect.signature(export_model).parameters

        def job(ctx):
            import copy

            from engine.io.directions import save_directions

            # The converters trace the network; a private copy keeps that away from the live renders.
            model = copy.deepcopy(G)

            ctx.progress(-1, 1, "exporting… (converting and verifying each file)")
            with tempfile.TemporaryDirectory(prefix="blazestudio-export-") as tmp:
                dpath = None
                if dset is not None and len(dset):
                    dpath = save_directions(Path(tmp) / "directions.npz", dset)
                kw = {}
                if takes_callback:
                    kw["callback"] = lambda step, total, text="": ctx.progress(step, total, text)
                try:
                    manifest = export_model(model, out, fmts, precision, directions=dpath, force=force,
                                            progress=False, encoder=encoder, fused=fused, bits=bits, **kw)
                    return manifest, None
                except Exception as e:  # noqa: BLE001 - a failed verification still wrote files worth showing
                    from engine.export import VerificationError

                    if isinstance(e, VerificationError) and (out / "manifest.json").exists():
                        import json

                        return json.loads((out / "manifest.json").read_text()), str(e)
                    raise
            return None

        self.set_running(True)
        self.details.setVisible(False)

        def done(result):
            manifest, error = result
            self.set_running(False)
            self.outcome = manifest
            self.details.setPlainText(summary(manifest, out))
            self.details.setVisible(True)
            self.open_folder.setVisible(True)
            if error is None and manifest["verification"]["passed"]:
                n = len(manifest["models"])
                self.show_result(f"✓ {n} file{'s' if n != 1 else ''} exported and verified in {out}")
            else:
                self.show_result(f"✗ {error or 'verification failed'}", False)

        def failed(msg):
            self.set_running(False)
            self.show_result(msg, False)

        self.task = run_task(job, done=done, failed=failed, progress=self.on_progress)

