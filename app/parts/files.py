"""The files part: the picture and the latent on screen saved or copied, latents opened, recent photos and models,
files dropped on the window, and the two export dialogs (a slider sweep as video or GIF; the student for phones).

Opening a photo, a model, a video or a direction set belongs to other parts: this one asks for it with a signal."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication

from app.editor import Source

LATENT_FILTER = "Latents (*.npz)"
MODEL_SUFFIXES = (".safetensors", ".pkl", ".pt", ".pth")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class FilesPart(QObject):
    photoRequested = Signal(object)  # a path to open as a photo
    modelRequested = Signal(str)
    videoRequested = Signal(str)  # a video to play as the camera
    directionsRequested = Signal(str)

    def __init__(self, editor, display, parent=None):
        super().__init__(parent)
        self.editor, self.display = editor, display
        self.recent_menus: dict = {}  # kind ("photos" | "models") -> QMenu, filled by add_recent_menu
        self._dialogs: list = []
        editor.places.recentChanged.connect(self.rebuild_recent_menus)

    def _picture(self):
        """What is on screen: the edited face pasted into its photo when a photo is edited, else the render."""
        frame = self.display.last_frame
        if self.editor.source is Source.PHOTO and "pasted" in frame.extra:
            return frame.extra["pasted"]
        return frame.main

    # --- pictures and latents --------------------------------------------------------------------------------------
    def save_image(self, path=None):
        ed = self.editor
        frame = self.display.last_frame
        if frame is None:
            ed.notify("nothing to save yet")
            return
        if path is None:
            seed = ed.session.state.base_info.get("seed")
            default = "edited.png" if ed.source is Source.PHOTO and "pasted" in frame.extra else \
                f"seed{seed}.png" if ed.source is Source.SEED else "image.png"
            path = ed.places.ask_save(self.parent(), "Save image", "images", default, "PNG images (*.png)")
        if path:
            ed.write_image(self._picture(), path)

    def copy_image(self):
        from app.widgets import qimage_from_rgb

        if self.display.last_frame is None:
            return
        QApplication.clipboard().setImage(qimage_from_rgb(self._picture()))
        self.editor.status("image copied")

    def save_latent(self, path=None):
        ed = self.editor
        if ed.models is None or self.display.last_frame is None:
            ed.notify("nothing to save yet")
            return
        if path is None:
            seed = ed.session.state.base_info.get("seed")
            default = f"seed{seed}.npz" if ed.source is Source.SEED else "latent.npz"
            path = ed.places.ask_save(self.parent(), "Save latent", "latents", default, LATENT_FILTER)
            if not path:
                return
        path = str(path)
        if not path.endswith(".npz"):
            path += ".npz"
        try:
            ed.session.save_latent(path, **self.latent_meta())
            ed.notify(f"saved {Path(path).name}")
        except Exception as e:  # noqa: BLE001
            ed.notify(str(e), "error")

    def latent_meta(self) -> dict:
        """What a saved latent says about how it was made, besides the session's own record."""
        ed = self.editor
        st = ed.session.state
        meta = {"app": "blazestudio", "edits": dict(st.alphas)}
        if ed.source is Source.SEED:
            meta.update(seeds=[st.base_info.get("seed")], psi=st.psi)
        if ed.source is Source.PHOTO:
            meta.update(source=ed.photo.name, alignment=ed.photo.aligned.to_json())
        return meta

    def choose_latent(self):
        path = self.editor.places.ask_open(self.parent(), "Load latent", "latents", LATENT_FILTER)
        if path:
            self.open_latent(path)

    def open_latent(self, path):
        from engine.io.latents import load_latent

        ed = self.editor
        if ed.models is None:
            ed.notify("open a model first")
            return
        try:
            ws, meta = load_latent(path, ed.models.G)
        except Exception as e:  # noqa: BLE001
            ed.notify(str(e), "error", 8000)
            return
        ed.set_camera(False)
        name = Path(path).name
        # The file holds an already edited W+: it becomes the base, without ψ or the current sliders on top.
        ed.session.set_base(ws[:1], name, keep_edits=False, kind="latent", latent=name)
        ed.discard_older_frames()
        extra = f" (first of {len(ws)})" if len(ws) > 1 else ""
        ed.notify(f"loaded {name}{extra}")

    def open_npz(self, path):
        """A latent or a direction set, whichever the file holds."""
        from engine.io.directions import is_direction_file

        if self.editor.models is None:
            self.editor.notify("open a model first")
            return
        if is_direction_file(path):
            self.directionsRequested.emit(str(path))
        else:
            self.open_latent(path)

    def open_paths(self, paths: list[str]):
        """Drag & drop: photos open for editing, models load, .npz load as latents (or direction sets), videos
        play as the camera."""
        from engine.live import VIDEO_SUFFIXES

        for p in paths[:1]:
            suffix = Path(p).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                self.photoRequested.emit(p)
            elif suffix in MODEL_SUFFIXES:
                self.modelRequested.emit(p)
            elif suffix == ".npz":
                self.open_npz(p)
            elif suffix in VIDEO_SUFFIXES:
                self.videoRequested.emit(p)
            else:
                self.editor.notify(f"{Path(p).name}: drop a photo, a model, a latent (.npz) or a video", "error")

    # --- recent files ----------------------------------------------------------------------------------------------
    def add_recent_menu(self, kind: str, menu) -> None:
        self.recent_menus[kind] = menu
        self.rebuild_recent_menus()

    def rebuild_recent_menus(self):
        openers = {"photos": self.photoRequested.emit, "models": self.modelRequested.emit}
        for kind, menu in self.recent_menus.items():
            menu.clear()
            items = self.editor.places.recent(kind)
            for p in items:
                a = menu.addAction(Path(p).name)
                a.setToolTip(p)
                a.triggered.connect(lambda _=False, p=p, f=openers[kind]: f(p))
            if not items:
                a = menu.addAction("(none)")
                a.setEnabled(False)

    # --- export ----------------------------------------------------------------------------------------------------
    def export_sweep(self):
        from app.dialogs import SweepDialog

        ed = self.editor
        if ed.models is None:
            return
        names = ed.session.directions.names
        if not names:
            ed.notify("compute or open directions first; a sweep moves one slider", "error")
            return
        dlg = SweepDialog(self.parent(), ed, names, ed.places.last_dir("sweeps"))
        dlg.finished.connect(lambda *_: ed.places.remember_dir("sweeps", dlg.out_path.text() or "."))
        self._keep(dlg)
        dlg.show()

    def export_mobile(self):
        from app.dialogs import ExportDialog

        if self.editor.models is None:
            return
        dlg = ExportDialog(self.parent(), self.editor)
        self._keep(dlg)
        dlg.show()

    def _keep(self, dlg):
        # Non-modal dialogs live on after this method; hold them until closed, as their parent (the window) does.
        self._dialogs = [d for d in self._dialogs if d.isVisible()] + [dlg]
