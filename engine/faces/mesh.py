"""Face-mesh landmarks of an aligned face crop: a generator's render, or a photo's aligned face.

An aligned crop holds one upright face of known framing, so one MediaPipe face-mesh call suffices (the photo
landmarker's search for faces at every size and orientation is not needed). Edit transfer uses the mesh of the
renders before and after an edit to move the photo's features; the attribute measures (engine.edit.attributes)
read expressions and head pose from it.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from engine.faces.landmarks import _quiet_native_logs, bundled_model_files

# The mesh runs on crops of this side: renders of 64 px models are upsampled to it (the mesh's own input is 192 px),
# larger crops are shrunk.
MESH_SIDE = 256


class CropMesh:
    """MediaPipe face mesh on aligned crops, behind a lock. `tracking=True` follows one stream of crops (consecutive
    video frames): much cheaper per call, and steadier; keep one instance per stream."""

    def __init__(self, tracking: bool = False):
        bundled_model_files()
        from mediapipe.python.solutions import face_mesh

        self.tracking = tracking
        self._lock = threading.Lock()
        with _quiet_native_logs():
            self._mesh = face_mesh.FaceMesh(static_image_mode=not tracking, max_num_faces=1, refine_landmarks=True,
                                            min_detection_confidence=0.3, min_tracking_confidence=0.3)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))

    def __call__(self, crop: np.ndarray, depth: bool = False) -> np.ndarray | None:
        """[478, 2] landmarks in the crop's own pixel coordinates (pixel centres at integers), or None. depth=True
        adds MediaPipe's relative depth as a third column, in the same pixel units (smaller = nearer the camera)."""
        crop = np.asarray(crop)
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
            raise ValueError(f"expected a square RGB crop, got shape {list(crop.shape)}")
        n = crop.shape[0]
        view = crop.astype(np.uint8) if n == MESH_SIDE else cv2.resize(
            crop.astype(np.uint8), (MESH_SIDE, MESH_SIDE), interpolation=cv2.INTER_CUBIC if n < MESH_SIDE
            else cv2.INTER_AREA)
        with self._lock:
            if self._mesh is None:
                raise RuntimeError("this CropMesh has been closed")
            with _quiet_native_logs():
                result = self._mesh.process(np.ascontiguousarray(view))
        if not result.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float64) * n
        pts[:, :2] -= 0.5  # normalised [0, 1] spans the outer pixel edges
        return pts if depth else pts[:, :2]

    def close(self) -> None:
        with self._lock:
            if self._mesh is not None:
                self._mesh.close()
                self._mesh = None


_shared: CropMesh | None = None
_shared_lock = threading.Lock()


def shared_crop_mesh() -> CropMesh:
    """One static-mode CropMesh per process (building the graph costs far more than a call)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = CropMesh()
        return _shared
