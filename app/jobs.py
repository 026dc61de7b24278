"""The work the editor hands to worker threads: loading models (and finding their teacher, directions and encoder),
photo inversion, direction computation, stylization. Plain functions of a `TaskContext`; no widgets here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class LoadedModels:
    G: object  # the model the sliders edit (usually the student)
    teacher: object | None = None  # its StyleGAN2 teacher, for side by side
    directions: object | None = None  # engine.io.directions.DirectionSet
    directions_source: str = ""
    encoder: object | None = None  # engine.models.encoder.Encoder for G's W space
    note: str = ""  # something the user should know (no encoder, teacher refused, ...)
    _inverter: object | None = field(default=None, repr=False)

    def inverter(self):
        """One Inverter (encoder + perceptual loss) per model, built on first use (it loads MobileNetV2)."""
        if self._inverter is None:
            from engine.invert import Inverter

            self._inverter = Inverter(self.G, self.encoder)
        return self._inverter

    def set_encoder(self, encoder) -> None:
        """Use another encoder: the next inversion builds its Inverter around it."""
        self.encoder, self._inverter = encoder, None


@dataclass
class PhotoState:
    rgb: np.ndarray  # the photo, uint8 RGB
    aligned: object  # engine.faces.AlignedFace (at the generator's resolution)
    ws: torch.Tensor  # [1, num_ws, w_dim] inverted codes
    faces: int = 1
    name: str = "photo"
    quality: str = ""  # reconstruction metrics in words
    tuned: object | None = None  # a copy of the generator tuned to this face ("Tune to photo"), or None


def teacher_candidates(path: Path, G) -> list[Path]:
    """Where a student's teacher may be: the file its cfg.info names (next to the student), the bundled pair, a
    'teacher.*' file beside it."""
    from engine.assets import STUDENT, TEACHER

    path = Path(path)
    out: list[Path] = []
    info = G.cfg.info or {}
    for key in ("teacher", "teacher_path", "teacher_file", "teacher_source"):
        v = info.get(key)
        if isinstance(v, dict):
            v = v.get("path") or v.get("file") or v.get("source")
        if isinstance(v, str) and v:
            p = Path(v)
            out += [p] if p.is_absolute() else [path.parent / p, path.parent / p.name]
    if path.resolve() == STUDENT.resolve():
        out.append(TEACHER)
    out += [path.parent / f"teacher{s}" for s in (".safetensors", ".pkl", ".pt")]
    seen, result = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else None
        if key and key not in seen and key != str(path.resolve()):
            seen.add(key)
            result.append(p)
    return result


def load_teacher_for(ctx, G, path):
    """Load a teacher and check it shares G's W space (a student carries its teacher's mapping network)."""
    from engine import load_generator
    from engine.errors import UserError
    from engine.io.latents import same_w_space
    from engine.runtime import prepare_for_cpu

    T = load_generator(path)
    if T.is_student:
        raise UserError(f"{Path(path).name} is a student model; open its StyleGAN2 teacher")
    if not same_w_space(T, G):
        raise UserError(f"{Path(path).name} is not this student's teacher (different mapping network / W space)")
    return prepare_for_cpu(T)


def load_encoder_for(ctx, G, path):
    """Load an encoder and check it was trained for G's W space."""
    from engine.models.encoder import check_compatible, load_encoder

    E = load_encoder(path)
    check_compatible(E, G)
    return E


def load_models(ctx, path: str, teacher_path: str | None = None, encoder_path: str | None = None,
                directions_path: str | None = None) -> LoadedModels:
    from engine import load_generator
    from engine.assets import DIRECTIONS, ENCODER
    from engine.runtime import prepare_for_cpu

    torch.set_grad_enabled(False)
    ctx.progress(0.05, 1, f"Reading {Path(path).name}…")
    G = prepare_for_cpu(load_generator(path))
    ctx.check()
    notes = []
    m = LoadedModels(G)

    if G.is_student:
        ctx.progress(0.5, 1, "Looking for the teacher…")
        tried = [Path(teacher_path)] if teacher_path else teacher_candidates(Path(path), G)
        for p in tried:
            try:
                m.teacher = load_teacher_for(ctx, G, p)
                break
            except Exception as e:  # noqa: BLE001 - a teacher is optional; say why it is missing
                if teacher_path:
                    raise
                notes.append(f"teacher {p.name} not used: {e}")
    ctx.check()

    ctx.progress(0.8, 1, "Looking for directions and the encoder…")
    here = Path(path).parent
    dir_files = [Path(directions_path)] if directions_path else [DIRECTIONS, here / "directions.npz",
                                                                  here / f"{Path(path).stem}.directions.npz"]
    for p in dir_files:
        if p.exists():
            try:
                from engine.io.directions import load_directions

                m.directions = load_directions(p, G)
                m.directions_source = p.name
                break
            except Exception as e:  # noqa: BLE001
                if directions_path:
                    raise
                notes.append(f"{p.name} not used: {e}")
    enc_files = [Path(encoder_path)] if encoder_path else [ENCODER, here / "encoder.safetensors",
                                                            here / f"{Path(path).stem}.encoder.safetensors"]
    for p in enc_files:
        if p.exists():
            try:
                from engine.models.encoder import check_compatible, load_encoder

                E = load_encoder(p)
                check_compatible(E, G)
                m.encoder = E
                break
            except Exception as e:  # noqa: BLE001
                if encoder_path:
                    raise
                notes.append(f"{p.name} not used: {e}")
    if m.encoder is None:
        notes.append("no encoder for this model: photos start from the average face and need refinement")
    m.note = notes[-1] if notes else ""
    return m


