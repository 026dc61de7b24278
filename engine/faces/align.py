"""FFHQ-style face alignment: landmarks -> the FFHQ quad -> one affine warp to a square crop.

The quad follows the recipe that produced the FFHQ dataset (Karras et al. 2019, `recreate_aligned_images`), so a
StyleGAN trained on FFHQ and its encoder see faces framed exactly as in training. Differences from that script, on
purpose: one affine warp (the quad is always a rotated square) with an area-filtered pre-shrink and 2x supersampling
instead of its chain of PIL resizes, and the reflect-padding softening done in output space.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.errors import NoFaceError, UserError
from engine.faces.image_io import describe_source, load_image
from engine.faces.landmarks import (
    EYE_IMAGE_LEFT,
    EYE_IMAGE_RIGHT,
    MAX_DETECT_SIDE,
    MOUTH_IMAGE_LEFT,
    MOUTH_IMAGE_RIGHT,
    FaceLandmarker,
    shared_landmarker,
)
from engine.faces.smoothing import LandmarkSmoother
from engine.faces.warp import invert_affine, quad_matrix, warp_quad

MAX_SIZE = 8192
PAD_MODES = ("ffhq", "reflect")


# --- geometry --------------------------------------------------------------------------------------------------


def ffhq_keypoints(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(eye_left, eye_right, mouth_left, mouth_right), 'left' meaning lower x for an upright face (FFHQ/dlib).

    Accepts MediaPipe's 468/478 points, dlib's 68 points, or 5 points ordered eye_left, eye_right, nose,
    mouth_left, mouth_right (the common RetinaFace/InsightFace layout).
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 2 or lm.shape[1] < 2:
        raise UserError(f"landmarks must be an N x 2 array, got shape {lm.shape}")
    lm = lm[:, :2]
    n = len(lm)
    if n in (468, 478):
        return (
            lm[list(EYE_IMAGE_LEFT)].mean(0),
            lm[list(EYE_IMAGE_RIGHT)].mean(0),
            lm[MOUTH_IMAGE_LEFT],
            lm[MOUTH_IMAGE_RIGHT],
        )
    if n == 68:
        return lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54]
    if n == 5:
        return lm[0], lm[1], lm[3], lm[4]
    raise UserError(f"unsupported landmark layout with {n} points; use MediaPipe (478), dlib (68) or 5 points")


def ffhq_quad(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """The FFHQ crop square (4 x 2, source pixels) in FFHQ's corner order: c-x-y, c-x+y, c+x+y, c+x-y, i.e.
    top-left, bottom-left, bottom-right, top-right of the aligned image."""
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    mouth_left, mouth_right = np.asarray(mouth_left, np.float64), np.asarray(mouth_right, np.float64)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise UserError("the face landmarks are degenerate (eyes and mouth coincide); use a clearer photo")
    x /= norm
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def warp_face(image: np.ndarray, quad: np.ndarray, size: int, pad: str = "ffhq") -> np.ndarray:
    """Resample the FFHQ quad of an RGB uint8 photo into a size x size crop.

    Outside the photo the crop is mirrored (reflect padding); with pad='ffhq' the mirrored part is also blurred and
    faded to the photo's median colour as FFHQ did, so the mirror image is not mistaken for part of the face.
    """
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}")
    out = warp_quad(image, quad, size, border="reflect")
    if pad == "ffhq":
        out = _soften_padding(out, np.asarray(quad, np.float64), (image.shape[1], image.shape[0]))
    return out


def _soften_padding(out: np.ndarray, quad: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """FFHQ's treatment of reflect-padded areas, evaluated per output pixel.

    FFHQ crops the quad's box plus a border, pads every side by at least 0.3 x quad size when any padding is needed,
    then blends each padded pixel towards a blurred copy (fully at the photo edge, fading in over a third of the pad
    inside it) and towards the median colour (fully at the pad's outer edge).
    """
    w, h = image_size
    size = out.shape[0]
    qsize = float(np.linalg.norm(quad[3] - quad[0]))
    border = max(round(qsize * 0.1), 3)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    crop_lo = np.maximum(lo - border, 0)
    crop_hi = np.minimum(hi + border, [w, h])
    need = np.array(
        [
            max(-(lo[0] - crop_lo[0]) + border, 0),
            max(-(lo[1] - crop_lo[1]) + border, 0),
            max(hi[0] - crop_hi[0] + border, 0),
            max(hi[1] - crop_hi[1] + border, 0),
        ]
    )
    if need.max() <= border - 4:
        return out
    pads = np.maximum(need, round(qsize * 0.3)).astype(np.float32)

    # Source coordinates of every output pixel.
    inv = invert_affine(quad_matrix(quad, size))
    j, i = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    u = inv[0, 0] * j + inv[0, 1] * i + inv[0, 2]
    v = inv[1, 0] * j + inv[1, 1] * i + inv[1, 2]
    # Signed distance beyond each crop edge, in units of that side's pad (FFHQ's `mask`).
    mask = np.maximum.reduce(
        [
            (crop_lo[0] - u) / pads[0],
            (crop_lo[1] - v) / pads[1],
            (u - (crop_hi[0] - 1)) / pads[2],
            (v - (crop_hi[1] - 1)) / pads[3],
        ]
    ).astype(np.float32)[:, :, None]
    img = out.astype(np.float32)
    sigma = 0.02 * size  # FFHQ blurs by 2% of the quad size
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(out.reshape(-1, 3), axis=0).astype(np.float32) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --- results ---------------------------------------------------------------------------------------------------


@dataclass
class AlignedFace:
    """An aligned crop and everything needed to map it back onto the photo it came from."""

    image: np.ndarray  # size x size x 3 uint8 RGB
    quad: np.ndarray  # 4 x 2, source pixels, FFHQ order (top-left, bottom-left, bottom-right, top-right of `image`)
    matrix: np.ndarray  # 2 x 3, source pixel -> aligned pixel
    faces: int  # faces seen in the photo (the largest one was aligned)
    landmarks: np.ndarray | None  # N x 2, source pixels
    image_size: tuple[int, int]  # (width, height) of the source, after EXIF orientation
    source: str | None = None  # file name, when aligned from a file
    keypoints: dict = field(default_factory=dict)  # eye_left, eye_right, mouth_left, mouth_right (source pixels)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def matrix_for(self, size: int) -> np.ndarray:
        """Source -> aligned map for another output size (e.g. a 64-pixel render of the same face)."""
        return quad_matrix(self.quad, size)

    def inverse_matrix(self, size: int | None = None) -> np.ndarray:
        """Aligned pixel -> source pixel."""
        return invert_affine(self.matrix if size is None else self.matrix_for(size))

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "faces": int(self.faces),
            "size": self.size,
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "quad": np.asarray(self.quad, float).round(3).tolist(),
            "quad_order": ["c-x-y", "c-x+y", "c+x+y", "c+x-y"],
            "matrix": np.asarray(self.matrix, float).tolist(),
            "keypoints": {k: np.asarray(v, float).round(3).tolist() for k, v in self.keypoints.items()},
        }


# --- aligners --------------------------------------------------------------------------------------------------


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= MAX_SIZE:
        raise UserError(f"the aligned size must be a whole number of pixels from 1 to {MAX_SIZE}, not {size!r}")
    return int(size)


class FaceAligner:
    """Detects the largest face and aligns it. Keeps its MediaPipe graphs, so reuse one instance.

    static=True: photos; a photo without a face raises NoFaceError.
    static=False: a video stream; MediaPipe tracks the face from frame to frame (no per-frame detection, ~4 ms at
    640x480) and a One-Euro filter smooths the landmarks; a frame without a face returns None. Tracking frames the
    mesh from the previous landmarks instead of a detection, which measures faces ~2% larger than photo mode.
    Safe to call from worker threads (calls are serialised).
    """

    def __init__(
        self,
        static: bool = True,  # photos (True) or consecutive video frames (False)
        *,
        pad: str = "ffhq",  # how the crop is filled beyond the photo: "ffhq" (blurred mirror) or "reflect"
        max_side: int = MAX_DETECT_SIDE,  # long side of the copy the detectors see
        smoother: LandmarkSmoother | None = None,  # video mode's filter; a default one when None
    ):
        if pad not in PAD_MODES:
            raise UserError(f"unknown padding '{pad}'; use one of {', '.join(PAD_MODES)}")
        self.static = static
        self.pad = pad
        self.max_side = int(max_side)
        self.smoother = smoother if smoother is not None or static else LandmarkSmoother()
        self._landmarker: FaceLandmarker | None = None
        self._owns_landmarker = False
        self._lock = threading.Lock()
        self._stream_lock = threading.Lock()

    @property
    def landmarker(self) -> FaceLandmarker:
        with self._lock:
            if self._landmarker is None:
                if self.static and self.max_side == MAX_DETECT_SIDE:
                    self._landmarker = shared_landmarker()
                else:  # tracking state belongs to one stream, so video aligners never share
                    self._landmarker = FaceLandmarker(static=self.static, max_side=self.max_side)
                    self._owns_landmarker = True
            return self._landmarker

    def close(self) -> None:
        with self._lock:
            if self._owns_landmarker and self._landmarker is not None:
                self._landmarker.close()
            self._landmarker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def align(self, image, size: int = 256, landmarks=None, timestamp: float | None = None) -> AlignedFace | None:
        """Align the largest face of `image` (path, PIL image or RGB array) to size x size.

        `landmarks` (N x 2, source pixels) skips detection. `timestamp` (seconds) drives the video smoother; the
        monotonic clock is used when it is None.
        """
        size = _check_size(size)
        name = describe_source(image)
        rgb = load_image(image)
        # A stream's frames must reach the tracker and the smoother one at a time and in order.
        with self._stream_lock if not self.static else contextlib.nullcontext():
            if landmarks is not None:
                lm, faces = np.asarray(landmarks, np.float64)[:, :2], 1
            else:
                found = self.landmarker.detect(rgb)
                if found is None:
                    if not self.static:
                        if self.smoother is not None:
                            self.smoother.reset()
                        return None
                    raise NoFaceError(f"no face found in {name}; use a photo in which a face is clearly visible")
                lm, faces = found.landmarks, found.faces
            if self.smoother is not None and not self.static:
                lm = self.smoother(lm, timestamp)
        kp = ffhq_keypoints(lm)
        quad = ffhq_quad(*kp)
        aligned = warp_face(rgb, quad, size, pad=self.pad)
        return AlignedFace(
            image=aligned,
            quad=quad,
            matrix=quad_matrix(quad, size),
            faces=faces,
            landmarks=lm,
            image_size=(rgb.shape[1], rgb.shape[0]),
            source=name if isinstance(image, (str, os.PathLike)) else None,
            keypoints=dict(zip(("eye_left", "eye_right", "mouth_left", "mouth_right"), kp)),
        )


    def align_all(self, image, size: int = 256) -> list[AlignedFace]:
        """Every face of a photo, aligned, largest first; NoFaceError if there is none."""
        if not self.static:
            raise RuntimeError("align_all is for photos (static=True)")
        rgb = load_image(image)
        found = self.landmarker.detect_all(rgb)
        if not found:
            raise NoFaceError(f"no face found in {describe_source(image)}; use a photo in which a face is clearly "
                              "visible")
        faces = [self.align(rgb, size=size, landmarks=lm) for lm in found]
        for f in faces:
            f.faces = len(found)
            f.source = describe_source(image) if isinstance(image, (str, os.PathLike)) else None
        return faces


class VideoAligner(FaceAligner):
    """FaceAligner for webcam frames: tracking mode plus One-Euro smoothing, so the crop does not jitter."""

    def __init__(
        self,
        min_cutoff: float = 0.4,  # Hz, smoothing of a still face
        beta: float = 10.0,  # responsiveness to motion
        d_cutoff: float = 1.0,  # Hz, smoothing of the speed estimate
        *,
        pad: str = "ffhq",
        max_side: int = MAX_DETECT_SIDE,
    ):
        super().__init__(
            static=False,
            pad=pad,
            max_side=max_side,
            smoother=LandmarkSmoother(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff),
        )


_default: FaceAligner | None = None
_default_lock = threading.Lock()


def align_faces(image, size: int = 256) -> list[AlignedFace]:
    """Every face in a photo, aligned FFHQ-style, largest first; NoFaceError if there is none."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FaceAligner(static=True)
    return _default.align_all(image, size=size)


def align_face(image, size: int = 256, landmarks=None) -> AlignedFace:
    """Align the largest face in a photo (path, PIL image or RGB array) FFHQ-style; NoFaceError if there is none."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FaceAligner(static=True)
    return _default.align(image, size=size, landmarks=landmarks)
