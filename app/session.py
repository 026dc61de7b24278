"""Qt side of the edit session: forwards the UI's edits to `engine.edit.EditSession` and turns its finished frames
into a Qt signal delivered on the UI thread.

The EditSession renders on its own worker and merges requests (only the newest pending state renders), so a
dragged slider never builds a backlog; this bridge adds the thread hop and an optional per-frame post-process (the
photo mode's paste-back), which runs on the render worker so the UI thread only blits.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from PySide6.QtCore import QObject, Signal

MAIN, TEACHER = "main", "teacher"


@dataclass
class Frame:
    """One finished render, as the UI shows it."""

    student: np.ndarray  # uint8 H×W×3: the main model's output (usually the student)
    teacher: np.ndarray | None = None  # the teacher's render of the same W+, when side by side is on
    ms: float = 0.0  # render time of the main model (0 when it came from the session's cache)
    teacher_ms: float = 0.0
    ws: torch.Tensor | None = None  # the edited W+ that produced it [1, num_ws, w_dim]
    version: int = 0  # the EditSession version it shows
    extra: dict = field(default_factory=dict)  # post-process outputs (the pasted photo)


class SessionBridge(QObject):
    rendered = Signal(object)  # Frame
    failed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None
        self._source = ""
        self._post = None
        self._post_lock = threading.Lock()
        self._show_teacher = False
        self._paused = False

    # --- lifetime ------------------------------------------------------------------------------------------------
    def attach(self, G, teacher=None, directions=None, source: str = ""):
        """A new EditSession for G (and its teacher). `directions`: a DirectionSet or None."""
        from engine.edit import EditSession

        self.close()
        models = {MAIN: G}
        if teacher is not None:
            models[TEACHER] = teacher
        self.session = EditSession(models, directions, on_frame=self._on_frame)
        self._source = source if directions is not None and len(directions) else ""
        return self.session

    def set_teacher(self, teacher):
        """Rebuild the session with a teacher added, carrying the current base and edits over (history restarts)."""
        old = self.session
        if old is None:
            return
        st = old.state
        self.attach(old.models[MAIN], teacher, old.directions, self._source)
        s = self.session
        with s.group("carried over"):
            s.set_base(st.base, label="carried over", **st.base_info)
            s.set_psi(st.psi, st.cutoff)
            for name, layers in st.layers.items():
                s.set_layers(name, layers)
            for name, alpha in st.alphas.items():
                s.set_alpha(name, alpha)
            if st.mix is not None:
                s.set_mix(st.mix.ws, st.mix.layers, st.mix.label)
        self.request_render()

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None

    @property
    def ready(self) -> bool:
        return self.session is not None

    @property
    def has_teacher(self) -> bool:
        return self.session is not None and TEACHER in self.session.models

    # --- rendering -----------------------------------------------------------------------------------------------
    def set_show_teacher(self, on: bool, render: bool = True):
        self._show_teacher = bool(on)
        if render:
            self.request_render()

    def set_paused(self, paused: bool):
        """While the camera runs it renders every frame itself; the session's own renders would only compete."""
        self._paused = bool(paused)
        if not paused:
            self.request_render()

    def request_render(self) -> int:
        if self.session is None or self._paused:
            return 0 if self.session is None else self.session.version
        which = None if (self._show_teacher and self.has_teacher) else MAIN
        return self.session.request_render(which=which)

    def set_postprocess(self, fn):
        """fn(frame) -> dict of extra outputs, run on the render worker; None to clear."""
        with self._post_lock:
            self._post = fn

    def _on_frame(self, f):
        if f.error:
            self._emit(self.failed, f"render failed: {f.error}")
            return
        if MAIN not in f.images:
            return
        frame = Frame(
            student=f.images[MAIN],
            teacher=f.images.get(TEACHER) if self._show_teacher else None,
            ms=f.ms.get(MAIN, 0.0),
            teacher_ms=f.ms.get(TEACHER, 0.0),
            ws=f.ws,
            version=f.version,
        )
        with self._post_lock:
            post = self._post
        if post is not None:
            try:
                frame.extra = post(frame) or {}
            except Exception as e:  # noqa: BLE001 - shown, never raised on the render worker
                from app.workers import describe_error

                self._emit(self.failed, describe_error(e))
                return
        self._emit(self.rendered, frame)

    @staticmethod
    def _emit(signal, *args):
        try:
            signal.emit(*args)
        except RuntimeError:  # the window is gone
            pass

    # --- edits (each call is one undoable change, then a render request) -----------------------------------------
    def _do(self, fn, *args, **kw) -> int:
        if self.session is None:
            return 0
        fn(*args, **kw)
        return self.request_render()

    def set_seed(self, seed: int) -> int:
        return self._do(self.session.set_seed, int(seed)) if self.session else 0

    def set_base(self, ws, kind: str, label: str = "", keep_edits: bool = False, **info) -> int:
        if self.session is None:
            return 0
        return self._do(self.session.set_base, ws, label or kind, keep_edits, kind=kind, **info)

    def set_psi(self, psi: float, merge: bool = False, render: bool = True) -> int:
        if self.session is None:
            return 0
        if not render:  # another change follows at once and renders both
            self.session.set_psi(float(psi), merge=merge)
            return self.session.version
        return self._do(self.session.set_psi, float(psi), merge=merge)

    def set_strength(self, name: str, value: float, merge: bool = False) -> int:
        return self._do(self.session.set_alpha, name, float(value), merge=merge) if self.session else 0

    def set_layers(self, name: str, a: int, b: int) -> int:
        return self._do(self.session.set_layers, name, (int(a), int(b))) if self.session else 0

    def reset_strengths(self) -> int:
        """Every slider back to 0 (ψ, mixing and layer ranges stay)."""
        if self.session is None:
            return 0
        with self.session.group("reset sliders"):  # one undo step, however many sliders moved
            for name in list(self.session.state.alphas):
                self.session.set_alpha(name, 0.0)
        return self.request_render()

    def set_mix(self, source, layers=None) -> int:
        """source: None (off), ('seed', int) or ('ws', tensor)."""
        if self.session is None:
            return 0
        if source is None:
            return self._do(self.session.clear_mix)
        kind, value = source
        if kind == "seed":
            return self._do(self.session.set_mix, int(value), layers)
        return self._do(self.session.set_mix, value, layers, "captured latent")

    def undo(self) -> bool:
        if self.session is None or not self.session.undo():
            return False
        if self.session.state.base_info.get("w_avg"):
            # The session's first state (the average face before any seed) is not a place the user has been.
            self.session.redo()
            return False
        self.request_render()
        return True

    def redo(self) -> bool:
        if self.session is None or not self.session.redo():
            return False
        self.request_render()
        return True

    # --- reading the state ---------------------------------------------------------------------------------------
    def snapshot(self) -> dict | None:
        """The current state in the widgets' terms."""
        if self.session is None:
            return None
        s = self.session
        st = s.state
        mix = None
        if st.mix is not None:
            m = re.fullmatch(r"seed (\d+)", st.mix.label or "")
            mix = ("seed", int(m.group(1)), st.mix.layers) if m else ("ws", st.mix.ws, st.mix.layers)
        return {
            "photo_id": st.base_info.get("photo_id"),
            "seed": st.base_info.get("seed"),
            "base": "seed" if "seed" in st.base_info else st.base_info.get("kind", "latent"),
            "psi": st.psi,
            "strengths": dict(st.alphas),
            "layers": {d.name: s.edit_layers(d.name) for d in s.directions},
            "mix": mix,
        }

    def direction_items(self) -> list:
        """(name, name, (first, last), strength, (slider lo, hi)) for every direction."""
        if self.session is None:
            return []
        s = self.session
        return [(d.name, d.name, s.edit_layers(d.name), s.alpha(d.name), d.slider) for d in s.directions]

    def directions_source(self) -> str:
        return self._source

    def current_ws(self):
        return None if self.session is None else self.session.compute_ws().clone()

    def edit_summary(self) -> dict:
        return {} if self.session is None else dict(self.session.state.alphas)

    def edit_function(self):
        """A thread-safe ws -> edited ws that applies the current sliders and mixing (not ψ) to any latent, for
        the webcam, which brings its own base latent every frame."""
        from engine.edit import apply_edits, style_mix

        session = self.session

        def edit(ws):
            st = session.state  # states are immutable: one read is a consistent snapshot
            if st.mix is not None:
                ws = style_mix(ws, st.mix.ws, st.mix.layers)
            terms = [(session.directions[n], a, st.layers.get(n)) for n, a in st.alphas.items()]
            return apply_edits(ws, terms) if terms else ws

        return edit

    # --- directions ----------------------------------------------------------------------------------------------
    def set_directions(self, dset, source: str = ""):
        """Add a set (directions with the same names are replaced)."""
        if self.session is None:
            return
        self.session.add_directions(dset, replace=True)
        self._source = source if not self._source else f"{self._source} + {source}"
        self.request_render()

    def rename(self, old: str, new: str):
        if self.session is not None and old != new:
            self.session.rename_direction(old, new)

    def save_directions(self, path):
        from engine.io.directions import save_directions

        if self.session is None:
            return None
        return save_directions(path, self.session.directions)

    def save_latent(self, path, meta: dict):
        return self.session.save_latent(path, **meta)
