"""Square-quad geometry and the one resampling routine used for crops (aligned faces and detector views alike)."""

from __future__ import annotations

import math

import cv2
import numpy as np

BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


def square_quad(center, side: float, angle: float = 0.0) -> np.ndarray:
    """A square of the given side centred at `center` whose x-axis points at `angle` (radians, image coordinates),
    as 4 x 2 corners in FFHQ order: top-left, bottom-left, bottom-right, top-right (as seen in the crop)."""
    c = np.asarray(center, np.float64)
    x = np.array([math.cos(angle), math.sin(angle)]) * side / 2
    y = np.array([-x[1], x[0]])
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """2 x 3 affine map from source pixel coordinates to the size x size crop (pixel centres at integers).

    The quad's corners land on the outer edges of the corner pixels, as in FFHQ's PIL QUAD transform.
    """
    q = np.asarray(quad, np.float64)
    src = np.array([[q[0, 0], q[0, 1], 1.0], [q[1, 0], q[1, 1], 1.0], [q[3, 0], q[3, 1], 1.0]])
    lo, hi = -0.5, size - 0.5
    dst = np.array([[lo, lo], [lo, hi], [hi, lo]])
    return np.linalg.solve(src, dst).T


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    m = np.vstack([np.asarray(matrix, np.float64)[:2], [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ m[:2, :2].T + m[:2, 2]


def warp_quad(image: np.ndarray, quad: np.ndarray, size: int, border: str = "reflect") -> np.ndarray:
    """Resample the (square) quad of an image into a size x size crop.

    Downscaling goes through an area filter first (no aliasing on 4000-pixel photos); the warp itself is bilinear at
    twice the output size, then area-averaged, which keeps detail without the ringing of cubic kernels.
    """
    h, w = image.shape[:2]
    quad = np.asarray(quad, np.float64)
    side = float(np.linalg.norm(quad[3] - quad[0]))
    grid = 2 * size  # supersampled warp target
    scale = grid / side

    # Only the quad's bounding box (plus what the bilinear kernel may touch) is read: crop it first so a large photo
    # is not filtered as a whole. The crop's edges are either the photo's edges (where the border rule applies) or
    # lie outside the quad.
    margin = 4.0 / min(scale, 1.0) + 2.0
    x0 = int(np.clip(math.floor(quad[:, 0].min() - margin), 0, w - 1))
    y0 = int(np.clip(math.floor(quad[:, 1].min() - margin), 0, h - 1))
    x1 = int(np.clip(math.ceil(quad[:, 0].max() + margin) + 1, x0 + 1, w))
    y1 = int(np.clip(math.ceil(quad[:, 1].max() + margin) + 1, y0 + 1, h))
    roi = image[y0:y1, x0:x1]
    m = quad_matrix(quad - [x0, y0], grid)
    k = int(1.0 / scale) if scale < 1.0 else 1
    if k >= 2:
        # Shrink by a whole factor (like FFHQ's `shrink`): OpenCV's area filter has a fast path for those (3x faster
        # than an arbitrary ratio on a 4000-pixel photo) and the bilinear warp is then left with a scale in (0.5, 1].
        # The ROI is first padded to a multiple of k the same way the warp treats the photo's edges.
        ph, pw = -roi.shape[0] % k, -roi.shape[1] % k
        if ph or pw:
            roi = cv2.copyMakeBorder(roi, 0, ph, 0, pw, BORDERS[border])
        roi = cv2.resize(roi, (roi.shape[1] // k, roi.shape[0] // k), interpolation=cv2.INTER_AREA)
        # Shrunk pixel q covers roi pixels qk .. qk + k - 1, centred at (q + 0.5) k - 0.5.
        pre = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5], [0.0, 0.0, 1.0]])
        m = m @ pre
    warped = cv2.warpAffine(
        np.ascontiguousarray(roi), m, (grid, grid), flags=cv2.INTER_LINEAR, borderMode=BORDERS[border]
    )
    return cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)
