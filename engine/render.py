"""Turning generator output into pictures: raw [-1, 1] tensors to uint8, image grids and rows, PNG writing, and the
PSNR between two outputs as people see them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.errors import UserError


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] or [3, H, W] raw output (about -1..1) → uint8 [N, H, W, 3] or [H, W, 3]."""
    x = (img.detach().float().clamp(-1, 1) + 1) * 127.5
    x = x.round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy() if x.ndim == 4 else x.permute(1, 2, 0).cpu().numpy()


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 2, bg: int = 255) -> np.ndarray:
    """uint8 [N, H, W, 3] → one uint8 image with the tiles in rows of `cols`."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, c), bg, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y : y + h, x : x + w] = im
    return grid


def side_by_side(images: list[np.ndarray], pad: int = 4, bg: int = 255) -> np.ndarray:
    """uint8 [H, W, 3] images in one row, top-aligned, `pad` pixels of grey level `bg` between them."""
    h = max(im.shape[0] for im in images)
    w = sum(im.shape[1] for im in images) + pad * (len(images) - 1)
    out = np.full((h, w, 3), bg, np.uint8)
    x = 0
    for im in images:
        out[: im.shape[0], x : x + im.shape[1]] = im
        x += im.shape[1] + pad
    return out


PSNR_CAP = 200.0  # identical outputs: a finite number (JSON has no infinity)


def psnr(a, b, per_sample: bool = False):
    """PSNR in dB between two raw generator outputs (about -1..1, clamped to it), measured on the 0..1 pictures people
    see, in float64; at most PSNR_CAP. Tensors or arrays. One float over everything, or with per_sample one value per
    item of the first dimension (a float64 tensor)."""
    x = torch.as_tensor(a).detach().double().clamp(-1, 1)
    y = torch.as_tensor(b).detach().double().clamp(-1, 1)
    dims = list(range(1, x.ndim)) if per_sample else list(range(x.ndim))
    mse = ((x - y) / 2).square().mean(dim=dims)
    db = (-10 * torch.log10(mse)).clamp(max=PSNR_CAP)  # mse 0 → +inf → the cap
    return db if per_sample else float(db)


def save_image(array: np.ndarray, path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None
    return path


def parse_seeds(text: str) -> list[int]:
    """'0-15', '1,5,7', '3-5,10' → a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"bad seed list {text!r}; use e.g. '0-15' or '1,4,9'") from None
    if not seeds:
        raise UserError("no seeds given")
    return seeds