def encode_photo(ctx, models: LoadedModels, source) -> PhotoState:
    """Load → align (at the model's resolution) → encoder. The projector runs separately (refine_photo)."""
    from engine.faces import align_face, load_image

    ctx.progress(0.05, 1, "loading…")
    rgb = load_image(source)
    ctx.check()
    ctx.progress(0.2, 1, "finding the face…")
    face = align_face(rgb, size=models.G.resolution)
    ctx.check()
    ctx.progress(0.6, 1, "encoding…")
    inv = models.inverter()
    ws = inv.encode(face)
    ctx.check()
    return PhotoState(rgb=rgb, aligned=face, ws=ws.detach().cpu(), faces=face.faces,
                      quality=_quality(inv.metrics(face, ws)))


def refine_photo(ctx, models: LoadedModels, state: PhotoState, steps: int) -> torch.Tensor:
    """Projector from the current codes; progress per step; Cancel keeps the best codes found so far."""
    inv = models.inverter()

    def callback(step, total, loss):
        ctx.progress(step, total, f"refining {step}/{total} · loss {loss:.3f}")
        return not ctx.cancelled

    result = inv.project(state.aligned, state.ws, steps=steps, callback=callback)
    state.quality = _quality(inv.metrics(state.aligned, result.ws))
    # After a cancel too: the best codes so far are still closer than the start.
    return result.ws.detach().cpu()


def tune_photo(ctx, models: LoadedModels, state: PhotoState, steps: int):
    """Pivotal tuning of a copy of the generator to the photo's face; progress per step; Cancel keeps what the copy
    learnt so far. Returns the tuned copy (the loaded model is untouched)."""
    from engine.invert.projector import reconstruction_metrics
    from engine.invert.tuning import tune_to_face

    inv = models.inverter()
    target = inv.to_tensor(state.aligned)

    def callback(step, total, loss):
        ctx.progress(step, total, f"tuning {step}/{total} · loss {loss:.3f}")
        return not ctx.cancelled

    r = tune_to_face(models.G, target, state.ws, steps, perceptual=inv.perceptual, callback=callback,
                     progress=False)
    with torch.no_grad():
        state.quality = _quality(reconstruction_metrics(r.G.synthesis(state.ws, noise_mode="const"), target,
                                                        inv.perceptual)) + f" · tuned {r.steps} steps"
    from engine.runtime import prepare_for_cpu

    return prepare_for_cpu(r.G)


def stylize(ctx, models: LoadedModels, sources: list, aligned: bool, options):
    """Few-shot stylization of a copy of the model (engine.edit.stylize): the style images are inverted, then the copy
    is fine-tuned with progress per step. Cancel stops after the step in progress and keeps nothing. Returns the
    stylized generator (the loaded model is untouched) and its Stylizer (steps, loss history)."""
    from app.workers import Cancelled
    from engine.edit.stylize import Stylizer, prepare_exemplar
    from engine.runtime import prepare_for_cpu

    inv = models.inverter()
    exemplars = []
    for i, source in enumerate(sources):
        ctx.progress(0, 1, f"inverting style image {i + 1}/{len(sources)}…")
        exemplars.append(prepare_exemplar(source, inv, aligned, options.invert_steps, cancel=ctx.cancel_event))
        ctx.check()
    st = Stylizer(models.G, exemplars, options)

    def callback(step, total, loss):
        ctx.progress(step, total, f"stylizing {step}/{total} · loss {loss:.3f}")

    if st.run(callback=callback, should_stop=lambda: ctx.cancelled, progress=False) != "done":
        raise Cancelled()
    return prepare_for_cpu(st.result(Path(str(sources[0])).stem)), st


def load_stylized_for(ctx, G, path):
    """Load a stylized model (main.py stylize) and check that it can stand in for G: the same W space (the edits
    and the encoder's codes mean the same) and the same network (its strength is a blend of weights with G's)."""
    from engine import load_generator
    from engine.errors import UserError
    from engine.io.latents import same_w_space
    from engine.runtime import prepare_for_cpu

    S = load_generator(path)
    name, base = Path(path).name, Path(G.source_path).name
    if not same_w_space(S, G):
        raise UserError(f"{name} has another W space than {base}; load a model stylized from {base}")
    shapes = lambda M: {k: tuple(v.shape) for k, v in M.synthesis.state_dict().items()}  # noqa: E731
    if S.is_student != G.is_student or shapes(S) != shapes(G):
        raise UserError(f"{name} is another network than {base} (same W space); load a stylization of {base}")
    # The same layout is not the same weights: a stylization of another student of this teacher would blend
    # unrelated networks. The file records the hash of the model it was made from.
    recorded = (S.cfg.info.get("stylized") or {}).get("base_sha256")
    if recorded and G.source_path and Path(G.source_path).is_file():
        from engine.io.safety import file_sha256

        if file_sha256(G.source_path) != recorded:
            raise UserError(f"{name} was stylized from another model than {base}; load a stylization of {base}")
    return prepare_for_cpu(S)


def _quality(metrics: dict) -> str:
    if not metrics:
        return ""
    parts = []
    if "psnr" in metrics:
        parts.append(f"PSNR {metrics['psnr']:.1f} dB")
    if "perceptual" in metrics:
        parts.append(f"perceptual {metrics['perceptual']:.3f}")
    return ", ".join(parts)


def compute_directions(ctx, G, method: str):
    from engine.edit import ganspace, sefa

    if method == "sefa":
        return sefa(G, num=10)
    return ganspace(G, num=10, samples=20000)
