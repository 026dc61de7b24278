"""Editing a user's photo at its own resolution: find the face(s), invert them, and render edits either as edit
transfer (the photo's own pixels, changed only by what the edit changes; the default) or by regenerating (the
generator's rendition pasted back, which stylized models and seeds need).

    photo = PhotoEdit(load_image("me.jpg"), inverter, steps=0, tune=0)     # align + encode (+ project, + tune)
    out = photo.render(lambda ws: apply_edits(ws, edits), mode="transfer")  # uint8, the photo's size

With no edit the photo comes back bit for bit in transfer mode.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.edit.transfer import EditTransfer, check_mode
from engine.errors import UserError
from engine.faces import AlignedFace, align_face, align_faces, load_image, paste_back
from engine.render import to_uint8


@dataclass
class FaceCodes:
    """One face of the photo: its alignment, its inverted codes and the generator that renders it (a tuned copy
    after "tune to this photo", else the shared one)."""

    aligned: AlignedFace
    ws: torch.Tensor  # [1, num_ws, w_dim]
    G: object
    metrics: dict = field(default_factory=dict)  # reconstruction: perceptual, psnr
    tuning: dict = field(default_factory=dict)  # loss before/after, seconds, steps
    _before: np.ndarray | None = field(default=None, repr=False)

    @torch.inference_mode()
    def render(self, ws: torch.Tensor) -> np.ndarray:
        return to_uint8(self.G.synthesis(ws.to(self.G.w_avg.device), noise_mode="const"))[0]

    @property
    def before(self) -> np.ndarray:
        """The render of the unedited codes (what transfer compares edits with)."""
        if self._before is None:
            self._before = self.render(self.ws)
        return self._before


class PhotoEdit:
    """A photo prepared for editing."""

    def __init__(
        self,
        photo,  # path, PIL image or array (any mode load_image reads)
        inverter,  # engine.invert.Inverter for the generator that edits
        *,
        all_faces: bool = False,  # every face (largest first) instead of the largest only
        steps: int = 0,  # projector steps after the encoder
        tune: int = 0,  # pivotal-tuning steps (a tuned copy of the generator per face)
        callback=None,  # callback(stage, done, total, text) for progress; return False to cancel
        cancel: threading.Event | None = None,
        progress: bool = False,  # tqdm bars (the CLI)
        transfer: EditTransfer | None = None,
    ):
        self.rgb = load_image(photo)
        self.inverter = inverter
        self.G = inverter.G
        self.transfer = transfer or EditTransfer()
        size = self.G.resolution
        self._report(callback, "align", 0, 1, "finding the face…")
        found = align_faces(self.rgb, size=size) if all_faces else [align_face(self.rgb, size=size)]
        self.faces_seen = found[0].faces
        self.faces: list[FaceCodes] = []
        for k, aligned in enumerate(found):
            if cancel is not None and cancel.is_set():
                break
            self.faces.append(self._invert(aligned, k, len(found), steps, tune, callback, cancel, progress))

    @staticmethod
    def _report(callback, stage, done, total, text) -> bool:
        return callback is None or callback(stage, done, total, text) is not False

    def _invert(self, aligned, k, n, steps, tune, callback, cancel, progress) -> FaceCodes:
        inv = self.inverter
        label = f"face {k + 1}/{n}: " if n > 1 else ""
        self._report(callback, "encode", 0, 1, f"{label}encoding…")
        target = inv.to_tensor(aligned)
        ws = inv.encode(target)
        if steps > 0:
            result = inv.project(target, ws, steps, progress=progress, cancel=cancel,
                                 callback=lambda d, t, loss: self._report(callback, "project", d, t,
                                                                          f"{label}refining {d}/{t}"))
            ws = result.ws
        face = FaceCodes(aligned, ws.detach().cpu(), self.G, metrics=inv.metrics(target, ws))
        if tune > 0:
            from engine.invert.tuning import tune_to_face

            r = tune_to_face(self.G, target, face.ws, tune, perceptual=inv.perceptual, cancel=cancel,
                             progress=progress,
                             callback=lambda d, t, loss: self._report(callback, "tune", d, t, f"{label}tuning {d}/{t}"))
            face.G = r.G
            face.tuning = {"steps": r.steps, "loss_before": r.start_loss, "loss_after": r.loss,
                           "seconds": round(r.seconds, 2)}
            with torch.no_grad():
                recon = r.G.synthesis(face.ws, noise_mode="const")
            from engine.invert.projector import reconstruction_metrics

            face.metrics = reconstruction_metrics(recon, target, inv.perceptual)
        return face

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    def render(self, edit, mode: str = "transfer", blend: float = 1.0) -> np.ndarray:
        """The whole photo with `edit` (ws → edited ws, or a list of edited ws per face) applied to every face.
        `blend` (regenerate only) mixes the generator's face with the photo's own: 1 all generated, 0 the photo."""
        mode = check_mode(mode)
        out = self.rgb
        for k, face in enumerate(self.faces):
            edited = edit[k] if isinstance(edit, (list, tuple)) else edit(face.ws) if callable(edit) else edit
            out = self.render_face(out, face, edited, mode, blend)
        return out.copy() if out is self.rgb else out

    def render_face(self, canvas: np.ndarray, face: FaceCodes, edited_ws: torch.Tensor, mode: str,
                    blend: float = 1.0) -> np.ndarray:
        if edited_ws is None or torch.equal(edited_ws.to(face.ws), face.ws):
            if mode == "transfer":
                return canvas
            after = face.before
        else:
            after = face.render(edited_ws)
        if mode == "regenerate":
            return blend_faces(canvas, paste_back(canvas, after, face.aligned), blend)
        return self.transfer(canvas, face.aligned, face.before, after)


def check_blend(blend: float) -> float:
    blend = float(blend)
    if not 0.0 <= blend <= 1.0:
        raise UserError(f"--blend must be between 0 and 1, not {blend:g}")
    return blend


def blend_faces(original: np.ndarray, pasted: np.ndarray, blend: float) -> np.ndarray:
    """The regenerated (e.g. stylized) face mixed with the user's own at the photo's resolution: 1 keeps the
    generator's face, 0 the photo, in between a cross-fade inside the paste-back mask (outside, both are the photo)."""
    if blend >= 1.0:
        return pasted
    if blend <= 0.0:
        return original.copy()
    mixed = original.astype(np.float32) + blend * (pasted.astype(np.float32) - original.astype(np.float32))
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def check_output_path(inp, out) -> None:
    """Refuse to write over the input photo or video (a user's original is never overwritten)."""
    from pathlib import Path

    src, dst = Path(inp), Path(out)
    try:
        same = dst.exists() and src.exists() and dst.samefile(src)
    except OSError:
        same = False
    if same or src.resolve() == dst.resolve():
        raise UserError(f"--out {dst} is the input itself; choose another file (the original is never overwritten)")
