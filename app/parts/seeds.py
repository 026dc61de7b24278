"""The seeds part: the seed and its truncation ψ, and the strip of seeds visited."""

from __future__ import annotations

import random

from PySide6.QtCore import QObject

from app.editor import Source
from app.panels import SeedPanel
from app.widgets import HistoryStrip


class SeedsPart(QObject):
    def __init__(self, editor, display, parent=None):
        super().__init__(parent)
        self.editor = editor
        self.panel = SeedPanel()
        self.panel.seedChanged.connect(self.set_seed)
        self.panel.randomRequested.connect(self._random_or_back)
        self.panel.stepRequested.connect(self.step_seed)
        self.panel.psiChanged.connect(self._on_psi)
        self.panel.setEnabled(False)
        self.history = HistoryStrip()
        self.history.seedChosen.connect(self.set_seed)
        self.history.setVisible(False)
        self._thumb_seed: int | None = None  # the next frame of this seed becomes its thumbnail …
        self._thumb_version = 0  # … once it shows at least this version
        editor.modelsChanged.connect(self._on_models)
        editor.sourceChanged.connect(self._on_source)
        editor.signals.stateChanged.connect(self._on_state)
        display.frameShown.connect(self._on_frame)

    @property
    def seed(self) -> int:
        return self.panel.seed.value()

    @property
    def psi(self) -> float:
        return self.panel.psi.value() / 100

    def set_seed(self, seed: int):
        ed = self.editor
        s = ed.session
        if s is None:
            return
        ed.set_camera(False)
        leaving = ed.source in (Source.PHOTO, Source.LATENT)
        self.panel.set_seed(seed)
        ed.focus(Source.SEED)
        self._thumb_seed = int(seed)
        psi = self.psi
        # A photo or latent sits at ψ = 1; seeds get the truncation the slider shows. Each is its own undo step, so
        # order them to leave the less surprising state in between: the seed goes first after a photo, ψ otherwise.
        # Announced together, they render once.
        with s.batch():
            if not leaving and s.state.psi != psi:
                s.set_psi(psi)
            s.set_seed(int(seed))
            if leaving and s.state.psi != psi:
                s.set_psi(psi)
        self._thumb_version = s.version
        ed.discard_older_frames()

    def step_seed(self, delta: int):
        if self.editor.source in (Source.PHOTO, Source.LATENT):
            return
        self.set_seed(max(0, self.seed + delta))

    def random_seed(self):
        self.set_seed(random.randrange(0, 100000))

    def back_to_seeds(self):
        if self.editor.source in (Source.PHOTO, Source.LATENT):
            self.set_seed(self.seed)

    def _random_or_back(self):
        if self.editor.source in (Source.PHOTO, Source.LATENT):
            self.back_to_seeds()
        else:
            self.random_seed()

    def _on_psi(self, psi: float):
        if self.editor.source is not Source.SEED:
            return
        self.editor.session.set_psi(psi, merge=self.panel.psi.isSliderDown())
        self.editor.settings.setValue("edit/psi", psi)

    def _on_models(self, models):
        self.panel.setEnabled(True)
        self.history.setVisible(True)
        self.history.clear()
        self.set_seed(self.seed)
        # The user starts at this seed: undo stops here, not at the session's average face before it.
        self.editor.session.clear_history()

    def _on_state(self, state):
        if state.base_info.get("seed") is not None:
            self.panel.set_seed(state.base_info["seed"])
        self.panel.set_psi(state.psi)

    def _on_source(self, source):
        if source is not Source.CAMERA:
            # A photo's or a latent's W+ has no seed or truncation: the controls stay, disabled, saying why.
            self.panel.set_photo_mode(source is not Source.SEED)

    def _on_frame(self, frame):
        if self._thumb_seed is not None and self.editor.source is Source.SEED and frame.version >= self._thumb_version:
            self.history.add(self._thumb_seed, frame.main)
            self._thumb_seed = None

    def restore(self, settings):
        self.panel.set_seed(settings.value("edit/seed", 0, int))
        self.panel.set_psi(settings.value("edit/psi", 0.7, float))

    def save(self, settings):
        settings.setValue("edit/seed", self.seed)
        settings.setValue("edit/psi", self.psi)
