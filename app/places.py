"""Where the user keeps things: the folder each kind of file was last opened from or saved to, and the recently
opened photos and models; all remembered in the settings."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog

RECENT_LIMIT = 8


class Places(QObject):
    recentChanged = Signal()

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.settings = settings

    def last_dir(self, kind: str) -> str:
        return self.settings.value(f"dirs/{kind}", str(Path.home()), str)

    def remember_dir(self, kind: str, path: str) -> None:
        p = Path(path)
        self.settings.setValue(f"dirs/{kind}", str(p if p.is_dir() else p.parent))

    def ask_open(self, parent, title: str, kind: str, filt: str, remember: bool = True) -> str:
        """A file chosen in an open dialog that starts where this kind was last opened ('' if cancelled)."""
        path, _ = QFileDialog.getOpenFileName(parent, title, self.last_dir(kind), filt)
        if path and remember:
            self.remember_dir(kind, path)
        return path

    def ask_open_files(self, parent, title: str, kind: str, filt: str) -> list[str]:
        """Files chosen in an open dialog that starts where this kind was last opened ([] if cancelled)."""
        paths, _ = QFileDialog.getOpenFileNames(parent, title, self.last_dir(kind), filt)
        if paths:
            self.remember_dir(kind, paths[0])
        return paths

    def ask_save(self, parent, title: str, kind: str, default_name: str, filt: str) -> str:
        path, _ = QFileDialog.getSaveFileName(parent, title, str(Path(self.last_dir(kind)) / default_name), filt)
        if path:
            self.remember_dir(kind, path)
        return path

    def recent(self, kind: str) -> list[str]:
        v = self.settings.value(f"recent/{kind}", [], list)
        return [p for p in (v or []) if isinstance(p, str)]

    def remember_recent(self, kind: str, path: str) -> None:
        path = str(Path(path).resolve())
        items = [path] + [p for p in self.recent(kind) if p != path]
        self.settings.setValue(f"recent/{kind}", items[:RECENT_LIMIT])
        self.recentChanged.emit()
