"""Person segmentation (MediaPipe's bundled selfie-segmentation model): which pixels of a face crop belong to the
person (face, hair, neck) and which to the background. Edit transfer uses it to keep colour changes on the person,
so a background next to hair is never tinted by the hair's edit."""

from __future__ import annotations

import threading

import numpy as np

from engine.errors import UserError
from engine.faces.landmarks import _quiet_native_logs, mediapipe_package_dir

_MODEL = "modules/selfie_segmentation/selfie_segmentation.tflite"


class PersonSegmenter:
    """MediaPipe selfie segmentation (the general 256×256 model) behind a lock; keep one instance around."""

    def __init__(self):
        if not (mediapipe_package_dir() / _MODEL).is_file():
            raise UserError("the mediapipe install lacks its bundled selfie-segmentation model; reinstall it with: "
                            "pip install --force-reinstall mediapipe==0.10.21")
        from mediapipe.python.solutions import selfie_segmentation

        self._lock = threading.Lock()
        with _quiet_native_logs():
            self._net = selfie_segmentation.SelfieSegmentation(model_selection=0)
            self._net.process(np.zeros((64, 64, 3), np.uint8))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """float32 [H, W] in [0, 1]: the probability that each pixel shows the person."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        with self._lock:
            if self._net is None:
                raise RuntimeError("this PersonSegmenter has been closed")
            mask = self._net.process(rgb).segmentation_mask
        if mask is None:
            return np.zeros(rgb.shape[:2], np.float32)
        return np.clip(np.asarray(mask, np.float32), 0.0, 1.0)

    def close(self) -> None:
        with self._lock:
            if self._net is not None:
                self._net.close()
                self._net = None


_shared: PersonSegmenter | None = None
_shared_lock = threading.Lock()


def shared_segmenter() -> PersonSegmenter:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PersonSegmenter()
        return _shared
