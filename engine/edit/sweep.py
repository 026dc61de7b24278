"""Slider sweeps: one direction moved across a range, rendered frame by frame by one or more models side by side,
written as a video or a looping GIF (what users share). `main.py sweep` and the editor's sweep dialog both use it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.errors import UserError
from engine.render import side_by_side, to_uint8


def alphas_for(lo: float, hi: float, frames: int, bounce: bool = False) -> np.ndarray:
    """The amounts of a sweep from lo to hi in `frames` steps; with bounce there and back (frames counts the loop)."""
    if frames < 2:
        raise UserError("a sweep needs at least 2 frames")
    if not bounce:
        return np.linspace(lo, hi, frames)
    # There and back without repeating the turning points, so the loop is seamless.
    up = np.linspace(lo, hi, frames // 2 + 1)
    return np.concatenate([up, up[-2:0:-1]])[:frames] if frames > 2 else up[:frames]


def render_sweep(models: list, ws: torch.Tensor, *, noise_mode: str = "const", batch: int = 8,
                 paste: Callable[[np.ndarray], np.ndarray] | None = None, pad: int = 0, bg: int = 0,
                 on_batch: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """One uint8 frame per latent of ws [N, num_ws, w_dim]: every model's render (passed through `paste` when given,
    e.g. into the photo it was inverted from), side by side with `pad` pixels of `bg` between. on_batch(done, total)
    after each batch (it may raise to stop)."""
    frames: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(ws), batch):
            tiles = [to_uint8(G.synthesis(ws[i : i + batch], noise_mode=noise_mode)) for G in models]
            for k in range(len(tiles[0])):
                row = [t[k] if paste is None else paste(t[k]) for t in tiles]
                frames.append(row[0] if len(row) == 1 else _even(side_by_side(row, pad, bg)))
            if on_batch is not None:
                on_batch(len(frames), len(ws))
    return frames


def _even(frame: np.ndarray) -> np.ndarray:
    # Video encoders want even sizes; one model's render (a power of two) always has them.
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def write_video(frames: list[np.ndarray], path, fps: float = 24.0) -> Path:
    """uint8 [H, W, 3] frames → .mp4 (OpenCV, mp4v) or .gif (Pillow, looping)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise UserError(f"sweep output must end in .mp4 or .gif, not {path.suffix or '(none)'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    if suffix == ".gif":
        ims = [Image.fromarray(f) for f in frames]
        try:
            ims[0].save(path, save_all=True, append_images=ims[1:], duration=round(1000 / fps), loop=0)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        return path
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise UserError(f"cannot write {path} (OpenCV could not open an mp4v writer there)")
    try:
        for f in frames:
            writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    finally:
        writer.release()
    return path
