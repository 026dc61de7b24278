"""Reusable widgets: the image viewport (panes side by side, empty state, toasts, drag & drop), the seed history
strip and the per-direction slider row."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QGraphicsOpacityEffect,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.theme import BASE, MUTED, TEXT


def qimage_from_rgb(rgb: np.ndarray) -> QImage:
    """uint8 H×W×3 → QImage that owns a copy of the pixels (the array may be reused by the caller)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()


@dataclass
class Pane:
    title: str
    rgb: np.ndarray  # uint8 H×W×3


class ImageView(QWidget):
    """The viewport. Draws one or more images side by side, each as large as fits, with a caption above it.

    Small renders (a 64 or 256 px model in an 800 px window) are upscaled with bicubic filtering once per size and
    cached, so repaints cost a blit.
    """

    filesDropped = Signal(list)
    openModelRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self._panes: list[Pane] = []
        self._cache: dict[tuple[int, int, int], QPixmap] = {}
        self._drag_over = False
        self._busy_text = ""

        self._empty = QWidget(self)
        lay = QVBoxLayout(self._empty)
        lay.addStretch(1)
        title = QLabel("No model loaded")
        title.setObjectName("emptyTitle")
        title.setAlignment(Qt.AlignCenter)
        self._empty_text = QLabel(
            "Open a generator to start: a BlazeStudio .safetensors model,\n"
            "an NVIDIA StyleGAN2 .pkl or a rosinality .pt checkpoint.\nYou can also drop the file here."
        )
        self._empty_text.setObjectName("emptyText")
        self._empty_text.setAlignment(Qt.AlignCenter)
        self._empty_button = QPushButton("Open model…")
        self._empty_button.setObjectName("primary")
        self._empty_button.setCursor(Qt.PointingHandCursor)
        self._empty_button.clicked.connect(self.openModelRequested)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self._empty_button)
        row.addStretch(1)
        lay.addWidget(title)
        lay.addSpacing(6)
        lay.addWidget(self._empty_text)
        lay.addSpacing(14)
        lay.addLayout(row)
        lay.addStretch(1)
        self._empty.setVisible(False)

        self._toast = QLabel(self)
        self._toast.setObjectName("toast")
        self._toast.setWordWrap(True)
        self._toast.setVisible(False)
        self._toast_fx = QGraphicsOpacityEffect(self._toast)
        self._toast.setGraphicsEffect(self._toast_fx)
        self._toast_timer = QTimer(self)
        self._toast_timer.setSingleShot(True)
        self._toast_timer.timeout.connect(lambda: self._toast.setVisible(False))

    # --- content -------------------------------------------------------------------------------------------------
    def set_panes(self, panes: list[Pane]) -> None:
        self._panes = list(panes)
        self._cache.clear()
        self.update()

    def panes(self) -> list[Pane]:
        return list(self._panes)

    def set_empty(self, empty: bool, text: str | None = None) -> None:
        if text:
            self._empty_text.setText(text)
        self._empty.setVisible(empty)
        if empty:
            self._panes = []
        self._layout_overlays()
        self.update()

    def is_empty_state(self) -> bool:
        return self._empty.isVisible()

    def set_busy(self, text: str) -> None:
        """A centred caption over the (dimmed) view while a model loads; '' clears it."""
        self._busy_text = text
        self.update()

    def show_toast(self, text: str, level: str = "info", ms: int = 4000) -> None:
        self._toast.setText(text)
        self._toast.setProperty("level", level)
        self._toast.style().unpolish(self._toast)
        self._toast.style().polish(self._toast)
        self._toast.setVisible(True)
        self._layout_overlays()
        self._toast.raise_()
        self._toast_timer.start(ms)

    def clear_toast(self) -> None:
        self._toast_timer.stop()
        self._toast.setVisible(False)

    def toast_text(self) -> str:
        return self._toast.text() if self._toast.isVisible() else ""

    # --- geometry ------------------------------------------------------------------------------------------------
    def resizeEvent(self, e):
        self._cache.clear()
        self._layout_overlays()
        super().resizeEvent(e)

    def _layout_overlays(self):
        self._empty.setGeometry(self.rect())
        w = min(520, self.width() - 40)
        self._toast.setFixedWidth(max(w, 120))
        self._toast.adjustSize()
        self._toast.move((self.width() - self._toast.width()) // 2, self.height() - self._toast.height() - 24)

    def pane_rects(self) -> list[QRectF]:
        n = len(self._panes)
        if not n:
            return []
        margin, gap, caption = 16, 12, 22
        cell_w = (self.width() - 2 * margin - (n - 1) * gap) / n
        cell_h = self.height() - 2 * margin - caption
        rects = []
        for i, pane in enumerate(self._panes):
            h, w = pane.rgb.shape[:2]
            s = max(min(cell_w / w, cell_h / h), 1e-3)
            dw, dh = w * s, h * s
            x = margin + i * (cell_w + gap) + (cell_w - dw) / 2
            y = margin + caption + (cell_h - dh) / 2
            rects.append(QRectF(round(x), round(y), round(dw), round(dh)))
        return rects

    def _scaled(self, i: int, pane: Pane, w: int, h: int) -> QPixmap:
        key = (i, w, h)
        pm = self._cache.get(key)
        if pm is None:
            src = pane.rgb
            if w > 0 and h > 0 and (w, h) != (src.shape[1], src.shape[0]):
                # Bicubic upscaling: nearly as sharp as Lanczos for a 64 or 256 px render, and 12x cheaper (0.4 vs
                # 5 ms for 256 → 720 px), which matters on the UI thread at 30+ frames a second. Area when shrinking.
                interp = cv2.INTER_CUBIC if w > src.shape[1] else cv2.INTER_AREA
                src = cv2.resize(src, (w, h), interpolation=interp)
            pm = QPixmap.fromImage(qimage_from_rgb(src))
            self._cache[key] = pm
        return pm

    def paintEvent(self, e):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(BASE))
        if self._drag_over:
            p.setPen(QColor("#4c9be8"))
            p.drawRect(self.rect().adjusted(2, 2, -3, -3))
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF() - 0.5, 7))
        p.setFont(font)
        for i, (pane, r) in enumerate(zip(self._panes, self.pane_rects())):
            p.drawPixmap(r.toRect(), self._scaled(i, pane, int(r.width()), int(r.height())))
            if pane.title:
                p.setPen(QColor(MUTED))
                p.drawText(QRectF(r.x(), r.y() - 20, r.width(), 18), Qt.AlignLeft | Qt.AlignVCenter, pane.title)
        if self._busy_text:
            p.fillRect(self.rect(), QColor(0, 0, 0, 140))
            p.setPen(QColor(TEXT))
            big = QFont(self.font())
            big.setPointSizeF(big.pointSizeF() + 3)
            p.setFont(big)
            p.drawText(self.rect(), Qt.AlignCenter, self._busy_text)
        p.end()

    # --- drag & drop ---------------------------------------------------------------------------------------------
    def dragEnterEvent(self, e):
        if e.mimeData().hasUrls():
            e.acceptProposedAction()
            self._drag_over = True
            self.update()

    def dragLeaveEvent(self, e):
        self._drag_over = False
        self.update()

    def dropEvent(self, e):
        self._drag_over = False
        self.update()
        paths = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if paths:
            e.acceptProposedAction()
            self.filesDropped.emit(paths)


