"""The dark theme: a Fusion palette plus a small style sheet. One accent colour, quiet greys, no gradients."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#4c9be8"
BG = "#1e1f22"  # window
PANEL = "#26282c"  # side panel, group boxes
BASE = "#17181a"  # inputs, viewport
TEXT = "#dcdde0"
MUTED = "#8b8e94"
BORDER = "#34363b"
DANGER = "#e5534b"

STYLE = f"""
QMainWindow, QDialog {{ background: {BG}; }}
QWidget {{ font-size: 10pt; }}
QToolTip {{ background: {PANEL}; color: {TEXT}; border: 1px solid {BORDER}; padding: 4px; }}
QScrollArea#sidePanel, QScrollArea#sidePanel > QWidget > QWidget {{ background: {BG}; border: none; }}
QGroupBox {{
    background: {PANEL}; border: 1px solid {BORDER}; border-radius: 6px;
    margin-top: 18px; padding: 10px 8px 8px 8px; font-weight: 600;
}}
QGroupBox::title {{
    subcontrol-origin: margin; subcontrol-position: top left; left: 8px; padding: 0 4px;
    color: {MUTED}; text-transform: uppercase; letter-spacing: 1px; font-size: 8pt;
}}
QLabel#muted, QLabel[muted="true"] {{ color: {MUTED}; }}
QLabel#emptyTitle {{ font-size: 18pt; font-weight: 600; color: {TEXT}; }}
QLabel#emptyText {{ color: {MUTED}; font-size: 11pt; }}
QLabel#toast {{
    background: rgba(30, 31, 34, 230); color: {TEXT}; border: 1px solid {BORDER};
    border-left: 4px solid {ACCENT}; border-radius: 6px; padding: 8px 12px;
}}
QLabel#toast[level="error"] {{ border-left-color: {DANGER}; }}
QPushButton, QToolButton {{
    background: #33363b; color: {TEXT}; border: 1px solid {BORDER}; border-radius: 5px; padding: 4px 10px;
}}
QPushButton:hover, QToolButton:hover {{ background: #3c4046; }}
QPushButton:pressed, QToolButton:pressed {{ background: #2b2d31; }}
QPushButton:checked, QToolButton:checked {{ background: {ACCENT}; color: white; border-color: {ACCENT}; }}
QPushButton:disabled, QToolButton:disabled {{ color: #5d6066; background: #2a2c30; }}
QPushButton#primary {{ background: {ACCENT}; color: white; border-color: {ACCENT}; font-weight: 600; }}
QPushButton#primary:hover {{ background: #5ea8f0; }}
QPushButton#primary:disabled {{ color: #5d6066; background: #2a2c30; border-color: {BORDER}; font-weight: 400; }}
QToolButton#flat {{ background: transparent; border: none; padding: 2px; }}
QToolButton#flat:hover {{ background: #3c4046; }}
QSpinBox, QDoubleSpinBox, QLineEdit, QComboBox {{
    background: {BASE}; color: {TEXT}; border: 1px solid {BORDER}; border-radius: 4px; padding: 3px 6px;
    selection-background-color: {ACCENT};
}}
QSpinBox#layerSpin {{ padding: 1px 2px; }}
QSpinBox#layerSpin::up-button, QSpinBox#layerSpin::down-button {{ width: 0; border: none; }}
QSpinBox:focus, QDoubleSpinBox:focus, QLineEdit:focus, QComboBox:focus {{ border-color: {ACCENT}; }}
QComboBox QAbstractItemView {{ background: {PANEL}; color: {TEXT}; selection-background-color: {ACCENT}; }}
QSlider::groove:horizontal {{ height: 4px; background: #3a3d42; border-radius: 2px; }}
QSlider::sub-page:horizontal {{ background: {ACCENT}; border-radius: 2px; }}
QSlider::handle:horizontal {{
    background: {TEXT}; width: 14px; height: 14px; margin: -5px 0; border-radius: 7px;
}}
QSlider::handle:horizontal:hover {{ background: white; }}
QSlider::sub-page:horizontal:disabled {{ background: #4a4d52; }}
QProgressBar {{
    background: {BASE}; border: 1px solid {BORDER}; border-radius: 4px; text-align: center; color: {TEXT};
    height: 16px;
}}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 3px; }}
QStatusBar {{ background: #19191c; color: {MUTED}; border-top: 1px solid {BORDER}; }}
QStatusBar QLabel {{ color: {MUTED}; padding: 0 8px; }}
QMenuBar {{ background: {BG}; color: {TEXT}; }}
QMenuBar::item:selected {{ background: #3c4046; }}
QMenu {{ background: {PANEL}; color: {TEXT}; border: 1px solid {BORDER}; }}
QMenu::item {{ padding: 5px 24px 5px 20px; }}
QMenu::item:selected {{ background: {ACCENT}; color: white; }}
QMenu::item:disabled {{ color: #5d6066; }}
QMenu::separator {{ height: 1px; background: {BORDER}; margin: 4px 8px; }}
QToolBar {{ background: {BG}; border: none; border-bottom: 1px solid {BORDER}; spacing: 4px; padding: 3px; }}
QSplitter::handle {{ background: {BORDER}; }}
QScrollBar:vertical {{ background: {BG}; width: 10px; margin: 0; }}
QScrollBar::handle:vertical {{ background: #3c3f44; border-radius: 4px; min-height: 24px; }}
QScrollBar:horizontal {{ background: {BG}; height: 10px; margin: 0; }}
QScrollBar::handle:horizontal {{ background: #3c3f44; border-radius: 4px; min-width: 24px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; }}
QListWidget#history {{ background: {BASE}; border: none; border-top: 1px solid {BORDER}; }}
QListWidget#history::item {{ border: 2px solid transparent; border-radius: 4px; }}
QListWidget#history::item:selected {{ border-color: {ACCENT}; background: transparent; }}
QCheckBox {{ color: {TEXT}; spacing: 6px; }}
QTabWidget#sourceTabs::pane {{
    background: {PANEL}; border: 1px solid {BORDER}; border-radius: 6px; top: -1px; padding: 4px;
}}
QTabBar::tab {{
    background: {BG}; color: {MUTED}; border: 1px solid {BORDER}; border-bottom: none;
    border-top-left-radius: 5px; border-top-right-radius: 5px; padding: 5px 16px; margin-right: 2px;
}}
QTabBar::tab:selected {{ background: {PANEL}; color: {TEXT}; border-top: 2px solid {ACCENT}; }}
QTabBar::tab:hover:!selected {{ color: {TEXT}; }}
QGroupBox[flat="true"] {{ background: transparent; border: none; margin-top: 0; padding: 4px 2px 2px 2px; }}
"""


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    p = QPalette()
    roles = {
        QPalette.Window: BG,
        QPalette.WindowText: TEXT,
        QPalette.Base: BASE,
        QPalette.AlternateBase: PANEL,
        QPalette.ToolTipBase: PANEL,
        QPalette.ToolTipText: TEXT,
        QPalette.Text: TEXT,
        QPalette.Button: "#33363b",
        QPalette.ButtonText: TEXT,
        QPalette.BrightText: "white",
        QPalette.Highlight: ACCENT,
        QPalette.HighlightedText: "white",
        QPalette.Link: ACCENT,
        QPalette.PlaceholderText: MUTED,
    }
    for role, colour in roles.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, QColor("#5d6066"))
    app.setPalette(p)
    app.setStyleSheet(STYLE)
