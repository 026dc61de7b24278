"""Editing a video: every frame keeps its own pixels, size and timing; faces are tracked, inverted, edited and the
edit carried over (edit transfer) or the generator's rendition pasted back (regenerate).

Flicker is what ruins GAN video edits: the encoder's codes jitter from frame to frame, and so does any picture made
from them. Three things keep the output as steady as the input: the face tracker's landmarks are smoothed (One-Euro,
as for the webcam); the codes are smoothed over time (an exponential moving average, reset when the face is lost);
and in transfer mode the motion and colour fields are blended with the previous frame's. Frames without a face pass
through untouched.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.edit.transfer import EditTransfer, TransferSettings, check_mode
from engine.errors import UserError
from engine.render import to_uint8

VIDEO_SUFFIXES_OUT = (".mp4", ".avi", ".mov", ".m4v")


@dataclass
class VideoStats:
    frames: int = 0
    with_face: int = 0
    fps: float = 0.0  # the input's frame rate (kept by the output)
    size: tuple[int, int] = (0, 0)
    seconds: float = 0.0  # wall time of the edit
    flicker_in: float = 0.0  # mean |frame t - frame t-1| of the input (0..255 units)
    flicker_out: float = 0.0  # the same for the output
    audio: bool | None = None  # the input has an audio track (None: could not tell)
    timings: dict = field(default_factory=dict)  # ms per stage, mean over frames with a face

    @property
    def flicker_ratio(self) -> float:
        return self.flicker_out / self.flicker_in if self.flicker_in > 0 else 1.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def has_audio_track(path) -> bool | None:
    """Whether an MP4/MOV file holds a sound track (its 'hdlr' atom says 'soun'); None for other containers."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".mov", ".m4v", ".3gp"):
        return None
    try:
        with open(path, "rb") as f:
            return _find_sound(f, 0, path.stat().st_size, depth=0)
    except (OSError, struct.error):
        return None


def _find_sound(f, start: int, end: int, depth: int) -> bool:
    pos = start
    while pos + 8 <= end and depth < 8:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return False
        if kind == b"hdlr":
            f.seek(pos + header + 8)  # version/flags (4) + pre_defined (4)
            if f.read(4) == b"soun":
                return True
        elif kind in (b"moov", b"trak", b"mdia"):
            if _find_sound(f, pos + header, pos + size, depth + 1):
                return True
        pos += size
    return False


