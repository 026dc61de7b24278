"""Read any photo a user is likely to have into one layout: uint8 RGB, H x W x 3, upright.

Everything downstream (landmarks, warps, paste-back) assumes that layout, so every odd format is normalised here:
EXIF rotation, grayscale, palette, alpha, 16-bit and CMYK.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import UserError

# Transparent pixels become mid-grey: closer to the average of a face dataset than white, so an encoder sees a
# plain, neutral background rather than a glaring one.
DEFAULT_BACKGROUND = (128, 128, 128)


def describe_source(source) -> str:
    """A short name for messages: the file name for paths, 'the image' for in-memory data."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    filename = getattr(source, "filename", None)  # a PIL image opened from a file remembers it
    return str(filename) if filename else "the image"


def load_image(source, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> np.ndarray:
    """Load a path, a PIL image or an array as a contiguous uint8 RGB array (H, W, 3), EXIF orientation applied.

    Arrays are taken as RGB(A) in channel order; uint16 arrays as 16-bit, float arrays as values in [0, 1].
    A file that cannot be read raises `UserError` naming the file.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, background)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(ImageOps.exif_transpose(source), background, describe_source(source))
    if not isinstance(source, (str, os.PathLike)):
        raise UserError(f"cannot use a {type(source).__name__} as an image; pass a file path or an RGB array")
    path = Path(source)
    if not path.exists():
        raise UserError(f"image file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass an image file (JPEG, PNG or WebP)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 MP and refuses above ~179 MP; the refusal is handled below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                upright = ImageOps.exif_transpose(im)
                return _pil_to_rgb(upright, background, str(path))
    except UserError:
        raise
    except Image.DecompressionBombError as e:
        raise UserError(f"{path} is too large to open safely ({e}); resize it below 100 megapixels") from e
    except UnidentifiedImageError as e:
        raise UserError(f"cannot read {path}: not an image file Pillow understands; use JPEG, PNG or WebP") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Truncated or corrupt data surfaces as any of these, depending on the codec.
        raise UserError(f"cannot read {path}: the file is damaged or incomplete ({e})") from e


def _pil_to_rgb(im: Image.Image, background, name: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG, TIFF); 'I' is how some decoders hand over 16-bit data in 32-bit integers.
        return _array_to_rgb(np.asarray(im).astype(np.uint16 if mode != "I" else np.int64), background)
    if mode == "F":
        return _array_to_rgb(np.asarray(im, dtype=np.float32), background)
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        return _composite(np.asarray(im.convert("RGBA")), background)
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im))
    try:
        # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow knows how to reach RGB (CMYK JPEGs included).
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except (ValueError, OSError) as e:
        raise UserError(f"cannot read {name}: unsupported colour mode {mode}; save it as an RGB JPEG or PNG") from e


def _array_to_rgb(a: np.ndarray, background) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or min(a.shape[:2]) < 1:
        raise UserError(f"an image array must be H x W, H x W x 3 or H x W x 4, not {a.shape}")
    a = _to_uint8(a)
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if a.shape[2] == 2:  # gray + alpha
        a = np.concatenate([np.repeat(a[:, :, :1], 3, axis=2), a[:, :, 1:]], axis=2)
    if a.shape[2] == 4:
        return _composite(a, background)
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32))
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.dtype == np.uint16 or a.max(initial=0) > 255:
        # 65535 -> 255 exactly; dividing by 256 would leave white at 255.996 -> still 255, but skews mid-tones.
        return ((np.clip(a, 0, 65535).astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def _composite(rgba: np.ndarray, background) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    out = rgba[:, :, :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.ascontiguousarray((out + 0.5).astype(np.uint8))
