"""Edit transfer: the user's own photo, changed only by what an edit changes.

Pasting the generator's rendition of an edited face into a photo replaces the person with the generator's idea of
them (blurrier, and often someone else). Edit transfer keeps the photo's pixels and carries over only the difference
between two renders of the same inverted codes: `before` = G(w) and `after` = G(w') with the edit applied.

1. Motion: MediaPipe's face mesh on both renders says where each of 478 facial points moved; their displacements,
   spread by a Gaussian (normalised convolution), give a smooth field over the face that fades to zero a little
   beyond it. Hair and background therefore never swirl, and a large slider value bends the face instead of
   tearing it. When the mesh finds no face in a render, dense optical flow (OpenCV's DIS), smoothed with
   forward-backward confidence and confined to the head, stands in.
2. Appearance: what motion does not explain (colour, light, a hat, an open mouth's darkness) is modelled as a
   colour change that depends on where a pixel is AND how bright it is: a bilateral grid (x, y, luminance) holds, per
   cell, the least-squares fit `after - warp(before) ≈ gain·warp(before) + offset` of the render pixels that fall in
   it. The photo's pixels look their change up by their own position and brightness. Where the generator's hair
   outline differs from the photo's, a bright background pixel next to dark hair therefore gets the change the
   render's bright pixels had there (usually none) instead of the hair's, which is what leaves halos with any
   spatial-only blend; and the generator's texture, the part that would replace the person, never enters. Colour
   changes are further kept on the person (MediaPipe's selfie segmentation of the photo's own crop), so the
   background beside the hair is never tinted.
   An inverted face rarely has the photo's exposure (a pale cheek in the photo is a mid-tone in the render), so
   brightness is compared by rank, not by value: the photo's luminance is mapped onto the render's by matching their
   distributions over the head, and each photo pixel takes the change its render counterpart got (the fit evaluated
   at that counterpart's value, in the photo's own hue). Looked up by raw value, a bright cheek landed on levels
   the render barely has, whose few-pixel fits printed as green or yellow blotches.
   The fit learns only from render pixels the motion follows (optical flow and the mesh's field agree), and a
   cell's gain never lowers contrast more than the renders' own fine detail fell there: content a large nod leaves
   slightly out of place otherwise reads as lost contrast and flattens the photo's skin.
3. The field and the residual, defined on the aligned crop, are resampled at every photo pixel the crop covers
   (through the inverse of the alignment transform) and applied to the original pixels at full resolution. Both
   fade to exactly zero at the region's feathered edge, so there is no seam and pixels outside stay bit for bit.

With `before` and `after` equal (every slider at 0) the photo comes back unchanged, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engine.errors import UserError
from engine.faces.align import AlignedFace
from engine.faces.warp import invert_affine, quad_matrix

MODES = ("transfer", "regenerate")


def check_mode(mode: str) -> str:
    m = str(mode).strip().lower()
    if m not in MODES:
        raise UserError(f"unknown edit mode '{mode}'; use transfer (your photo, edited) or regenerate (the "
                        "generator's rendition pasted in)")
    return m


@dataclass
class TransferSettings:
    """Sizes are fractions of the aligned crop's side, so they mean the same at any resolution."""

    flow_size: int = 256  # working resolution of the motion estimate (renders are upsampled to it)
    landmark_smooth: float = 0.04  # Gaussian sigma spreading the inner mesh points' displacements over the face
    landmark_reach: float = 0.1  # ... and all points' beyond it (the motion fades out over about twice this)
    motion_smooth: float = 0.045  # Gaussian sigma of the optical-flow fallback (confidence-weighted)
    max_motion: float = 0.12  # longest displacement allowed
    grid_cells: int = 16  # bilateral grid: spatial cells across the crop ...
    grid_levels: int = 8  # ... and luminance levels
    colour_eps: float = 12.0  # regularisation of the gain (0..255 units): flat cells get an offset, not a gain
    colour_prior: float = 0.05  # weight (a share of a cell's pixels) of the cell's all-levels fit in each level's fit
    fit_misalign: float = 0.008  # motion error (crop units) at which a render pixel's weight in the colour fit is 1/e
    max_colour: float = 48.0  # soft limit (0..255 units) of the colour change at any pixel
    # Where the edit may act: an ellipse around the head (crop units), wider than paste-back's face ellipse so that
    # hair and hats change too, feathered over `feather`.
    region_center: tuple[float, float] = (0.5, 0.5)
    region_radii: tuple[float, float] = (0.44, 0.5)
    feather: float = 0.12
    # Motion is confined to a tighter head mask: face, hair and ears move; the background never does.
    head_center: tuple[float, float] = (0.5, 0.52)
    head_radii: tuple[float, float] = (0.36, 0.44)
    temporal: float = 0.0  # video: weight of the previous frame's field and residual (0 = none)