class VideoReader:
    """Frames of a video file as RGB uint8, with its frame rate, size and frame count."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such video file")
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            raise UserError(f"{self.path.name}: not a video OpenCV can read; use MP4, AVI, MOV, MKV or WebM")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 480 else 30.0
        self.count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def __iter__(self):
        while True:
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


class VideoWriter:
    """RGB uint8 frames → an MP4 (mp4v) or AVI (MJPG) file, written to a temporary name and renamed at the end so an
    interrupted edit never leaves a half-written file under the requested name."""

    def __init__(self, path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES_OUT:
            raise UserError(f"the output video must end in {', '.join(VIDEO_SUFFIXES_OUT)}, not "
                            f"{self.path.suffix or '(none)'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if suffix == ".avi" else "mp4v"))
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, float(fps), tuple(size))
        if not self.writer.isOpened():
            raise UserError(f"cannot write {self.path} (OpenCV could not open a video writer there)")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))

    def finish(self) -> Path:
        self.writer.release()
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


class VideoEditor:
    """Per-frame editing state for one stream: tracker, smoothed codes, transfer with temporal blending."""

    def __init__(self, inverter, edit: Callable[[torch.Tensor], torch.Tensor], mode: str = "transfer",
                 ws_smoothing: float = 0.6, field_smoothing: float = 0.5, aligner=None, blend: float = 1.0):
        from engine.edit.photo import check_blend
        from engine.faces import VideoAligner
        from engine.faces.mesh import CropMesh

        self.inverter, self.G, self.edit = inverter, inverter.G, edit
        self.mode = check_mode(mode)
        self.blend = check_blend(blend)  # regenerate: the generated face's share against the frame's own
        self.aligner = aligner or VideoAligner()
        self.ws_smoothing = float(ws_smoothing)
        self.transfer = EditTransfer(TransferSettings(temporal=field_smoothing),
                                     meshes=(CropMesh(tracking=True), CropMesh(tracking=True)))
        self._ws: torch.Tensor | None = None
        self.timings: dict[str, float] = {}

    def reset(self) -> None:
        self._ws = None
        self.transfer.reset()

    @torch.inference_mode()
    def frame(self, rgb: np.ndarray, timestamp: float) -> tuple[np.ndarray, bool]:
        from engine.faces import paste_back

        t = {}
        t0 = time.perf_counter()
        face = self.aligner.align(rgb, size=self.G.resolution, timestamp=timestamp)
        t["align"] = time.perf_counter() - t0
        if face is None:
            self.reset()
            return rgb, False
        t0 = time.perf_counter()
        ws = self.inverter.encode(face)
        k = self.ws_smoothing
        self._ws = ws if self._ws is None or k <= 0 else k * self._ws + (1 - k) * ws
        edited = self.edit(self._ws)
        t["encode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        after = to_uint8(self.G.synthesis(edited, noise_mode="const"))[0]
        if self.mode == "regenerate":
            from engine.edit.photo import blend_faces

            out = blend_faces(rgb, paste_back(rgb, after, face), self.blend)
        else:
            before = to_uint8(self.G.synthesis(self._ws, noise_mode="const"))[0]
            t["render"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = self.transfer(rgb, face, before, after)
        t["edit"] = time.perf_counter() - t0
        for name, v in t.items():
            self.timings[name] = self.timings.get(name, 0.0) + v * 1000
        return out, True

    def close(self) -> None:
        self.aligner.close()
        self.transfer.close()


def edit_video(src, dst, inverter, edit, mode: str = "transfer", *, progress: bool = True,
               cancel: threading.Event | None = None, callback=None, blend: float = 1.0,
               side_by_side: bool = False, preview=None, preview_frames: int = 4) -> VideoStats:
    """Edit every frame of `src` into `dst` (same frame count, rate and size). callback(done, total) after each
    frame. Ctrl-C or `cancel` stops cleanly: nothing is left under `dst`."""
    from tqdm import tqdm

    from engine.edit.photo import check_blend

    check_mode(mode), check_blend(blend)  # before anything is opened
    reader = VideoReader(src)
    try:
        editor = VideoEditor(inverter, edit, mode, blend=blend)
    except BaseException:
        reader.close()
        raise
    stats = VideoStats(fps=reader.fps, size=reader.size, audio=has_audio_track(src))
    # preview: a few frames spread over the video, input | output. The frame count OpenCV reports can be missing or
    # wrong, so frames are kept at a stride that doubles whenever too many are kept, and the picks made at the end.
    shots: list[tuple[int, np.ndarray]] = []
    stride, last_shot = 1, None
    writer = None
    prev_in = prev_out = None
    diffs_in, diffs_out = [], []
    t_start = time.perf_counter()
    bar = tqdm(total=reader.count or None, desc="edit-video", unit="frame", disable=not progress)
    try:
        for i, rgb in enumerate(reader):
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            if writer is None:
                stats.size = (rgb.shape[1] * (2 if side_by_side else 1), rgb.shape[0])
                writer = VideoWriter(dst, reader.fps, stats.size)
            out, found = editor.frame(rgb, i / reader.fps)
            writer.write(np.concatenate([rgb, out], axis=1) if side_by_side else out)
            if preview is not None:
                last_shot = (rgb, out)
            if preview is not None and i % stride == 0:
                shots.append((i, np.concatenate([rgb, np.full((rgb.shape[0], 8, 3), 255, np.uint8), out], axis=1)))
                if len(shots) > 4 * preview_frames:
                    stride *= 2
                    shots = [(j, x) for j, x in shots if j % stride == 0]
            stats.frames += 1
            stats.with_face += int(found)
            if prev_in is not None:
                diffs_in.append(float(np.abs(rgb.astype(np.int16) - prev_in).mean()))
                diffs_out.append(float(np.abs(out.astype(np.int16) - prev_out).mean()))
            prev_in, prev_out = rgb.astype(np.int16), out.astype(np.int16)
            bar.update(1)
            if callback is not None:
                callback(stats.frames, reader.count)
        if writer is None:
            raise UserError(f"{Path(src).name}: no frames could be read from this video")
        writer.finish()
        writer = None
        if preview is not None and shots:
            from engine.render import save_image

            picked = [shots[k][1] for k in sorted(set(np.linspace(0, len(shots) - 1, preview_frames).round()
                                                       .astype(int).tolist()))]
            if last_shot is not None and shots[-1][0] != stats.frames - 1:
                rgb, out = last_shot  # the video's true last frame ends the picture
                picked[-1] = np.concatenate([rgb, np.full((rgb.shape[0], 8, 3), 255, np.uint8), out], axis=1)
            gap = np.full((8, picked[0].shape[1], 3), 255, np.uint8)
            save_image(np.concatenate([x for shot in picked for x in (shot, gap)][:-1], axis=0), preview)
    finally:
        bar.close()
        reader.close()
        editor.close()
        if writer is not None:  # interrupted or failed: leave nothing half-written
            writer.abort()
    stats.seconds = time.perf_counter() - t_start
    stats.flicker_in = float(np.mean(diffs_in)) if diffs_in else 0.0
    stats.flicker_out = float(np.mean(diffs_out)) if diffs_out else 0.0
    if stats.with_face:
        stats.timings = {k: v / stats.with_face for k, v in editor.timings.items()}
    return stats