class FitTabs(QTabWidget):
    """A QTabWidget as tall as the page on show (Qt's is as tall as its tallest page)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.currentChanged.connect(lambda _i: self.updateGeometry())

    def _fit(self, hint) -> QSize:
        page = self.currentWidget()
        if page is None:
            return hint
        # Pages with wrapped labels are taller when narrower: ask for the height at the width they will get.
        h = page.heightForWidth(self.width() - 12) if page.hasHeightForWidth() and self.width() > 100 else -1
        if h < 0:
            h = page.sizeHint().height()
        return QSize(hint.width(), h + self.tabBar().sizeHint().height() + 14)

    def resizeEvent(self, e):
        super().resizeEvent(e)
        if e.oldSize().width() != e.size().width():
            self.updateGeometry()

    def sizeHint(self) -> QSize:
        return self._fit(super().sizeHint())

    def minimumSizeHint(self) -> QSize:
        return self._fit(super().minimumSizeHint())


class HistoryStrip(QListWidget):
    """Thumbnails of the seeds visited, newest last; clicking one goes back to it."""

    seedChosen = Signal(int)
    THUMB = 64
    LIMIT = 60

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("history")
        self.setViewMode(QListWidget.IconMode)
        self.setFlow(QListWidget.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListWidget.Static)
        self.setIconSize(QSize(self.THUMB, self.THUMB))
        self.setFixedHeight(self.THUMB + 40)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setSpacing(3)
        self.itemClicked.connect(lambda it: self.seedChosen.emit(int(it.data(Qt.UserRole))))

    def add(self, seed: int, rgb: np.ndarray) -> None:
        for i in range(self.count()):
            if int(self.item(i).data(Qt.UserRole)) == seed:
                self._set_icon(self.item(i), rgb)
                self.setCurrentRow(i)
                return
        item = QListWidgetItem(str(seed))
        item.setData(Qt.UserRole, int(seed))
        item.setTextAlignment(Qt.AlignHCenter)
        item.setToolTip(f"seed {seed}")
        self._set_icon(item, rgb)
        self.addItem(item)
        while self.count() > self.LIMIT:
            self.takeItem(0)
        self.setCurrentItem(item)
        self.scrollToItem(item)

    def seeds(self) -> list[int]:
        return [int(self.item(i).data(Qt.UserRole)) for i in range(self.count())]

    def _set_icon(self, item: QListWidgetItem, rgb: np.ndarray) -> None:
        small = cv2.resize(rgb, (self.THUMB, self.THUMB), interpolation=cv2.INTER_AREA)
        item.setIcon(QIcon(QPixmap.fromImage(qimage_from_rgb(small))))


class DirectionRow(QWidget):
    """One attribute slider: name (double-click to rename), its α, slider, layer range and a reset button."""

    alphaChanged = Signal(str, float)  # direction, α
    layersChanged = Signal(str, int, int)  # direction, first layer, last layer (inclusive)
    renamed = Signal(str, str)  # direction, new name
    resetRequested = Signal(str)

    TICKS = 200  # slider ticks on each side of the middle

    def __init__(self, name: str, num_ws: int, layers: tuple[int, int], slider: tuple[float, float] = (-3.0, 3.0),
                 parent=None):
        super().__init__(parent)
        self.key = name
        self._lo, self._hi = float(slider[0]), float(slider[1])
        v = QVBoxLayout(self)
        v.setContentsMargins(0, 2, 0, 4)
        v.setSpacing(2)

        # Two lines per direction: name, layer range, value and reset; then the slider.
        top = QHBoxLayout()
        top.setSpacing(3)
        self.name = QLineEdit(name)
        self.name.setFrame(False)
        self.name.setReadOnly(True)
        self.name.setToolTip("Double-click to rename")
        self.name.setStyleSheet(self._NAME_STYLE)
        self.name.mouseDoubleClickEvent = self._start_rename
        self.name.editingFinished.connect(self._finish_rename)
        # A line edit scrolls to its cursor: start at the first letter, and make room for names up to ~16 letters.
        self.name.setCursorPosition(0)
        self.name.setMinimumWidth(min(round(self.name.fontMetrics().horizontalAdvance(name) * 1.15) + 12, 150))  # bold
        self.first = QSpinBox()
        self.last = QSpinBox()
        for sb in (self.first, self.last):
            sb.setObjectName("layerSpin")
            sb.setRange(0, max(num_ws - 1, 0))
            sb.setFixedWidth(34)
            sb.setAlignment(Qt.AlignCenter)
            sb.setToolTip(f"W+ layers this direction acts on (0 … {num_ws - 1}): low = pose and face shape, "
                          "middle = features, high = colour")
        self.first.setValue(layers[0])
        self.last.setValue(layers[1])
        self.first.valueChanged.connect(self._on_layers)
        self.last.valueChanged.connect(self._on_layers)
        lbl = QLabel("W+")  # short: long slider names need the room (the spin boxes explain in their tooltip)
        lbl.setProperty("muted", True)
        dash = QLabel("–")
        dash.setProperty("muted", True)
        self.value = QLabel("0.00")
        self.value.setMinimumWidth(44)
        self.value.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.reset = QToolButton()
        self.reset.setObjectName("flat")
        self.reset.setText("↺")
        self.reset.setToolTip("Reset this slider to 0")
        self.reset.clicked.connect(lambda: self.resetRequested.emit(self.key))
        top.addWidget(self.name, 1)
        top.addWidget(lbl)
        top.addWidget(self.first)
        top.addWidget(dash)
        top.addWidget(self.last)
        top.addWidget(self.value)
        top.addWidget(self.reset)
        v.addLayout(top)

        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(-self.TICKS, self.TICKS)
        self.slider.setValue(self._to_tick(0.0))
        self.slider.setPageStep(self.TICKS // 4)
        self.slider.setToolTip(f"amount {self._lo:+.2f} … {self._hi:+.2f}")
        self.slider.valueChanged.connect(self._on_slider)
        v.addWidget(self.slider)

    _NAME_STYLE = "background: transparent; border: none; padding: 0; font-weight: 600;"

    def _to_tick(self, value: float) -> int:
        # Piecewise linear so that 0 sits exactly in the middle even for an asymmetric range.
        if value >= 0:
            return round(self.TICKS * value / self._hi) if self._hi > 0 else 0
        return -round(self.TICKS * value / self._lo) if self._lo < 0 else 0

    def _from_tick(self, tick: int) -> float:
        if tick >= 0:
            return self._hi * tick / self.TICKS if self._hi > 0 else 0.0
        return -self._lo * tick / self.TICKS if self._lo < 0 else 0.0

    def alpha(self) -> float:
        return self._from_tick(self.slider.value())

    def set_alpha(self, value: float, emit: bool = False) -> None:
        self.slider.blockSignals(not emit)
        self.slider.setValue(self._to_tick(value))
        self.slider.blockSignals(False)
        self.value.setText(f"{value:+.2f}" if value else "0.00")

    def set_layers(self, first: int, last: int) -> None:
        for sb, val in ((self.first, first), (self.last, last)):
            sb.blockSignals(True)
            sb.setValue(val)
            sb.blockSignals(False)

    def layers(self) -> tuple[int, int]:
        return self.first.value(), self.last.value()

    def _on_slider(self, v: int):
        alpha = self._from_tick(v)
        self.value.setText(f"{alpha:+.2f}" if alpha else "0.00")
        self.alphaChanged.emit(self.key, alpha)

    def _on_layers(self):
        a, b = self.first.value(), self.last.value()
        if a > b:  # keep the range ordered whichever end moved
            sender = self.sender()
            if sender is self.first:
                self.last.blockSignals(True)
                self.last.setValue(a)
                self.last.blockSignals(False)
                b = a
            else:
                self.first.blockSignals(True)
                self.first.setValue(b)
                self.first.blockSignals(False)
                a = b
        self.layersChanged.emit(self.key, a, b)

    def _start_rename(self, e):
        self.name.setReadOnly(False)
        self.name.setStyleSheet("")
        self.name.selectAll()
        self.name.setFocus()

    def _finish_rename(self):
        if self.name.isReadOnly():
            return
        self.name.setReadOnly(True)
        self.name.setStyleSheet(self._NAME_STYLE)
        self.name.setCursorPosition(0)
        text = self.name.text().strip()
        if text:
            self.renamed.emit(self.key, text)
