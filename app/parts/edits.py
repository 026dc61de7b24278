"""The edits part: one slider per direction (its α and W+ layer range), the direction set (computed, opened, saved,
renamed) and style mixing. They act on whatever is edited: a seed, a latent, a photo or the camera."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QInputDialog

from app import jobs
from app.panels import DirectionsPanel, MixPanel
from app.workers import run_task

DIRECTION_FILTER = "Direction sets (*.npz)"


class EditsPart(QObject):
    def __init__(self, editor, parent=None):
        super().__init__(parent)
        self.editor = editor
        self.panel = DirectionsPanel()
        self.panel.resetAllRequested.connect(self.reset_all)
        self.panel.computeRequested.connect(self.compute_directions)
        self.panel.openRequested.connect(self.choose_directions)
        self.panel.saveRequested.connect(self.save_directions)
        self.panel.locksChanged.connect(self._on_locks)
        self.mix_panel = MixPanel()
        self.mix_panel.changed.connect(self._on_mix)
        self.mix_panel.useCurrentRequested.connect(self._capture_mix)
        for w in (self.panel, self.mix_panel):
            w.setEnabled(False)
        self._source = ""  # where the directions came from, shown above the sliders
        self._mix_snapshot = None
        editor.modelsChanged.connect(self._on_models)
        editor.signals.directionsChanged.connect(self._show_directions)
        editor.signals.stateChanged.connect(self._on_state)

    def _session(self):
        return self.editor.session

    @property
    def names(self) -> list[str]:
        return list(self.panel.rows)

    # --- sliders ---------------------------------------------------------------------------------------------------
    def _on_alpha(self, name: str, alpha: float):
        # One drag is one undo step; keyboard and wheel steps are each their own.
        self._session().set_alpha(name, alpha, merge=self.panel.rows[name].slider.isSliderDown())

    def _on_layers(self, name: str, a: int, b: int):
        try:
            self._session().set_layers(name, (a, b))
        except Exception as e:  # noqa: BLE001
            self.editor.notify(str(e), "error")

    def reset_all(self):
        s = self._session()
        if s is None:
            return
        with s.group("reset sliders"):  # one undo step, however many sliders moved
            for name in list(s.state.alphas):
                s.set_alpha(name, 0.0)

    def _on_state(self, state):
        s = self._session()
        if set(self.panel.rows) != set(s.directions.names):
            self._show_directions()
        for name, row in self.panel.rows.items():
            row.set_alpha(state.alphas.get(name, 0.0))
            row.set_layers(*s.edit_layers(name))
        self.panel.show_locks(state.locks)
        if not self._mix_matches(state.mix):
            self.mix_panel.show_mix(state.mix)

    def _on_locks(self, names: list):
        try:
            self._session().set_locks(names)
        except Exception as e:  # noqa: BLE001
            self.editor.notify(str(e), "error")

    def _show_directions(self, *_):
        s = self._session()
        items = [(d.name, s.edit_layers(d.name), s.alpha(d.name), d.slider) for d in s.directions]
        self.panel.set_directions(items, s.num_ws, self._source)
        lockable = list(dict.fromkeys(d.info["attribute"] for d in s.directions if d.info.get("attribute")))
        self.panel.set_lockable(lockable, s.state.locks)
        for row in self.panel.rows.values():
            row.alphaChanged.connect(self._on_alpha)
            row.layersChanged.connect(self._on_layers)
            row.renamed.connect(self.rename)
            row.resetRequested.connect(lambda name: self._session().set_alpha(name, 0.0))

    def _on_models(self, models):
        self._source = models.directions_source if models.directions is not None and len(models.directions) else ""
        self._mix_snapshot = None
        self.mix_panel.set_num_ws(models.G.num_ws)
        self._show_directions()
        for w in (self.panel, self.mix_panel):
            w.setEnabled(True)

    # --- the direction set -----------------------------------------------------------------------------------------
    def add_directions(self, dset, source: str):
        """Add a set (directions of the same names are replaced)."""
        self._source = source if not self._source else f"{self._source} + {source}"
        self._session().add_directions(dset, replace=True)

    def rename(self, old: str, new: str):
        try:
            if old != new:
                self._session().rename_direction(old, new)
        except Exception as e:  # noqa: BLE001 - a duplicate name is a user error, shown, not raised
            self.editor.notify(str(e), "error")
            self._show_directions()  # the row shows the refused name: back to the real one

    def rename_dialog(self, parent=None):
        if not self.names:
            self.editor.notify("no directions to rename")
            return
        old, ok = QInputDialog.getItem(parent, "Rename direction", "Direction:", self.names, 0, False)
        if not ok:
            return
        new, ok = QInputDialog.getText(parent, "Rename direction", f"New name for '{old}':", text=old)
        if ok and new.strip():
            self.rename(old, new.strip())

    def describe(self, parent=None):
        """Measure what every direction moves (face mesh and pixels on held-out seeds), show the heat map and the
        table, and offer the proposed names."""
        from app.describe import DescribeDialog

        ed = self.editor
        if ed.models is None or not self.names:
            ed.notify("open or compute directions first")
            return
        dlg = DescribeDialog(parent, ed.models.G, self._session().directions)
        dlg.namesChosen.connect(self._apply_names)
        dlg.show()
        self._describe_dialog = dlg  # kept alive while open

    def _apply_names(self, names: dict):
        s = self._session()
        with s.group("names from Describe"):
            for old, new in names.items():
                self.rename(old, new)

    def compute_directions(self, method: str):
        ed = self.editor
        if ed.models is None:
            return
        G = ed.models.G
        self.panel.set_busy(True)
        ed.notify(f"computing {'SeFa' if method == 'sefa' else 'GANSpace'} directions…")

        def done(dset):
            self.panel.set_busy(False)
            self.add_directions(dset, f"{method} · computed from {Path(G.source_path).name}")
            ed.notify(f"{len(dset)} {method} directions ready; double-click a name to rename it")

        def failed(msg):
            self.panel.set_busy(False)
            ed.notify(f"could not compute directions: {msg}", "error")

        ed.track(run_task(jobs.compute_directions, G, method, done=done, failed=failed))

    def choose_directions(self):
        if self.editor.models is None:
            return
        path = self.editor.places.ask_open(self.parent(), "Open direction set", "directions", DIRECTION_FILTER)
        if path:
            self.open_directions(path)

    def open_directions(self, path):
        from engine.io.directions import load_directions

        ed = self.editor
        G = ed.models.G

        def done(dset):
            self.add_directions(dset, Path(path).name)
            ed.notify(f"{len(dset)} directions from {Path(path).name}")

        ed.track(run_task(lambda ctx: load_directions(path, G), done=done, failed=lambda m: ed.notify(m, "error")))

    def save_directions(self, path=None):
        from engine.io.directions import save_directions

        ed = self.editor
        if not self.names:
            ed.notify("no directions to save")
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.parent(), "Save direction set",
                                                  str(Path(ed.places.last_dir("directions")) / "directions.npz"),
                                                  DIRECTION_FILTER)
            if not path:
                return
            if not path.endswith(".npz"):
                path += ".npz"
            ed.places.remember_dir("directions", path)
        try:
            save_directions(path, self._session().directions)
            ed.notify(f"saved {Path(path).name}")
        except Exception as e:  # noqa: BLE001
            ed.notify(str(e), "error")

    # --- style mixing ----------------------------------------------------------------------------------------------
    def toggle_mixing(self):
        self.mix_panel.enabled.toggle()

    def _wanted_mix(self):
        """What the mixing panel asks for: None (off), ('seed', n) or ('ws', captured latent)."""
        p = self.mix_panel
        if not p.enabled.isChecked():
            return None
        if p.source.currentIndex() == 0:
            return "seed", p.seed.value()
        return None if self._mix_snapshot is None else ("ws", self._mix_snapshot)

    def _mix_matches(self, mix) -> bool:
        """Whether the panel already asks for `mix` (then it is left as the user set it, "press Capture" included)."""
        want = self._wanted_mix()
        if want is None or mix is None:
            return want is None and mix is None
        if mix.layers != self.mix_panel.layers():
            return False
        return mix.seed == want[1] if want[0] == "seed" else mix.seed is None

    def _on_mix(self):
        s = self._session()
        if s is None:
            return
        want = self._wanted_mix()
        if want is None:
            s.clear_mix()
            if self.mix_panel.enabled.isChecked():
                self.mix_panel.snapshot_label.setText("press Capture")
        elif want[0] == "seed":
            s.set_mix(want[1], self.mix_panel.layers())
        else:
            s.set_mix(want[1], self.mix_panel.layers(), "captured latent")

    def _capture_mix(self):
        s = self._session()
        if s is None:
            return
        self._mix_snapshot = s.compute_ws().clone()
        self.mix_panel.snapshot_label.setText("captured")
        self._on_mix()
