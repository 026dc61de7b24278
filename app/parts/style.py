"""The style part: few-shot stylization (engine.edit.stylize) in the editor. The style images are inverted and a copy
of the model is fine-tuned on a worker, with progress and Cancel; a stylized model can also be loaded (main.py
stylize makes them) and saved. Shown stylized, it renders seeds, photos and the camera in the model's place
(`Editor.render_with`), its weights blended with the model's at the strength chosen."""

from __future__ import annotations

from pathlib import Path

from app import jobs
from app.panels import StylePanel
from app.parts.task_part import TaskPart
from app.workers import run_task

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)"
MODEL_FILTER = "Models (*.safetensors)"


class StylePart(TaskPart):
    def __init__(self, editor, parent=None):
        super().__init__(parent)
        self.editor = editor
        self.panel = p = StylePanel()
        self.images: list[str] = []
        self.styled = None  # the stylized generator at full strength, made from (or for) the loaded model
        self.name = ""
        self._task = None
        self._wanted = None  # (model, style, strength) of the blend to make next
        self._blending = False
        p.addRequested.connect(self.choose_images)
        p.clearRequested.connect(lambda: self.set_images([]))
        p.stylizeRequested.connect(self.stylize)
        p.cancelRequested.connect(self.cancel)
        p.loadRequested.connect(self.choose_stylized)
        p.saveRequested.connect(self.save_stylized)
        p.styledToggled.connect(self.set_stylized)
        p.strengthChanged.connect(self._on_strength)
        p.setEnabled(False)
        editor.modelLoading.connect(self._cancel_task)
        editor.modelsChanged.connect(self._on_models)

    @property
    def strength(self) -> float:
        return self.panel.strength.value() / 100

    @property
    def shown(self) -> bool:
        """Whether the stylized model renders (rather than the base)."""
        return self.styled is not None and self.panel.styled.isChecked()

    # --- style images ----------------------------------------------------------------------------------------------
    def choose_images(self):
        paths = self.editor.places.ask_open_files(self.parent(), "Add style images", "styles", IMAGE_FILTER)
        if paths:
            self.add_images(paths)

    def add_images(self, paths):
        self.set_images(self.images + [str(p) for p in paths if str(p) not in self.images])

    def set_images(self, paths):
        self.images = [str(p) for p in paths]
        self.panel.set_images(self.images)

    # --- stylizing -------------------------------------------------------------------------------------------------
    def stylize(self, **options):
        """Fine-tune a copy of the model on the style images for the panel's steps (`options`: other StyleOptions
        fields); shown stylized when done. The model itself never changes."""
        from engine.edit.stylize import StyleOptions

        ed = self.editor
        if ed.models is None or not self.images:
            self._say("Add one to a few style images first.")
            return
        self._cancel_task()
        opts = StyleOptions(**{"steps": self.panel.steps.value(), **options})
        models, n = ed.models, len(self.images)
        self.panel.set_running(True, "starting…")
        self._say(f"Stylizing with {n} image{'s' if n != 1 else ''}…")

        def done(result):
            G, st = result
            self._task = None
            self.panel.set_running(False)
            if ed.models is not models:  # another model was opened meanwhile
                return
            self.styled, self.name = G, G.cfg.info["stylized"]["name"]
            self.set_stylized(True)
            rate = st.step / max(st.seconds, 1e-9)
            self._say(f"{self.name}: {st.step} steps in {st.seconds:.0f} s ({rate:.1f} steps/s), loss "
                      f"{st.history[0]:.3f} → {st.history[-1]:.3f}. " + self.panel.status.text())

        def failed(msg):
            self._task = None
            self.panel.set_running(False)
            self._say(msg)  # e.g. no face in a drawing: the message names --aligned; images and style stay
            ed.notify(f"stylization failed: {msg}", "error", 8000)

        def cancelled():
            self._task = None
            self.panel.set_running(False)
            self._say("Cancelled; nothing changed.")

        self._task = ed.track(run_task(jobs.stylize, models, list(self.images), self.panel.aligned.isChecked(), opts,
                                       done=done, failed=failed, cancelled=cancelled,
                                       progress=self.panel.set_progress))

    # --- stylized model files --------------------------------------------------------------------------------------
    def choose_stylized(self):
        if self.editor.models is None:
            return
        path = self.editor.places.ask_open(self.parent(), "Load stylized model", "models", MODEL_FILTER)
        if path:
            self.load_stylized(path)

    def load_stylized(self, path):
        """A model made by main.py stylize from the loaded model (same W space and network), shown stylized."""
        ed, models = self.editor, self.editor.models
        if models is None:
            return

        def done(S):
            if ed.models is not models:
                return
            info = S.cfg.info.get("stylized") or {}
            self.styled, self.name = S, info.get("name") or Path(path).stem
            styles = [s for s in info.get("styles", []) if s.get("name")]
            found = [s for s in styles if Path(s["name"]).is_file()]
            if not self.images and found:  # its style images, to stylize again (more steps, another image added)
                self.set_images([s["name"] for s in found])
                self.panel.aligned.setChecked(all(s.get("aligned") for s in found))
            self.set_stylized(True)
            made = ", ".join(Path(s["name"]).name for s in styles)
            made = f" (from {made}, {info['steps']} steps)" if made and info.get("steps") else ""
            self._say(f"Loaded {Path(path).name}{made}. " + self.panel.status.text())

        def failed(msg):
            self._say(msg)
            ed.notify(msg, "error", 8000)

        ed.track(run_task(jobs.load_stylized_for, models.G, str(path), done=done, failed=failed))

    def save_stylized(self, path=None):
        """Write the stylized model at the strength set; never over the model being edited (or its teacher)."""
        ed = self.editor
        if self.styled is None or ed.models is None:
            self._say("Stylize, or load a stylized model, first.")
            return
        if path is None:
            path = ed.places.ask_save(self.parent(), "Save stylized model", "models", f"{self.name}.safetensors",
                                      MODEL_FILTER)
            if not path:
                return
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        mine = [m.source_path for m in (ed.models.G, ed.models.teacher) if m is not None and m.source_path]
        if any(path.resolve() == Path(m).resolve() for m in mine):
            self._say(f"{path.name} is the model being edited; save the stylized model under another name.")
            return
        base, styled, s = ed.models.G, self.styled, self.strength

        def write(ctx):
            from engine.edit.stylize import blend_generators
            from engine.io.checkpoints import save_generator

            G = styled if s >= 1 else blend_generators(base, styled, s)

            info = {"stylized": {**G.cfg.info.get("stylized", {}), "strength": s}} if s < 1 else None
            return save_generator(G, path, info=info)

        ed.track(run_task(write, done=lambda p: self._say(f"Saved {Path(p).name}."),
                          failed=lambda m: self._say(f"could not save: {m}")))

    # --- showing it ------------------------------------------------------------------------------------------------
    def set_stylized(self, on: bool):
        """Render with the stylized model (at the strength set) or with the model itself."""
        ed = self.editor
        on = bool(on) and self.styled is not None and ed.models is not None
        self.panel.set_stylized(self.styled is not None, on)
        note = "."
        if on and ed.edit_mode == "transfer":
            # Transfer keeps the person's own pixels and moves only what the sliders change: the style never shows.
            ed.set_edit_mode("regenerate")
            note = "; photos and the camera switched to regenerate to show it."
        self._apply()
        self._say(f"Showing {self.name} at {round(self.strength * 100)} %{note}" if on else "Showing the base model.")

    def _on_strength(self, _strength: float):
        if self.shown:
            self._apply()
            self._say(f"Showing {self.name} at {round(self.strength * 100)} %.")

    def _apply(self):
        """Show the base, the full style, or a blend at the strength set. A blend copies the model's weights
        (milliseconds at 64 px, more for a teacher), so it is made on a worker; while one is being made, only the
        latest strength asked for is kept and made next."""
        ed = self.editor
        if ed.models is None:
            return
        if not self.shown or self.strength >= 1:
            self._wanted = None
            ed.render_with(self.styled if self.shown else None)
            return
        self._wanted = (ed.models.G, self.styled, self.strength)
        if not self._blending:
            self._blend_next()

    def _blend_next(self):
        from engine.edit.stylize import blend_generators

        base, styled, s = self._wanted
        self._wanted, self._blending = None, True

        def current() -> bool:
            ed = self.editor
            return (self.shown and self.styled is styled and ed.models is not None and ed.models.G is base
                    and self.strength == s)

        def done(blend):
            self._blending = False
            if self._wanted is not None:
                self._blend_next()
            elif current():
                self.editor.render_with(blend)

        def failed(msg):
            self._blending = False
            self._say(f"could not blend the style: {msg}")
            if self._wanted is not None:
                self._blend_next()

        self.editor.track(run_task(lambda ctx: blend_generators(base, styled, s), done=done, failed=failed))

    def _on_models(self, _models):
        had = self.styled is not None
        self.styled, self.name = None, ""  # a style belongs to the model it was made from
        self.panel.set_stylized(False)
        self.panel.setEnabled(True)
        self._say("The style was made for the previous model: stylize again, or load one made for this model."
                  if had else "Add one to a few style images, or load a stylized model.")

    def _say(self, text: str):
        self.panel.status.setText(text)
