"""Directions → Describe: measure what each direction of the loaded set moves and name the sliders after it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase, QPixmap
from PySide6.QtWidgets import QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton, QSpinBox

from app.dialogs import JobDialog
from app.workers import run_task


class DescribeDialog(JobDialog):
    """Directions → Describe: measure what each direction moves (engine.edit.labelled.describe) and show the heat map
    and table; "Use the proposed names" renames the directions after their main measured effect."""

    run_text = "Measure"
    namesChosen = Signal(dict)  # {old name: new name}

    def __init__(self, parent, G, directions):
        super().__init__(parent, "Describe directions")
        self.G, self.directions = G, directions
        self.faces = QSpinBox()
        self.faces.setRange(8, 1000)
        self.faces.setValue(40)
        self.faces.setToolTip("Held-out faces each direction is swept on (more: steadier numbers, slower)")
        self.form.addRow("Faces per direction", self.faces)
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignCenter)
        self.table = QPlainTextEdit()
        self.table.setReadOnly(True)
        self.table.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.table.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.table.setVisible(False)
        self.layout().insertWidget(1, self.picture)
        self.layout().insertWidget(2, self.table)
        self.use_names = QPushButton("Use the proposed names")
        self.use_names.setEnabled(False)
        self.use_names.clicked.connect(self._use_names)
        self.buttons.addButton(self.use_names, QDialogButtonBox.ActionRole)
        self.result_doc = None

    def start(self):
        from engine.edit.labelled import HELD_OUT_SEED, describe, sample_attributes

        G, dset, n = self.G, self.directions, self.faces.value()

        def job(ctx):
            ctx.progress(-1, 1, "measuring faces…")
            samples = sample_attributes(G, max(100, 2 * n), seed0=HELD_OUT_SEED + 50_000, progress=False)

            def step(done, total):
                ctx.progress(done, total, f"direction {done + 1}/{total}")
                return not ctx.cancelled

            return describe(G, dset, samples, range(HELD_OUT_SEED, HELD_OUT_SEED + n), progress=False,
                            callback=step)

        self.set_running(True)

        def done(result):
            from app.widgets import qimage_from_rgb
            from engine.edit.labelled import heatmap, proposed_names, report_markdown

            self.set_running(False)
            self.result_doc = result
            pix = QPixmap.fromImage(qimage_from_rgb(heatmap(result)))
            self.picture.setPixmap(pix.scaledToWidth(min(pix.width(), 1100), Qt.SmoothTransformation))
            self.table.setPlainText(report_markdown(result))
            self.table.setVisible(True)
            names = proposed_names(result)
            self.use_names.setEnabled(bool(names))
            self.show_result(f"{len(result)} directions measured; proposed: "
                             + (", ".join(f"{a} → {b}" for a, b in names.items()) or "no renames"))

        def failed(msg):
            self.set_running(False)
            self.show_result(msg, False)

        self.task = run_task(job, done=done, failed=failed, progress=self.on_progress,
                             cancelled=lambda: (self.set_running(False), self.show_result("cancelled", False)))

    def _use_names(self):
        from engine.edit.labelled import proposed_names

        if self.result_doc is not None:
            self.namesChosen.emit(proposed_names(self.result_doc))
            self.use_names.setEnabled(False)
