"""LPIPS-style perceptual distance on a frozen ImageNet backbone, for distillation losses and inversion.

d(x, y) = mean over layers l of  mean over positions (h, w) of  ‖f̂_l(x)[:, h, w] − f̂_l(y)[:, h, w]‖²,
where f̂ is the backbone feature unit-normalised along channels (Zhang et al. 2018, without the learned linear
weights, which are not available offline). Summing over channels makes each layer's term the squared chord between
two unit vectors, in [0, 4] whatever the layer's width, so a 16-channel layer and a 320-channel layer weigh the same;
averaging over channels instead would weigh layers by 1/width. The distance is therefore in [0, 4].

Small inputs are upsampled to 128 px by default (see `resize`): at 64 px MobileNetV2's stride-32 map is 2×2 and at
8 px 1×1, so the deep layers mostly see zero padding. Measured on a fixture photo, native-size distances shrink with
the image (another photo: 0.45 at 8 px, 0.74 at 16, 1.33 at 32, 1.64 at 64), so in a multi-scale loss over the
student's heads the small heads would count for little; upsampled, the same distances are 1.2–1.7 at every size.
It costs ~4× at 64 px; `resize=0` turns it off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from engine.models import mobilenet as _mobilenet
from engine.models import vgg as _vgg

BACKBONES = ("mobilenet_v2", "vgg16")
# Below this shorter side the inputs are upsampled by default: the stride-32 map is then at least 4×4.
AUTO_MIN_SIZE = 128


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # rsqrt(Σf² + eps) rather than f / (‖f‖ + eps): the latter's gradient is NaN where a feature vector is all zero
    # (common after VGG's ReLUs).
    return f * torch.rsqrt((f * f).sum(dim=1, keepdim=True) + eps)


class PerceptualLoss(nn.Module):
    """Per-sample perceptual distance [N] between two image batches [N, 3, H, W] in [-1, 1].

    The backbone is frozen (no parameter requires grad, always in eval mode, even inside a module put in train
    mode), but the distance is differentiable with respect to both inputs.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",  # "mobilenet_v2" (installed ImageNet weights) or "vgg16" (needs vgg_path)
        vgg_path: str | None = None,  # torchvision vgg16 state dict, only for backbone="vgg16"
        resize: int | None = None,  # None: upsample inputs whose shorter side is < 128 to 128; an int N: resize
        #                             every input so its shorter side is N; 0: never resize
        layers: Sequence[int] | None = None,  # backbone `features` indices to compare; None: one per resolution
        reduce_layers: str = "mean",  # "mean" (distance in [0, 4]) or "sum" (as LPIPS does) over layers
    ):
        super().__init__()
        if backbone == "mobilenet_v2":
            if vgg_path is not None:
                raise UserError("vgg_path only applies to backbone='vgg16'")
            net: nn.Module = _mobilenet.mobilenet_v2(pretrained=True)
            default_layers = _mobilenet.DEFAULT_STAGES
        elif backbone == "vgg16":
            if vgg_path is None:
                raise UserError("the vgg16 perceptual loss needs --vgg-path (torchvision's vgg16-397923af.pth)")
            net = _vgg.vgg16(vgg_path)
            default_layers = _vgg.DEFAULT_STAGES
        else:
            raise UserError(f"unknown perceptual backbone '{backbone}'; choose one of: {', '.join(BACKBONES)}")
        if resize is not None and resize < 0:
            raise UserError(f"resize must be None, 0 or a positive size, not {resize}")
        if reduce_layers not in ("mean", "sum"):
            raise UserError(f"reduce_layers must be 'mean' or 'sum', not '{reduce_layers}'")
        self.name = backbone
        self.resize = resize
        self.layers = tuple(default_layers if layers is None else layers)
        self.reduce_layers = reduce_layers
        # The classifier is never used; dropping it saves memory and keeps it out of device copies.
        if hasattr(net, "classifier"):
            del net.classifier
        # channels_last: forward measured ~1.5–2× faster on CPU at 256 px (see DEVELOPERS.md on memory formats).
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.net.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_mobilenet.IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_mobilenet.IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def config(self) -> dict:
        """What a run config should record to reproduce this loss."""
        return {
            "backbone": self.name,
            "resize": self.resize,
            "layers": list(self.layers),
            "reduce_layers": self.reduce_layers,
        }

    def train(self, mode: bool = True) -> PerceptualLoss:
        # Batch-norm statistics must stay the ImageNet ones when a trainer calls .train() on its modules.
        super().train(mode)
        self.net.eval()
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        short = min(h, w)
        if self.resize is None:
            target = AUTO_MIN_SIZE if short < AUTO_MIN_SIZE else short
        else:
            target = self.resize or short
        if target != short:
            size = (max(1, round(h * target / short)), max(1, round(w * target / short)))
            # antialias only matters when shrinking (it is a no-op for upsampling).
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=target < short)
        x = ((x + 1) * 0.5 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x.contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features of a [-1, 1] batch at each of `self.layers`."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {tuple(x.shape)}")
        return [_unit(f) for f in self.net.stages(self._prepare(x), self.layers)]

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-layer distances [N, L], each in [0, 4]."""
        if x.shape != y.shape:
            raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        n = x.shape[0]
        # One pass over both batches: half the Python/dispatch overhead of two, same numbers (eval-mode BN).
        feats = self.features(torch.cat([x, y], dim=0))
        return torch.stack([(f[:n] - f[n:]).square().sum(dim=1).mean(dim=(1, 2)) for f in feats], dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = self.layer_distances(x, y)
        return d.mean(dim=1) if self.reduce_layers == "mean" else d.sum(dim=1)
