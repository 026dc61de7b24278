"""Face landmarks from the MediaPipe models bundled inside the mediapipe==0.10.21 wheel (no downloads, no network).

Photo mode works in two steps.

Find: each stage runs only when the previous one found nothing, so the common case costs one face-mesh call and one
detector call here (and two face-mesh calls to measure):
1. face mesh (short-range detector) and the full-range detector on a copy no longer than `max_side`;
2. the full-range detector on overlapping tiles of the full-resolution image (small faces in big photos);
3. both on the copy turned by 180, 90 and 270 degrees (photos whose orientation was lost).

Measure: the largest face is measured again on a view of its own: cut from the full-resolution photo, turned so the
face is upright, sized so the face fills half of it. MediaPipe's mesh is accurate on upright faces and drifts by
several percent on faces lying on their side, and this makes the result the same whatever the photo's size or
orientation. The roll comes from the mesh when the detector's eye keypoints agree with it, otherwise from the
detector run on the face turned four ways (highest score wins); the second view is framed by the first view's mesh.

Video mode runs the face mesh in tracking mode (landmarks of frame t seed frame t+1) on the whole frame only.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import UserError
from engine.faces.warp import invert_affine, quad_matrix, square_quad, transform_points, warp_quad

# Landmark indices of MediaPipe's 468/478-point face mesh topology. MediaPipe names eyes from the subject's point of
# view: its "right eye" is on the image's left for a face looking at the camera, which is what dlib's points 36-41
# (FFHQ's `eye_left`) are. The names below follow the image, like FFHQ.
EYE_IMAGE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
EYE_IMAGE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
MOUTH_IMAGE_LEFT = 61
MOUTH_IMAGE_RIGHT = 291
NUM_LANDMARKS = 478  # 468 mesh points + 10 iris points (refine_landmarks=True)

MAX_DETECT_SIDE = 1024  # long side of the copy the detectors see
_MEASURE_VIEW = 384  # side, in pixels, of the upright view a face is measured on
_MEASURE_CONTEXT = 2.0  # view side / face size: the short-range detector wants the face to fill about half the view
_ROLL_VIEW = 256  # side of the views used to find which way up a face is
_ROLL_AGREEMENT = math.radians(30)  # mesh and detector rolls closer than this are trusted without further checks
# Two passes: the first view is framed by a rough guess (possibly 20 degrees off), the second by the first pass's
# landmarks, so the final view, and with it the result, hardly depends on how the face was found. A third pass or
# averaging passes changed results by less than the mesh's own noise (~0.5% of the quad) in our measurements.
_MEASURE_PASSES = 2
_TILE_VIEW = 640
_MIN_TILE = 320  # smaller tiles would hold faces the first pass already sees

# Files the two graphs load, relative to the mediapipe package. Checked up front so a broken install gives a clear
# message instead of a C++ stack trace.
_MODEL_FILES = {
    "face_mesh_graph": "modules/face_landmark/face_landmark_front_cpu.binarypb",
    "face_mesh_model": "modules/face_landmark/face_landmark_with_attention.tflite",
    "short_range_detector": "modules/face_detection/face_detection_short_range.tflite",
    "full_range_graph": "modules/face_detection/face_detection_full_range_cpu.binarypb",
    "full_range_detector": "modules/face_detection/face_detection_full_range_sparse.tflite",
}


def mediapipe_package_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("mediapipe is not installed; install it with: pip install mediapipe==0.10.21")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_files() -> dict[str, Path]:
    """The graph and model files face alignment runs on, all inside the installed mediapipe package."""
    root = mediapipe_package_dir()
    files = {name: root / rel for name, rel in _MODEL_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(
            f"the mediapipe install lacks its bundled face models ({', '.join(missing)}); "
            "reinstall it with: pip install --force-reinstall mediapipe==0.10.21"
        )
    return files


_stderr_lock = threading.Lock()
_first_face_logged = False


@contextlib.contextmanager
def _quiet_native_logs():
    """Silence MediaPipe's native start-up chatter (XNNPACK, feedback-manager and projection warnings) that would bury
    our one-line messages. Wraps graph creation, its warm-up and calls until the first face, not normal processing.
    Set BLAZESTUDIO_MEDIAPIPE_LOGS=1 to see it."""
    if os.environ.get("BLAZESTUDIO_MEDIAPIPE_LOGS"):
        yield
        return
    with _stderr_lock:
        try:
            fd = sys.stderr.fileno() if sys.stderr is not None else 2
        except (AttributeError, OSError, ValueError):  # replaced by an object without a file descriptor
            fd = 2
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(fd)
        except OSError:  # no usable stderr at all (a windowed app): nothing to silence
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            os.close(devnull)


@dataclass
class FaceFound:
    """Landmarks (N x 2, pixel coordinates of the image given to `detect`) of the chosen face, and the count."""

    landmarks: np.ndarray
    faces: int


@dataclass
class _Candidate:
    box: np.ndarray  # x0, y0, x1, y1 in source pixels
    landmarks: np.ndarray | None  # 478 x 2 in source pixels, None when only a detector box is known
    detector_roll: float | None = None  # eye-line angle (radians) from the detector's keypoints, when it saw the face

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2


def eye_roll(landmarks: np.ndarray) -> float:
    """Angle (radians, image coordinates) of the line from the image-left eye to the image-right eye."""
    d = landmarks[list(EYE_IMAGE_RIGHT)].mean(0) - landmarks[list(EYE_IMAGE_LEFT)].mean(0)
    return math.atan2(d[1], d[0])


def _angle_between(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


def _box_of(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def _turned_view(image: np.ndarray, x0: int, y0: int, side: int, out_side: int, turns: int):
    """A square crop (zero outside the image) resized to out_side and turned by `turns` quarter turns
    counter-clockwise; returns it with the 2 x 3 map from view pixels back to image pixels."""
    # A quarter turn counter-clockwise (np.rot90) shows the quad's top-right corner at the view's top-left, etc.
    quad = square_quad((x0 + side / 2 - 0.5, y0 + side / 2 - 0.5), side)
    quad = np.roll(quad, turns, axis=0) if turns % 4 else quad
    return _quad_view(image, quad, out_side)


def _quad_view(image: np.ndarray, quad: np.ndarray, out_side: int):
    view = warp_quad(image, quad, out_side, border="constant")
    return view, invert_affine(quad_matrix(quad, out_side))


def _square(view: np.ndarray) -> np.ndarray:
    """Pad on the right or bottom to a square. MediaPipe letterboxes to a square anyway; padding here gives normalised
    x and y one common scale, which its projection of landmarks from a rotated face region assumes."""
    h, w = view.shape[:2]
    if h == w:
        return view
    n = max(h, w)
    out = np.zeros((n, n, 3), np.uint8)
    out[:h, :w] = view
    return out


def _downscaled(image: np.ndarray, max_side: int):
    """The image shrunk by a whole factor to at most max_side (area filter, so small faces keep their shape), with the
    2 x 3 map from its pixels back to the image's. A whole factor takes OpenCV's fast path; the last few rows and
    columns that do not fill a k x k block are left out, which no detector will miss."""
    h, w = image.shape[:2]
    k = math.ceil(max(h, w) / max_side)
    if k <= 1:
        return image, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    small = cv2.resize(image[: h - h % k, : w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    return small, np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]])


class FaceLandmarker:
    """MediaPipe face mesh (plus the full-range face detector in photo mode) behind a lock.

    The MediaPipe graphs are not re-entrant, so calls from several threads are serialised; building them costs far
    more than a call, so keep one instance around (see `shared_landmarker`).
    """

    def __init__(
        self,
        static: bool = True,  # photos (detect every call) or a video stream (track from frame to frame)
        max_faces: int = 8,  # most faces the mesh measures per call in photo mode
        min_confidence: float = 0.5,  # detector score below which a face is ignored
        max_side: int = MAX_DETECT_SIDE,  # detectors run on a copy whose long side is at most this
    ):
        bundled_model_files()
        from mediapipe.python.solutions import face_detection, face_mesh

        self.static = static
        self.max_side = int(max_side)
        self._lock = threading.Lock()
        with _quiet_native_logs():
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=max_faces if static else 1,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=0.5,
            )
            self._detector = (
                face_detection.FaceDetection(min_detection_confidence=min_confidence, model_selection=1)
                if static
                else None
            )
            # The first call builds the TFLite interpreters (and logs); do it now, quietly.
            blank = np.zeros((64, 64, 3), np.uint8)
            self._mesh.process(blank)
            if self._detector is not None:
                self._detector.process(blank)

    def close(self) -> None:
        with self._lock:
            if self._mesh is not None:
                self._mesh.close()
                self._mesh = None
            if self._detector is not None:
                self._detector.close()
                self._detector = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- raw model calls (lock held by the caller) -------------------------------------------------------------

    def _mesh_faces(self, view: np.ndarray) -> list[np.ndarray]:
        if self._mesh is None:
            raise RuntimeError("this FaceLandmarker has been closed")
        view = _square(view)
        global _first_face_logged
        if _first_face_logged:
            result = self._mesh.process(view)
        else:
            # MediaPipe logs a warning about its landmark projection the first time a face is projected
            # (once per process); keep it out of the terminal.
            with _quiet_native_logs():
                result = self._mesh.process(view)
            _first_face_logged = bool(result.multi_face_landmarks)
        if not result.multi_face_landmarks:
            return []
        n = view.shape[0]
        # Normalised coordinates span the whole image ([0, 1] = outer pixel edges); convert to pixel centres.
        return [
            np.array([(p.x, p.y) for p in face.landmark], np.float64) * n - 0.5 for face in result.multi_face_landmarks
        ]

    def _detections(self, view: np.ndarray) -> list[_Detection]:
        if self._detector is None:
            raise RuntimeError("this FaceLandmarker has been closed")
        view = _square(view)
        result = self._detector.process(view)
        if not result.detections:
            return []
        n = view.shape[0]
        out = []
        for det in result.detections:
            b = det.location_data.relative_bounding_box
            kp = det.location_data.relative_keypoints  # 0: subject's right eye (image left), 1: left eye
            corners = np.array([[b.xmin, b.ymin], [b.xmin + b.width, b.ymin + b.height]]) * n - 0.5
            eyes = np.array([[kp[0].x, kp[0].y], [kp[1].x, kp[1].y]]) * n - 0.5
            out.append(_Detection(corners, eyes, float(det.score[0]) if det.score else 0.0))
        return out

    # -- public ------------------------------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> FaceFound | None:
        """Landmarks of the largest face in an RGB uint8 image, and how many faces were seen; None if none."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
        image = np.ascontiguousarray(image)
        with self._lock:
            if not self.static:
                return self._track(image)
            return self._detect_photo(image)

    def detect_all(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face the first successful finding stage saw, largest first (photo mode only)."""
        if not self.static:
            raise RuntimeError("detect_all needs a photo-mode (static) landmarker")
        image = np.ascontiguousarray(image)
        with self._lock:
            for candidates in self._find(image):
                found = [lm for cand in sorted(candidates, key=lambda c: -c.size)
                         if (lm := self._measure(image, cand)) is not None]
                if found:
                    return found
        return []

    def _track(self, image: np.ndarray) -> FaceFound | None:
        small, to_image = _downscaled(image, self.max_side)
        faces = self._mesh_faces(small)
        if not faces:
            return None
        return FaceFound(transform_points(to_image, faces[0]), 1)

    def _detect_photo(self, image: np.ndarray) -> FaceFound | None:
        for candidates in self._find(image):
            # Largest first; a detector box the mesh cannot confirm (a false detection) gives way to the next one.
            for cand in sorted(candidates, key=lambda c: -c.size):
                landmarks = self._measure(image, cand)
                if landmarks is not None:
                    return FaceFound(landmarks, len(candidates))
        return None

    def _find(self, image: np.ndarray):
        """Candidate lists from the finding stages, cheapest first; later stages run only if needed."""
        small, to_image = _downscaled(image, self.max_side)
        yield self._collect(small, to_image, [], mesh=True)
        # Faces below ~5% of the long side escape the first pass once the photo is shrunk: tiles a half and then a
        # quarter as long as the photo make them 2x and 4x larger relative to the detector's input.
        long_side = max(image.shape[:2])
        for fraction in (2, 4):
            if long_side // fraction >= _MIN_TILE:
                yield self._tile_pass(image, long_side // fraction)
        h, w = small.shape[:2]
        side = max(h, w)
        for turns in (2, 1, 3):
            view, to_small = _turned_view(small, (w - side) // 2, (h - side) // 2, side, side, turns)
            yield self._collect(view, _compose(to_image, to_small), [], mesh=True)

    def _collect(self, view: np.ndarray, to_image: np.ndarray, candidates: list[_Candidate], mesh: bool):
        if mesh:
            for lm in self._mesh_faces(view):
                lm = transform_points(to_image, lm)
                candidates.append(_Candidate(_box_of(lm), lm))
        for det in self._detections(view):
            box = _box_of(transform_points(to_image, _corners(det.box)))
            eyes = transform_points(to_image, det.eyes)
            roll = math.atan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0])
            _merge(candidates, _Candidate(box, None, roll))
        return candidates

    def _tile_pass(self, image: np.ndarray, side: int) -> list[_Candidate]:
        """The full-range detector on overlapping square tiles (half a tile apart) at up to full resolution."""
        h, w = image.shape[:2]
        candidates: list[_Candidate] = []
        for y0 in _tile_starts(h, side):
            for x0 in _tile_starts(w, side):
                view, to_image = _turned_view(image, x0, y0, side, min(side, _TILE_VIEW), 0)
                self._collect(view, to_image, candidates, mesh=False)
        return candidates

    def _which_way_up(self, image: np.ndarray, cand: _Candidate) -> float | None:
        """The face's roll, from the detector run on the face's crop turned four ways (the best score wins)."""
        side = max(int(round(cand.size * _MEASURE_CONTEXT)), 16)
        x0, y0 = (np.round(cand.center - side / 2)).astype(int)
        best = None
        for turns in range(4):
            view, to_image = _turned_view(image, int(x0), int(y0), side, _ROLL_VIEW, turns)
            for det in self._detections(view):
                if best is None or det.score > best[0]:
                    eyes = transform_points(to_image, det.eyes)
                    best = (det.score, math.atan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0]))
        return None if best is None else best[1]

    def _measure(self, image: np.ndarray, cand: _Candidate) -> np.ndarray | None:
        """Landmarks of a candidate measured on an upright view of it (see the module notes)."""
        rough = cand.landmarks
        if (
            rough is not None
            and cand.detector_roll is not None
            and _angle_between(eye_roll(rough), cand.detector_roll) < _ROLL_AGREEMENT
        ):
            roll = eye_roll(rough)
        else:
            roll = self._which_way_up(image, cand)
            if roll is None:
                if rough is None:
                    return None
                roll = eye_roll(rough)
        center, size = cand.center, cand.size
        landmarks = None
        for _ in range(_MEASURE_PASSES):
            quad = square_quad(center, size * _MEASURE_CONTEXT, roll)
            view, to_image = _quad_view(image, quad, _MEASURE_VIEW)
            faces = self._mesh_faces(view)
            if not faces:
                break
            middle = np.array([_MEASURE_VIEW / 2, _MEASURE_VIEW / 2])
            found = min(faces, key=lambda f: np.linalg.norm(f.mean(axis=0) - middle))
            landmarks = transform_points(to_image, found)
            box = _box_of(landmarks)
            center, size, roll = (box[:2] + box[2:]) / 2, _upright_size(landmarks), eye_roll(landmarks)
        return landmarks


@dataclass
class _Detection:
    box: np.ndarray  # 2 x 2: top-left and bottom-right corners, view pixels
    eyes: np.ndarray  # 2 x 2: image-left eye, image-right eye, view pixels
    score: float


def _tile_starts(length: int, side: int) -> list[int]:
    if length <= side:
        return [(length - side) // 2]
    count = math.ceil((length - side) / (side / 2)) + 1
    return sorted(set(np.linspace(0, length - side, count).round().astype(int).tolist()))


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2 x 3 map doing `inner`, then `outer`."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def _corners(box: np.ndarray) -> np.ndarray:
    (x0, y0), (x1, y1) = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _upright_size(landmarks: np.ndarray) -> float:
    """Face extent measured along the face's own axes, so a tilted face does not look bigger than it is."""
    roll = eye_roll(landmarks)
    c, s = math.cos(roll), math.sin(roll)
    p = landmarks @ np.array([[c, -s], [s, c]])
    return float(np.max(p.max(0) - p.min(0)))


def _merge(candidates: list[_Candidate], new: _Candidate) -> list[_Candidate]:
    """Add a detector box unless it is a face already listed (one's centre lies in the other's box); a known face
    takes the detector's roll."""
    for c in candidates:
        inside_known = np.all(new.center >= c.box[:2]) and np.all(new.center <= c.box[2:])
        known_inside_new = np.all(c.center >= new.box[:2]) and np.all(c.center <= new.box[2:])
        if inside_known or known_inside_new:
            if c.detector_roll is None:
                c.detector_roll = new.detector_roll
            return candidates
    candidates.append(new)
    return candidates


_shared: FaceLandmarker | None = None
_shared_lock = threading.Lock()


def shared_landmarker() -> FaceLandmarker:
    """One photo-mode landmarker per process, built on first use (importing and building MediaPipe is slow)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FaceLandmarker(static=True)
        return _shared
