"""Paste an edited aligned face back into the photo it came from.

The edited crop is warped back with the inverse of the alignment transform and blended through a soft ellipse that
covers the face and stops short of hair and background, where an edit (or a GAN's reconstruction) would otherwise
leave a visible square seam.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.errors import UserError
from engine.faces.align import AlignedFace, quad_matrix
from engine.faces.image_io import load_image

# In aligned-image units ([0, 1] across the crop). An FFHQ crop puts the eyes at y ~ 0.47 and the mouth at ~0.72;
# this ellipse spans brows to chin and cheek to cheek.
FACE_CENTER = (0.5, 0.56)
FACE_RADII = (0.3, 0.37)
DEFAULT_FEATHER = 0.08


def _ellipse_weight(u: np.ndarray, v: np.ndarray, feather: float, center, radii) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a smoothstep edge `feather` wide (aligned units) just inside it."""
    cx, cy = center
    rx, ry = radii
    dx, dy = (u - cx) / rx, (v - cy) / ry
    r = np.sqrt(dx * dx + dy * dy)
    # Distance to the boundary to first order: (1 - r) / |grad r|.
    grad = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) / np.maximum(r, 1e-9)
    dist = (1.0 - r) / np.maximum(grad, 1e-9)
    if feather <= 0:
        return (dist > 0).astype(np.float32)
    t = np.clip(dist / feather, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _check_feather(feather: float) -> float:
    if not 0.0 <= feather <= 0.5:
        raise UserError(f"feather must be between 0 and 0.5 (a fraction of the face crop), not {feather}")
    return float(feather)


def paste_mask(size: int, feather: float = DEFAULT_FEATHER, center=FACE_CENTER, radii=FACE_RADII) -> np.ndarray:
    """The blend mask in aligned-image space (size x size float32 in [0, 1]), as paste_back uses it."""
    feather = _check_feather(feather)
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    u, v = np.meshgrid(t, t)
    return _ellipse_weight(u, v, feather, center, radii)


def paste_back(
    original_rgb: np.ndarray,
    edited_face_rgb: np.ndarray,
    aligned: AlignedFace,
    feather: float = DEFAULT_FEATHER,
    center=FACE_CENTER,
    radii=FACE_RADII,
) -> np.ndarray:
    """Blend `edited_face_rgb` (a square crop of any resolution in the aligned frame of `aligned`) into the photo.

    Returns a new uint8 RGB array the size of `original_rgb`; pixels outside the mask's reach are unchanged.
    """
    feather = _check_feather(feather)
    original = load_image(original_rgb)
    edited = load_image(edited_face_rgb)
    h, w = original.shape[:2]
    if (w, h) != tuple(aligned.image_size):
        raise UserError(
            f"the photo is {w}x{h} but the face was aligned on a {aligned.image_size[0]}x{aligned.image_size[1]} "
            "image; paste back into the same photo"
        )
    if edited.shape[0] != edited.shape[1]:
        raise UserError(f"the edited face must be square, got {edited.shape[1]}x{edited.shape[0]}")

    quad = np.asarray(aligned.quad, np.float64)
    side = float(np.linalg.norm(quad[3] - quad[0]))
    # Only the quad's bounding box can change.
    x0, y0 = max(math.floor(quad[:, 0].min()), 0), max(math.floor(quad[:, 1].min()), 0)
    x1, y1 = min(math.ceil(quad[:, 0].max()) + 1, w), min(math.ceil(quad[:, 1].max()) + 1, h)
    out = original.copy()
    if x1 <= x0 or y1 <= y0:
        return out

    # A crop much larger than its place in the photo is area-filtered first; bilinear alone would alias.
    if edited.shape[0] > 2 * side:
        n = max(8, math.ceil(2 * side))
        edited = cv2.resize(edited, (n, n), interpolation=cv2.INTER_AREA)
    n = edited.shape[0]
    m = quad_matrix(quad, n)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # photo pixels -> roi pixels
    face = cv2.warpAffine(
        edited, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )

    # The mask is evaluated analytically at every photo pixel rather than warped, so it has no resampling blur.
    unit = quad_matrix(quad, 1)
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    u = unit[0, 0] * xs + unit[0, 1] * ys + unit[0, 2] + 0.5
    v = unit[1, 0] * xs + unit[1, 1] * ys + unit[1, 2] + 0.5
    alpha = _ellipse_weight(u, v, feather, center, radii)[:, :, None]

    roi = original[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(roi + (face.astype(np.float32) - roi) * alpha), 0, 255).astype(np.uint8)
    return out