def _ellipse(u: np.ndarray, v: np.ndarray, center, radii, feather: float) -> np.ndarray:
    """1 deep inside the ellipse, 0 outside, a smoothstep `feather` wide (crop units) inside its edge."""
    dx, dy = (u - center[0]) / radii[0], (v - center[1]) / radii[1]
    r = np.sqrt(dx * dx + dy * dy)
    grad = np.sqrt((dx / radii[0]) ** 2 + (dy / radii[1]) ** 2) / np.maximum(r, 1e-9)
    t = np.clip((1.0 - r) / np.maximum(grad, 1e-9) / max(feather, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.meshgrid(t, t)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def _as_float(rgb: np.ndarray, size: int) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] != rgb.shape[1]:
        raise UserError(f"renders must be square RGB images, got shape {list(rgb.shape)}")
    img = rgb.astype(np.float32)
    if img.shape[0] != size:
        interp = cv2.INTER_CUBIC if img.shape[0] < size else cv2.INTER_AREA
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img


@dataclass
class BeforeMesh:
    """The unedited render's face-mesh points in working-size crop pixels (None: the mesh found no face)."""

    points: np.ndarray | None


@dataclass
class ColourField:
    """The appearance part of an edit: the bilateral grid [cells, cells, levels, 6] of gain (3) and offset (3, in
    0..255 units), and the render's luminance quantiles over the head (what the photo's brightness is matched to)."""

    grid: np.ndarray
    quantiles: np.ndarray

    def blend(self, prev: ColourField, k: float) -> ColourField:
        """`k` of `prev` and the rest of this one (both parts are blended; quantiles stay increasing)."""
        return ColourField(k * prev.grid + (1 - k) * self.grid, k * prev.quantiles + (1 - k) * self.quantiles)


class EditTransfer:
    """Carries `before → after` (two renders of the aligned face) over to the photo. Reuse one instance per video:
    with `settings.temporal > 0` it blends each frame's field with the previous one's, which removes the flicker that
    frame-to-frame encoder noise would otherwise add."""

    def __init__(self, settings: TransferSettings | None = None, segmenter=None, meshes=None):
        self.s = settings or TransferSettings()
        self._segmenter = segmenter  # engine.faces.segment.PersonSegmenter; the shared one when None
        # engine.faces.mesh.CropMesh for the (before, after) renders: a video passes two tracking ones; photos share
        # the static one; False turns the mesh off (optical flow only).
        self._meshes = meshes
        n = self.s.flow_size
        u, v = _grid(n)
        self._head = _ellipse(u, v, self.s.head_center, self.s.head_radii, self.s.feather)
        self._region = _ellipse(u, v, self.s.region_center, self.s.region_radii, self.s.feather)
        u, v = _grid(max(n // 2, 1))
        self._region_half = _ellipse(u, v, self.s.region_center, self.s.region_radii, self.s.feather)
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._prev: tuple[np.ndarray, ColourField] | None = None

    def reset(self) -> None:
        """Forget the previous frame (a cut, or the face left the picture)."""
        self._prev = None

    def close(self) -> None:
        """Release the face-mesh trackers this instance was given (the shared ones stay)."""
        for mesh in self._meshes or ():
            mesh.close()
        self._meshes = False

    # -- in the aligned crop -----------------------------------------------------------------------------------------
    def fields(self, before: np.ndarray, after: np.ndarray, before_mesh=None) -> tuple[np.ndarray, ColourField]:
        """(motion [n, n, 2] in crop pixels of the working size n, the colour field). Output pixel x takes the
        photo's content p from x + motion(x) and becomes p plus the change the colour field gives p's brightness
        (matched to the render's) at x."""
        s, n = self.s, self.s.flow_size
        a, b = _as_float(before, n), _as_float(after, n)
        ga, gb = _gray(a), _gray(b)
        # Optical flow at half the working size (a quarter of the cost): it only weighs and backs up the mesh's
        # motion, and both are smooth at that scale.
        h = n // 2
        sa, sb = (cv2.resize(g, (h, h), interpolation=cv2.INTER_AREA) for g in (ga, gb))
        flow = cv2.resize(self._dis.calc(sb, sa, None), (n, n), interpolation=cv2.INTER_LINEAR) * 2.0  # b(x) ≈ a(x+f)
        back = cv2.resize(self._dis.calc(sa, sb, None), (n, n), interpolation=cv2.INTER_LINEAR) * 2.0
        xs, ys = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))
        # Confidence: the two directions agree (flow(x) + back(x + flow(x)) ≈ 0) where the renders have structure to
        # follow; in flat or changing regions DIS returns arbitrary vectors, which are what made backgrounds swirl.
        back_at = cv2.remap(back, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        err = ((flow + back_at) ** 2).sum(axis=2)
        consistent = np.exp(-err / (0.01 * n) ** 2)
        grad = cv2.magnitude(cv2.Sobel(ga, cv2.CV_32F, 1, 0), cv2.Sobel(ga, cv2.CV_32F, 0, 1))
        conf = consistent * (grad / (grad + 20.0)) * self._head + 1e-4
        sigma = s.motion_smooth * n
        dis = flow  # the optical flow itself, before the mesh or smoothing replace it
        marks = self._landmark_motion(a, b, before_mesh)
        if marks is not None:
            flow = marks
        else:
            # Normalised convolution: a confidence-weighted average of nearby vectors, then faded out of the head.
            flow = cv2.GaussianBlur(flow * conf[..., None], (0, 0), sigma) / cv2.GaussianBlur(conf, (0, 0),
                                                                                             sigma)[..., None]
            flow *= self._head[..., None]
        cap = s.max_motion * n
        length = np.sqrt((flow * flow).sum(axis=2, keepdims=True))
        flow = flow * np.minimum(1.0, cap / np.maximum(length, 1e-6))
        moved = cv2.remap(a, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Only pixels that keep what they show teach the colour model. Where the flows disagree, or where a pixel
        # changes between person and background (hair uncovered by a turned head), content appeared or vanished: the
        # generator's rendition, not a colour change of what the photo shows.
        seg = self._segmenter_or_shared()
        same = 1.0 - np.abs(seg(np.clip(moved, 0, 255).astype(np.uint8)) - seg(np.clip(b, 0, 255).astype(np.uint8)))
        # Nor do pixels the motion used here does not follow: where the optical flow (when consistent) says the content
        # went elsewhere than the mesh's smooth field carries it, `moved` and `b` show different content (a nodding
        # chin's edge, a shifted eyelid), and a fit over them reads the misalignment as lost contrast: negative
        # gains that flattened the photo's skin on a large nod (to 83% of its detail, against the render's 107%).
        mis = ((dis - flow) ** 2).sum(axis=2)
        fit = consistent * same * same * np.exp(-mis / (s.fit_misalign * n) ** 2)
        lum = _luma(moved)
        colour = ColourField(self._colour_change(moved, b, fit, self._gain_floor(lum, _luma(b))),
                             _quantiles(lum, self._head))
        if s.temporal > 0 and self._prev is not None:
            k = float(s.temporal)
            flow = k * self._prev[0] + (1 - k) * flow
            colour = colour.blend(self._prev[1], k)
        self._prev = (flow, colour)
        return flow.astype(np.float32), colour

    def mesh_before(self, before: np.ndarray) -> BeforeMesh:
        """The face mesh of the unedited render, for `fields(..., before_mesh=)`: the webcam finds it on another
        thread while the previous frame is transferred."""
        return BeforeMesh(self._mesh_points(0, _as_float(before, self.s.flow_size)))

    def _mesh_points(self, which: int, img: np.ndarray) -> np.ndarray | None:
        """Mesh points of a working-size render by the before (0) or after (1) tracker; None without a face."""
        if self._meshes is False:
            return None
        from engine.faces.mesh import shared_crop_mesh

        mesh = self._meshes[which] if self._meshes else shared_crop_mesh()
        return mesh(np.clip(img, 0, 255).astype(np.uint8))

    def _landmark_motion(self, a: np.ndarray, b: np.ndarray, before_mesh: BeforeMesh | None = None
                         ) -> np.ndarray | None:
        """The backward field (after → before) from the face mesh of both renders, or None without a mesh."""
        if self._meshes is False:
            return None
        n = self.s.flow_size
        p = before_mesh.points if before_mesh is not None else self._mesh_points(0, a)
        q = self._mesh_points(1, b) if p is not None else None
        if p is None or q is None:
            return None
        # Normalised convolution: each point's displacement is splatted at its new place, blurred, and divided by the
        # blurred weight. The face's own features (eyes, brows, nose, lips) set a fine field; the whole mesh, contour
        # included, a coarse one that carries the motion on beyond the face and fades out over a few tenths of the
        # crop, so the ears and hair beside a turning face follow it partly instead of folding against a still
        # border. The contour points stay out of the fine field: as a head turns they slide along the cheek (they
        # mark its silhouette, not a fixed spot of skin), and a fine field would fold the skin along that line.
        from engine.edit.attributes import FACE_OVAL

        inner = np.ones(len(q), bool)
        inner[list(FACE_OVAL)] = False
        ix = np.clip(np.rint(q).astype(int), 0, n - 1)
        values = np.concatenate([p - q, np.ones((len(q), 1))], axis=1).astype(np.float32)
        fields = []
        # The fields are smooth at the scale of their sigma: blurring on a grid 4x coarser (then upsampling) gives
        # the same field for a sixteenth of the work.
        m = max(16, n // 4)
        iy, jx = np.clip(ix * m // n, 0, m - 1)[:, 1], np.clip(ix * m // n, 0, m - 1)[:, 0]
        for keep, sigma in ((inner, self.s.landmark_smooth * m), (slice(None), self.s.landmark_reach * m)):
            num = np.zeros((m, m, 3), np.float32)
            np.add.at(num, (iy[keep], jx[keep]), values[keep])
            blurred = cv2.resize(cv2.GaussianBlur(num, (0, 0), sigma), (n, n), interpolation=cv2.INTER_LINEAR)
            den = blurred[..., 2]
            ref = float(np.median(den[ix[keep, 1], ix[keep, 0]]))
            # Support: full where points are dense, fading to none about two sigmas beyond them.
            t = np.clip(den / max(0.5 * ref, 1e-9), 0.0, 1.0)
            fields.append((blurred[..., :2] / np.maximum(den, 1e-9)[..., None], (t * t * (3.0 - 2.0 * t))[..., None]))
        (fine, inside), (coarse, reach) = fields
        # The fine field takes over from the coarse one gradually, over the fine support's own fade.
        flow = (inside * fine + (1 - inside) * coarse * reach) * self._region[..., None]
        return _fold_free(flow)

    def _gain_floor(self, lum_a: np.ndarray, lum_b: np.ndarray) -> np.ndarray:
        """[cells, cells]: the lowest gain each grid cell may take, from the renders' own change of fine detail there
        (RMS of the luminance minus its blur): 0 where the edit keeps or adds detail, -0.3 where it loses 30%. A fit
        over content the motion left a little out of place finds the residual anti-correlated with the content, which
        reads as lost contrast; the photo's detail may fall as far as the render's, and no further."""
        c = self.s.grid_cells
        energy = []
        for y in (lum_a, lum_b):
            hp = y - cv2.GaussianBlur(y, (0, 0), 2.0)
            energy.append(cv2.resize(hp * hp * self._region, (c, c), interpolation=cv2.INTER_AREA).astype(np.float64))
        ea, eb = (_blur_axis(_blur_axis(e, 0), 1) for e in energy)
        return np.minimum(np.sqrt((eb + 1.0) / (ea + 1.0)) - 1.0, 0.0)

    def _colour_change(self, a: np.ndarray, b: np.ndarray, weight: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """The bilateral grid [cells, cells, levels, 6]: per cell, gain (3) and offset (3) of the per-channel fit
        b - a ≈ gain·a + offset over the render pixels splatted into it (trilinear weights), the statistics
        blurred over neighbouring cells first so that sparse cells borrow from their neighbours; gains no lower than
        `floor` [cells, cells] (`_gain_floor`)."""
        s = self.s
        c, z = s.grid_cells, s.grid_levels
        # The grid's cells are 16 working pixels wide: its statistics gathered from a half-size copy differ by about
        # 0.02 levels (0..255) on average and cost a quarter (45 → 10 ms per webcam frame).
        if a.shape[0] // 2 >= 4 * c:
            h = a.shape[0] // 2
            a, b, weight = (cv2.resize(x, (h, h), interpolation=cv2.INTER_AREA) for x in (a, b, weight))
        region = self._region if a.shape[0] == self._region.shape[0] else self._region_half
        d = (b - a) * region[..., None]
        w = (region * weight).astype(np.float32) + 1e-3
        gz = _luma(a) / 255.0 * (z - 1)
        stats = np.concatenate([np.ones_like(a[..., :1]), a, d, a * a, a * d], axis=2) * w[..., None]
        # Splatting: a tent over luminance levels, an area average over each cell (OpenCV's resize does it in one
        # pass per level, far faster than scattering every pixel into eight corners).
        grid = np.empty((c, c, z, 13), np.float64)
        for k in range(z):
            tent = np.clip(1.0 - np.abs(gz - k), 0.0, 1.0)[..., None]
            grid[:, :, k] = cv2.resize(stats * tent, (c, c), interpolation=cv2.INTER_AREA)
        for axis in range(3):
            grid = _blur_axis(grid, axis)
        # Shrinkage: each level's statistics get `colour_prior` worth of the whole cell's (all levels pooled), so a
        # level the render barely has in a cell takes the cell's fit instead of a few pixels' extrapolated one.
        pooled = grid.sum(axis=2, keepdims=True)
        grid = grid + float(s.colour_prior) * pooled / np.maximum(pooled[..., :1], 1e-6)
        wt = np.maximum(grid[..., :1], 1e-6)
        ma, md = grid[..., 1:4] / wt, grid[..., 4:7] / wt
        var = np.maximum(grid[..., 7:10] / wt - ma * ma, 0.0)
        cov = grid[..., 10:13] / wt - ma * md
        gain = cov / (var + float(s.colour_eps) ** 2)
        gain = np.maximum(gain, floor[:, :, None, None])
        offset = md - gain * ma
        return np.concatenate([gain, offset], axis=3).astype(np.float32)

    # -- onto the photo ----------------------------------------------------------------------------------------------
    def __call__(self, photo: np.ndarray, aligned: AlignedFace, before: np.ndarray, after: np.ndarray,
                 person: np.ndarray | None = None, before_mesh: BeforeMesh | None = None) -> np.ndarray:
        """The photo (uint8 RGB, the one `aligned` was measured on) with the edit carried over; a new array.
        `person` and `before_mesh`: `self.person(photo, aligned)` and `self.mesh_before(before)` when the caller made
        them already (the webcam, on another thread)."""
        photo = np.asarray(photo)
        h, w = photo.shape[:2]
        if (w, h) != tuple(aligned.image_size):
            raise UserError(f"the photo is {w}x{h} but the face was aligned on a {aligned.image_size[0]}x"
                            f"{aligned.image_size[1]} image; edit the photo the face was found in")
        if np.array_equal(before, after):
            self._prev = None if self.s.temporal <= 0 else self._prev
            return photo.copy()
        flow, colour = self.fields(before, after, before_mesh)
        return self.apply(photo, aligned, flow, colour, self.person(photo, aligned) if person is None else person)

    def _segmenter_or_shared(self):
        from engine.faces.segment import shared_segmenter

        return self._segmenter or shared_segmenter()

    def person(self, photo: np.ndarray, aligned: AlignedFace) -> np.ndarray:
        """[n, n] soft mask of the person in the photo's own aligned crop (working size n)."""
        from engine.faces.warp import warp_quad

        n = self.s.flow_size
        mask = self._segmenter_or_shared()(warp_quad(photo, aligned.quad, n))
        # Soft by about a hair strand's width at this scale: the cut follows the hair without a visible edge.
        return cv2.GaussianBlur(mask, (0, 0), 0.008 * n)

    def apply(self, photo: np.ndarray, aligned: AlignedFace, flow: np.ndarray, colour: ColourField,
              person: np.ndarray | None = None) -> np.ndarray:
        s, n = self.s, self.s.flow_size
        h, w = photo.shape[:2]
        quad = np.asarray(aligned.quad, np.float64)
        # Only the photo pixels the region can reach: the bounding box of the region ellipse mapped to the photo.
        inv = invert_affine(quad_matrix(quad, 1))  # crop units (pixel-centred, 0..1) → photo pixels
        t = np.linspace(0, 2 * math.pi, 64)
        eu = s.region_center[0] + s.region_radii[0] * np.cos(t) - 0.5
        ev = s.region_center[1] + s.region_radii[1] * np.sin(t) - 0.5
        px = inv[0, 0] * eu + inv[0, 1] * ev + inv[0, 2]
        py = inv[1, 0] * eu + inv[1, 1] * ev + inv[1, 2]
        x0, x1 = max(int(math.floor(px.min())) - 1, 0), min(int(math.ceil(px.max())) + 2, w)
        y0, y1 = max(int(math.floor(py.min())) - 1, 0), min(int(math.ceil(py.max())) + 2, h)
        out = photo.copy()
        if x1 <= x0 or y1 <= y0:
            return out
        m = quad_matrix(quad, n)  # photo pixels → working-size crop pixels
        xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        cx = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(np.float32)
        cy = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(np.float32)
        weight = _ellipse((cx + 0.5) / n, (cy + 0.5) / n, s.region_center, s.region_radii, s.feather)
        inside = weight > 0
        if not inside.any():
            return out
        extra = np.ones_like(flow[..., :1]) if person is None else person[..., None].astype(np.float32)
        sampled = cv2.remap(np.ascontiguousarray(np.concatenate([flow, extra], axis=2)), cx, cy, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        motion, on_person = sampled[..., :2], sampled[..., 2]
        # The source of each photo pixel: its crop position moved by the field, mapped back into the photo.
        mi = invert_affine(m)
        sx, sy = cx + motion[..., 0], cy + motion[..., 1]
        src_x = (mi[0, 0] * sx + mi[0, 1] * sy + mi[0, 2]).astype(np.float32)
        src_y = (mi[1, 0] * sx + mi[1, 1] * sy + mi[1, 2]).astype(np.float32)
        warped = cv2.remap(photo, src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        change = self._slice(colour, photo, quad, flow, cx, cy) * (weight * on_person)[..., None]
        delta = warped * change[..., :3] + change[..., 3:]
        # Soft limit: colour and light edits stay well inside it; what exceeds it is content the generator made up
        # (hair it moved, a background it uncovered), which would otherwise print as a pale or dark patch.
        tau = float(s.max_colour)
        new = warped + tau * np.tanh(delta / tau)
        roi = out[y0:y1, x0:x1]
        roi[inside] = np.clip(np.rint(new[inside]), 0, 255).astype(np.uint8)
        return out


    def _slice(self, colour: ColourField, photo: np.ndarray, quad: np.ndarray, flow: np.ndarray, cx: np.ndarray,
               cy: np.ndarray) -> np.ndarray:
        """Each photo pixel's (gain, offset) from the grid: bilinear in position, linear in its luminance matched
        to the render's. The gain returned applies to the photo's own value: it is the grid's gain scaled by the
        ratio of the render counterpart's brightness to the pixel's, so the change is the one that counterpart got.

        Slicing happens on the crop at about the face's own resolution in the photo (at most 1024 px): the grid is
        upsampled per luminance level, each crop pixel picks the two levels around the brightness of what the motion
        brings there, and the result is resampled onto the photo once. Per-pixel lookups at full photo resolution
        cost several times more for the same picture on a webcam frame."""
        from engine.faces.warp import warp_quad

        n, z = self.s.flow_size, self.s.grid_levels
        side = float(np.linalg.norm(quad[3] - quad[0]))
        res = int(np.clip(round(side), n, 1024))
        crop = warp_quad(photo, quad, res).astype(np.float32)
        if np.any(flow):
            f = cv2.resize(flow, (res, res), interpolation=cv2.INTER_LINEAR) * (res / n)
            xs, ys = np.meshgrid(np.arange(res, dtype=np.float32), np.arange(res, dtype=np.float32))
            crop = cv2.remap(crop, xs + f[..., 0], ys + f[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lum = np.clip(_luma(crop), 0.0, 255.0)
        half = lum[::2, ::2]
        head = cv2.resize(self._head, half.shape[::-1], interpolation=cv2.INTER_AREA)
        # The matching curve tabulated at quarter levels (a gather, not a per-pixel search: 0.5 ms, not 10).
        table = np.interp(np.arange(1021, dtype=np.float32) / 4.0, _quantiles(half, head), colour.quantiles)
        matched = np.take(table.astype(np.float32), (lum * 4.0 + 0.5).astype(np.int32))
        level = np.clip(matched / 255.0 * (z - 1), 0, z - 1).astype(np.float32)
        grid = colour.grid
        # Linear in luminance as a sum of tents over the levels (two are non-zero per pixel): no [z, res, res, 6]
        # stack and no gather, and levels no pixel reaches are never upsampled (a third of the webcam's transfer).
        change = np.zeros((res, res, 6), np.float32)
        for k in range(z):
            w = np.maximum(1.0 - np.abs(level - k), 0.0)
            if not w.any():
                continue
            up = cv2.resize(np.ascontiguousarray(grid[:, :, k]), (res, res), interpolation=cv2.INTER_LINEAR)
            change += up * w[..., None]
        # Bounded: a near-black photo pixel matched to a mid-tone would otherwise take a many-fold gain.
        change[..., :3] *= np.clip((matched + 1.0) / (lum + 1.0), 0.25, 4.0)[..., None]
        # Working-size crop coordinates → this crop's pixels.
        k = res / n
        rx, ry = ((cx + 0.5) * k - 0.5).astype(np.float32), ((cy + 0.5) * k - 0.5).astype(np.float32)
        return np.concatenate([cv2.remap(np.ascontiguousarray(change[..., i : i + 3]), rx, ry, cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE) for i in (0, 3)], axis=2)


def _fold_free(flow: np.ndarray, steps: int = 6) -> np.ndarray:
    """The displacement field as a diffeomorphism: `flow` read as a stationary velocity and integrated by scaling and
    squaring (2**steps small steps composed). Where the features of an edit move against each other (a demo
    direction that turns the nose one way and slides the cheeks the other), a plain displacement folds the skin over
    itself; the integrated one compresses it instead, and never tears or doubles a contour."""
    n = flow.shape[0]
    xs, ys = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))
    f = (flow / float(2**steps)).astype(np.float32)
    for _ in range(steps):
        f = f + cv2.remap(f, xs + f[..., 0], ys + f[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return f


def _quantiles(lum: np.ndarray, mask: np.ndarray, count: int = 33) -> np.ndarray:
    """`count` evenly spaced quantiles (0..255, strictly increasing) of the luminance where `mask` > 0.5, from a
    256-bin histogram (a sort of a megapixel crop would cost a webcam frame's budget)."""
    m = mask > 0.5
    hist = np.bincount(np.clip(np.rint(lum[m]), 0, 255).astype(np.int64), minlength=256).astype(np.float64)
    if hist.sum() <= 0:
        return np.linspace(0.0, 255.0, count)
    cdf = np.concatenate([[0.0], np.cumsum(hist) / hist.sum()])
    # Bin k covers values k - 0.5 .. k + 0.5; the ramp keeps ties (flat histograms' gaps) from stalling np.interp.
    q = np.interp(np.linspace(0.0, 1.0, count), cdf, np.arange(257) - 0.5)
    return np.clip(q, 0.0, 255.0) + np.linspace(0.0, 1e-3, count)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)


def _blur_axis(grid: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1]/4 along one grid axis (edges replicated): neighbouring cells share their statistics."""
    g = np.moveaxis(grid, axis, 0)
    pad = np.concatenate([g[:1], g, g[-1:]], axis=0)
    return np.moveaxis(0.25 * pad[:-2] + 0.5 * pad[1:-1] + 0.25 * pad[2:], 0, axis)


def transfer_edit(photo: np.ndarray, aligned: AlignedFace, before: np.ndarray, after: np.ndarray,
                  settings: TransferSettings | None = None) -> np.ndarray:
    """One photo, one edit: `EditTransfer(settings)(photo, aligned, before, after)`."""
    return EditTransfer(settings)(photo, aligned, before, after)
