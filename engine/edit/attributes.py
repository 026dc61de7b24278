"""Attribute measures of a face, from MediaPipe's face mesh and from the pixels: what a slider changes, in numbers.

Each measure is one float per face. Geometric measures use the 478-point mesh (x, y in pixels, z MediaPipe's
relative depth in the same units) and are normalised by the inter-ocular distance (IOD: between the two eye
centres, each the mean of its 16 contour points), so they do not depend on the face's size in the picture.

| name | formula | unit |
|---|---|---|
| smile | lift of the mouth corners (61, 291) above the lip midline (13, 14), along the face's up axis, / IOD | IOD |
| mouth_width | corner-to-corner distance (61–291) / IOD | IOD |
| mouth_open | inner-lip gap (13–14) / IOD | IOD |
| eye_open_left, eye_open_right | lid gap (159–145 on the image-left eye, 386–374 on the image-right one) / IOD | IOD |
| eyes_open | the mean of the two | IOD |
| yaw | atan2(Δz, Δx) of the cheek-to-cheek vector (234 → 454); positive: the image-right cheek is deeper | degrees |
| pitch | atan2(Δz, Δy) of the forehead-to-chin vector (10 → 152); positive: the chin is deeper (head up) | degrees |
| roll | atan2(Δy, Δx) of the eye-centre line in the image; positive: clockwise in the picture | degrees |
| face_size | face-oval bounding box diagonal / picture side | fraction |
| face_x, face_y | face-oval centre / picture side (0..1; 0.5 = centred) | fraction |
| brightness | mean luma of the face (inside the oval), 0..1 | 0..1 |
| warmth | colour temperature proxy: mean (R − B) / (R + G + B) over the face | ratio |
| saturation | mean HSV saturation over the face, 0..1 | 0..1 |
| background | mean luma outside the person (MediaPipe selfie segmentation), 0..1 | 0..1 |
| hair_brightness | mean luma of the hair: person pixels above the brows and outside the face oval, 0..1 | 0..1 |
| hair_warmth | (R − B) / (R + G + B) over the same hair pixels | ratio |

A mirrored picture flips the sign of yaw and roll; a picture rotated by θ (clockwise) adds θ to roll.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.faces.landmarks import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT

GEOMETRIC = ("smile", "mouth_width", "mouth_open", "eye_open_left", "eye_open_right", "eyes_open", "yaw", "pitch",
             "roll", "face_size", "face_x", "face_y")
PHOTOMETRIC = ("brightness", "warmth", "saturation", "background", "hair_brightness", "hair_warmth")
ATTRIBUTES = GEOMETRIC + PHOTOMETRIC
UNITS = {**{k: "IOD" for k in GEOMETRIC[:6]}, "yaw": "°", "pitch": "°", "roll": "°", "face_size": "fraction",
         "face_x": "fraction", "face_y": "fraction", "brightness": "0..1", "warmth": "ratio", "saturation": "0..1",
         "background": "0..1", "hair_brightness": "0..1", "hair_warmth": "ratio"}

# MediaPipe face-mesh indices (topology of the 468/478-point mesh).
MOUTH_CORNERS = (61, 291)
INNER_LIPS = (13, 14)
LIDS_IMAGE_LEFT = (159, 145)
LIDS_IMAGE_RIGHT = (386, 374)
CHEEKS = (234, 454)
FOREHEAD_CHIN = (10, 152)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


def geometric(points: np.ndarray, side: float) -> dict[str, float]:
    """The mesh measures of one face. points: [478, 3] (x, y, z) or [478, 2] (then yaw and pitch are NaN)."""
    p = np.asarray(points, np.float64)
    xy = p[:, :2]
    eye_l, eye_r = xy[list(EYE_IMAGE_LEFT)].mean(0), xy[list(EYE_IMAGE_RIGHT)].mean(0)
    across = eye_r - eye_l
    iod = float(np.linalg.norm(across)) or 1e-9
    right = across / iod
    up = np.array([right[1], -right[0]])  # the face's up axis in the image (y grows downwards)
    c1, c2 = xy[MOUTH_CORNERS[0]], xy[MOUTH_CORNERS[1]]
    mid = (xy[INNER_LIPS[0]] + xy[INNER_LIPS[1]]) / 2
    out = {
        "smile": float(((c1 + c2) / 2 - mid) @ up / iod),
        "mouth_width": float(np.linalg.norm(c2 - c1) / iod),
        "mouth_open": float(np.linalg.norm(xy[INNER_LIPS[1]] - xy[INNER_LIPS[0]]) / iod),
        "eye_open_left": float(np.linalg.norm(xy[LIDS_IMAGE_LEFT[1]] - xy[LIDS_IMAGE_LEFT[0]]) / iod),
        "eye_open_right": float(np.linalg.norm(xy[LIDS_IMAGE_RIGHT[1]] - xy[LIDS_IMAGE_RIGHT[0]]) / iod),
        "roll": math.degrees(math.atan2(across[1], across[0])),
    }
    out["eyes_open"] = (out["eye_open_left"] + out["eye_open_right"]) / 2
    if p.shape[1] >= 3:
        d = p[CHEEKS[1]] - p[CHEEKS[0]]
        v = p[FOREHEAD_CHIN[1]] - p[FOREHEAD_CHIN[0]]
        # Measured in the face's own frame (roll removed), so a tilted head does not leak into yaw and pitch.
        dx, dy = d[:2] @ right, v[:2] @ -up
        out["yaw"] = math.degrees(math.atan2(d[2], dx))
        out["pitch"] = math.degrees(math.atan2(v[2], dy))
    else:
        out["yaw"] = out["pitch"] = float("nan")
    oval = xy[list(FACE_OVAL)]
    lo, hi = oval.min(0), oval.max(0)
    out["face_size"] = float(np.linalg.norm(hi - lo) / side)
    out["face_x"], out["face_y"] = (float(v) for v in (lo + hi) / 2 / side)
    return out


def _face_mask(points: np.ndarray, shape) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[list(FACE_OVAL), :2]).astype(np.int32)], 1)
    return mask.astype(bool)


def photometric(rgb: np.ndarray, points: np.ndarray, person: np.ndarray | None = None) -> dict[str, float]:
    """The pixel measures of one face: `rgb` uint8, `points` its mesh, `person` an optional [H, W] person mask."""
    img = np.asarray(rgb, np.float64) / 255.0
    face = _face_mask(points, img.shape)
    if not face.any():
        face = np.ones(img.shape[:2], bool)
    pix = img[face]
    luma = pix @ np.array([0.299, 0.587, 0.114])
    hsv = cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2HSV)[face]
    out = {
        "brightness": float(luma.mean()),
        "warmth": float(np.mean((pix[:, 0] - pix[:, 2]) / np.maximum(pix.sum(1), 1e-6))),
        "saturation": float(hsv[:, 1].mean() / 255.0),
    }
    out["background"] = out["hair_brightness"] = out["hair_warmth"] = float("nan")
    if person is not None:
        fg = np.asarray(person) >= 0.5
        all_luma = img @ np.array([0.299, 0.587, 0.114])
        bg = ~fg & ~face
        if bg.any():
            out["background"] = float(all_luma[bg].mean())
        # Hair: the person above the brows (the face's own up axis) that is not face.
        xy = np.asarray(points, np.float64)[:, :2]
        eye_l, eye_r = xy[list(EYE_IMAGE_LEFT)].mean(0), xy[list(EYE_IMAGE_RIGHT)].mean(0)
        right = (eye_r - eye_l) / (np.linalg.norm(eye_r - eye_l) or 1e-9)
        up = np.array([right[1], -right[0]])
        brow = xy[list(BROWS)].mean(0)
        ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        above = ((xs - brow[0]) * up[0] + (ys - brow[1]) * up[1]) > 0
        hair = fg & ~face & above
        if hair.sum() >= 20:
            h = img[hair]
            out["hair_brightness"] = float(all_luma[hair].mean())
            out["hair_warmth"] = float(np.mean((h[:, 0] - h[:, 2]) / np.maximum(h.sum(1), 1e-6)))
    return out


class AttributeMeter:
    """Measures faces in aligned crops (generator renders) or photos. Reuses one mesh and one segmenter."""

    def __init__(self, mesh=None, segmenter=None, photometric: bool = True):
        from engine.faces.mesh import shared_crop_mesh

        self.mesh = mesh or shared_crop_mesh()
        self._segmenter = segmenter
        self.photometric = photometric

    @property
    def segmenter(self):
        if self._segmenter is None:
            from engine.faces.segment import shared_segmenter

            self._segmenter = shared_segmenter()
        return self._segmenter

    def crop(self, rgb: np.ndarray) -> dict[str, float] | None:
        """All measures of the face filling an aligned crop (a render); None when the mesh finds no face."""
        rgb = np.asarray(rgb, np.uint8)
        pts = self.mesh(rgb, depth=True)
        if pts is None:
            return None
        out = geometric(pts, rgb.shape[0])
        if self.photometric:
            out.update(photometric(rgb, pts, _resized_mask(self.segmenter, rgb)))
        return out

    def photo(self, rgb: np.ndarray) -> dict[str, float] | None:
        """All measures of the largest face in a photo, in the photo's own frame (roll included); None: no face."""
        from engine.errors import NoFaceError
        from engine.faces import align_face
        from engine.faces.warp import transform_points

        rgb = np.asarray(rgb, np.uint8)
        try:
            face = align_face(rgb, size=256)
        except NoFaceError:
            return None
        pts = self.mesh(face.image, depth=True)
        if pts is None:
            return None
        inv = face.inverse_matrix()
        scale = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))
        back = np.concatenate([transform_points(inv, pts[:, :2]), pts[:, 2:] * scale], axis=1)
        out = geometric(back, max(rgb.shape[:2]))
        if self.photometric:
            out.update(photometric(rgb, back, _resized_mask(self.segmenter, rgb)))
        return out


def _resized_mask(segmenter, rgb: np.ndarray) -> np.ndarray:
    """The person mask of any picture, computed at most 512 px on the long side and resized back."""
    h, w = rgb.shape[:2]
    k = min(1.0, 512.0 / max(h, w))
    small = rgb if k == 1.0 else cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))),
                                            interpolation=cv2.INTER_AREA)
    mask = segmenter(small)
    return mask if k == 1.0 else cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
