"""The Fréchet distance, and FD-MobileNetV2: a quick proxy for FID used to monitor training.

The Fréchet distance between Gaussians fitted to two feature sets,
    FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½),
is computed here (`FeatureStats`, `frechet_distance`) for both metrics that use it. FID is it on the NVlabs
Inception-v3 features (`engine.metrics.fid`, from the [metrics] extra). FD-MobileNetV2 is it on the 1280-d pooled
feature of the ImageNet MobileNetV2 in `engine.models.mobilenet`, images resized to 224: ~0.3 GFLOPs an image against
Inception's ~5.7, so the distiller's periodic evaluation uses it, but it is *not* FID and its numbers are only
comparable with other FD-MobileNetV2 numbers (same inputs, same resizing, same sample counts; the estimate is biased
upwards for small sample counts). Report FID (`main.py eval`) for results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.errors import UserError
from engine.models import mobilenet as _mobilenet

METRIC_NAME = "Fréchet distance on MobileNetV2 features (FD-MobileNetV2)"
METRIC_SHORT = "FD-MobileNetV2"
INPUT_SIZE = 224


@dataclass
class FeatureStats:
    """Mean [D] and covariance [D, D] of a feature set (float64), and how many samples they came from."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> FeatureStats:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 2:
            raise UserError(f"need at least 2 feature vectors [N, D] for Fréchet statistics, got {f.shape}")
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), f.shape[0])

    def save(self, path: str | Path) -> None:
        """Store as .npz, so a reference set's statistics are computed once."""
        np.savez(path, mu=self.mu, sigma=self.sigma, count=self.count, metric=METRIC_SHORT)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["metric"]) != METRIC_SHORT:
                    raise UserError(f"{path} holds {z['metric']} statistics, not {METRIC_SHORT}")
                return cls(z["mu"], z["sigma"], int(z["count"]))
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"cannot read Fréchet statistics from {path}: {e}") from e


def _have_scipy() -> bool:
    try:
        import scipy.linalg  # noqa: F401
    except ImportError:
        return False
    return True


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    # Σ₁Σ₂ is similar to the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½, so tr((Σ₁Σ₂)^½) is the sum of the square roots of
    # the latter's eigenvalues: two symmetric eigendecompositions, no complex arithmetic, fine for singular Σ.
    r = _psd_sqrt(s1)
    w = np.linalg.eigvalsh(r @ s2 @ r)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def _trace_sqrt_product_scipy(s1: np.ndarray, s2: np.ndarray) -> float:
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Singular product (fewer samples than dimensions): the usual remedy, a tiny ridge on both.
        eye = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eye) @ (s2 + eye))
    # Round-off gives tiny imaginary parts; the trace of the true root is real.
    return float(np.real(np.trace(covmean)))


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats, method: str = "auto") -> float:
    """FD between two Gaussians. `method`: "scipy" (scipy.linalg.sqrtm), "eigh" (numpy only), or "auto" (scipy
    when installed, else eigh). Both agree to round-off on well-conditioned covariances."""
    if a.mu.shape != b.mu.shape:
        raise UserError(f"feature sizes differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    if method == "auto":
        method = "scipy" if _have_scipy() else "eigh"
    if method == "scipy":
        tr = _trace_sqrt_product_scipy(a.sigma, b.sigma)
    elif method == "eigh":
        tr = _trace_sqrt_product_eigh(a.sigma, b.sigma)
    else:
        raise ValueError(f"method must be 'auto', 'scipy' or 'eigh', not {method!r}")
    diff = a.mu - b.mu
    fd = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * tr)
    # Round-off can push FD(a, a) a hair below zero.
    return max(fd, 0.0)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, method: str = "auto") -> float:
    """FD between two feature sets [N, D] and [M, D]."""
    return frechet_distance_from_stats(
        FeatureStats.from_features(features_a), FeatureStats.from_features(features_b), method
    )


def model_input(images, device: torch.device) -> torch.Tensor:
    """uint8 in [0, 255] (NHWC or NCHW) or float in [-1, 1] (NCHW or NHWC) → normalised [N, 3, 224, 224]."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise UserError(f"expected RGB images [N, H, W, 3] or [N, 3, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        x = x.to(device=device, dtype=torch.float32) / 127.5 - 1
    elif x.is_floating_point():
        x = x.to(device=device, dtype=torch.float32).clamp(-1, 1)
    else:
        raise UserError(f"images must be uint8 in [0, 255] or float in [-1, 1], not {x.dtype}")
    h, w = x.shape[2:]
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        # Whole image squashed to 224 (no crop): aligned faces are square anyway, and a crop would drop content
        # the metric should see.
        x = F.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=min(h, w) > INPUT_SIZE
        )
    return _mobilenet.normalize_imagenet(x)


_cached_model: dict[str, _mobilenet.MobileNetV2] = {}


def _model(device: torch.device) -> _mobilenet.MobileNetV2:
    key = str(device)
    if key not in _cached_model:
        _cached_model[key] = _mobilenet.mobilenet_v2(pretrained=True).to(device)
    return _cached_model[key]


@torch.no_grad()
def mobilenet_features(
    images,  # array/tensor of images, or an iterable of batches or single images (e.g. a generator's renders)
    batch: int = 32,  # images per forward pass
    device: str | torch.device | None = None,  # default: CPU
    progress: bool = True,  # show a tqdm bar
) -> np.ndarray:
    """Pooled 1280-d MobileNetV2 features [N, 1280] (float32) of RGB images resized to 224.

    uint8 inputs are read as [0, 255], float inputs as [-1, 1]; layouts NHWC and NCHW are both accepted.
    """
    device = torch.device(device or "cpu")
    model = _model(device)
    chunks = [images] if isinstance(images, (np.ndarray, torch.Tensor)) else images
    if isinstance(chunks, (list, tuple)) and chunks and all(c.ndim == 3 for c in chunks):
        # A list of same-sized single images: batch them rather than run one at a time.
        if len({tuple(c.shape) for c in chunks}) == 1:
            chunks = [torch.stack([torch.from_numpy(np.array(c)) if isinstance(c, np.ndarray) else c for c in chunks])]
    total = sum(1 if c.ndim == 3 else len(c) for c in chunks) if isinstance(chunks, (list, tuple)) else None
    out: list[np.ndarray] = []
    with tqdm(total=total, desc=f"{METRIC_SHORT} features", unit="img", disable=not progress) as bar:
        for chunk in chunks:
            if chunk.ndim == 3:  # a single image
                chunk = chunk[None]
            for i in range(0, len(chunk), batch):
                x = model_input(chunk[i : i + batch], device)
                out.append(model.pooled(x).float().cpu().numpy())
                bar.update(x.shape[0])
    if not out:
        raise UserError("no images were given for FD-MobileNetV2 features")
    return np.concatenate(out, axis=0)
