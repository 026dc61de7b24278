"""Faces: load a photo, find landmarks (bundled MediaPipe models), align FFHQ-style, smooth webcam landmarks, paste
edited faces back. MediaPipe is imported on first detection, not on `import engine.faces`."""

from engine.faces.align import (
    AlignedFace,
    FaceAligner,
    VideoAligner,
    align_face,
    align_faces,
    ffhq_keypoints,
    ffhq_quad,
    warp_face,
)
from engine.faces.image_io import load_image
from engine.faces.paste import paste_back, paste_mask
from engine.faces.smoothing import LandmarkSmoother
from engine.faces.warp import quad_matrix, warp_quad

__all__ = [
    "AlignedFace",
    "FaceAligner",
    "LandmarkSmoother",
    "VideoAligner",
    "align_face",
    "align_faces",
    "ffhq_keypoints",
    "ffhq_quad",
    "load_image",
    "paste_back",
    "paste_mask",
    "quad_matrix",
    "warp_face",
    "warp_quad",
]
