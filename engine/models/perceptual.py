"""LPIPS-style perceptual distance on a frozen ImageNet backbone, for distillation losses and inversion.

d(x, y) = mean over layers l of  mean over positions (h, w) of  ‖f̂_l(x)[:, h, w] − f̂_l(y)[:, h, w]‖²,
where f̂ is the backbone feature unit-normalised along channels (Zhang et al. 2018, without learned linear weights:
LPIPS has none for MobileNetV2). Summing over channels makes each layer's term the squared chord between
two unit vectors, in [0, 4] whatever the layer's width, so a 16-channel layer and a 320-channel layer weigh the same;
averaging over channels instead would weigh layers by 1/width. The distance is therefore in [0, 4].

Small inputs are upsampled to 128 px by default (see `resize`): at 64 px MobileNetV2's stride-32 map is 2×2 and at
8 px 1×1, so the deep layers mostly see zero padding. Measured on a fixture photo, native-size distances shrink with
the image (another photo: 0.45 at 8 px, 0.74 at 16, 1.33 at 32, 1.64 at 64), so in a multi-scale loss over the
student's heads the small heads would count for little; upsampled, the same distances are 1.2–1.7 at every size.
It costs ~4× at 64 px; `resize=0` turns it off.

`backbone="lpips-vgg"` is LPIPS v0.1 itself (Zhang et al. 2018, VGG16 with its learned non-negative linear weights;
`engine.metrics.lpips`): each layer's squared difference of unit features is weighted per channel before the channel
sum, layers are summed, and inputs are scaled as LPIPS scales them. LPIPS was calibrated on 64×64 patches, where
VGG's deepest map is already 4×4, so it is upsampled only below 64 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from engine.models import mobilenet as _mobilenet
from engine.models import vgg as _vgg

BACKBONES = ("mobilenet_v2", "vgg16", "lpips-vgg")
# Below this shorter side the inputs are upsampled by default: the stride-32 map is then at least 4×4.
AUTO_MIN_SIZE = 128
# LPIPS' VGG reaches stride 16 at its last layer, and LPIPS was fitted on 64×64 patches.
LPIPS_MIN_SIZE = 64


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
        backbone: str = "mobilenet_v2",  # "mobilenet_v2" (installed ImageNet weights), "vgg16" (needs vgg_path) or
        #                                  "lpips-vgg" (LPIPS v0.1, from the [metrics] extra)
        vgg_path: str | None = None,  # torchvision vgg16 state dict, only for backbone="vgg16"
        resize: int | None = None,  # None: upsample inputs whose shorter side is < 128 (LPIPS: < 64) to that size;
        #                             an int N: resize every input so its shorter side is N; 0: never resize
        layers: Sequence[int] | None = None,  # backbone `features` indices to compare; None: one per resolution
        reduce_layers: str | None = None,  # "mean" (distance in [0, 4]) or "sum" over layers; None: "sum" for
        #                                    lpips-vgg (LPIPS' definition), else "mean"
    ):
        super().__init__()
        lin: list[torch.Tensor] | None = None
        # Input scaling x' = (x - shift) / scale from [-1, 1]: ImageNet's mean/std, or LPIPS' own constants.
        shift = tuple(2 * m - 1 for m in _mobilenet.IMAGENET_MEAN)
        scale = tuple(2 * s for s in _mobilenet.IMAGENET_STD)
        min_size = AUTO_MIN_SIZE
        if backbone != "vgg16" and vgg_path is not None:
            raise UserError("vgg_path only applies to backbone='vgg16'")
        if backbone == "mobilenet_v2":
            net: nn.Module = _mobilenet.mobilenet_v2(pretrained=True)
            default_layers = _mobilenet.DEFAULT_STAGES
        elif backbone == "vgg16":
            if vgg_path is None:
                raise UserError("the vgg16 perceptual loss needs --vgg-path (torchvision's vgg16-397923af.pth); "
                                "or use lpips-vgg, which brings its own VGG16")
            net = _vgg.vgg16(vgg_path)
            default_layers = _vgg.DEFAULT_STAGES
        elif backbone == "lpips-vgg":
            from engine.metrics import lpips as _lpips

            net, lin = _lpips.load_network()
            default_layers = _vgg.DEFAULT_STAGES
            shift, scale, min_size = _lpips.SHIFT, _lpips.SCALE, LPIPS_MIN_SIZE
        else:
            raise UserError(f"unknown perceptual backbone '{backbone}'; choose one of: {', '.join(BACKBONES)}")
        if resize is not None and resize < 0:
            raise UserError(f"resize must be None, 0 or a positive size, not {resize}")
        if reduce_layers is None:
            reduce_layers = "sum" if backbone == "lpips-vgg" else "mean"
        if reduce_layers not in ("mean", "sum"):
            raise UserError(f"reduce_layers must be 'mean' or 'sum', not '{reduce_layers}'")
        self.name = backbone
        self.resize = resize
        self.min_size = min_size
        self.layers = tuple(default_layers if layers is None else layers)
        if lin is not None and self.layers != tuple(_vgg.DEFAULT_STAGES):
            raise UserError(f"LPIPS' linear weights belong to layers {list(_vgg.DEFAULT_STAGES)}, not {list(layers)}")
        self.reduce_layers = reduce_layers
        # The classifier is never used; dropping it saves memory and keeps it out of device copies.
        if hasattr(net, "classifier"):
            del net.classifier
        # channels_last: forward measured ~1.5–2× faster on CPU at 256 px (see DEVELOPERS.md on memory formats).
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.net.requires_grad_(False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        # Per-layer channel weights [1, C, 1, 1] (LPIPS' "lin" layers); buffers so that .to(device) moves them.
        self.weighted = lin is not None
        for i, w in enumerate(lin or []):
            self.register_buffer(f"lin{i}", w.reshape(1, -1, 1, 1).float(), persistent=False)

    @property
    def config(self) -> dict:
        """What a run config should record to reproduce this loss."""
        cfg = {
            "backbone": self.name,
            "resize": self.resize,
            "layers": list(self.layers),
            "reduce_layers": self.reduce_layers,
        }
        if self.name == "lpips-vgg":
            from engine.metrics.weights import LPIPS_VGG

            cfg["weights"] = {"file": LPIPS_VGG.requirement + ":" + LPIPS_VGG.relpath, "sha256": LPIPS_VGG.sha256}
        return cfg

    def train(self, mode: bool = True) -> PerceptualLoss:
        # Batch-norm statistics must stay the ImageNet ones when a trainer calls .train() on its modules.
        super().train(mode)
        self.net.eval()
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        short = min(h, w)
        if self.resize is None:
            target = max(short, self.min_size)
        else:
            target = self.resize or short
        if target != short:
            size = (max(1, round(h * target / short)), max(1, round(w * target / short)))
            # antialias only matters when shrinking (it is a no-op for upsampling).
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=target < short)
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        return x.contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features of a [-1, 1] batch at each of `self.layers`."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {tuple(x.shape)}")
        return [_unit(f) for f in self.net.stages(self._prepare(x), self.layers)]

    def feature_distances(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """Per-sample, per-layer distances [N, L] between two lists of `features` outputs: the squared difference of
        unit features summed over channels (LPIPS: weighted per channel), averaged over positions."""
        out = []
        for i, (a, b) in enumerate(zip(fx, fy)):
            d = (a - b).float().square()
            if self.weighted:
                d = d * getattr(self, f"lin{i}")
            out.append(d.sum(dim=1).mean(dim=(1, 2)))
        return torch.stack(out, dim=1)

    def reduce(self, d: torch.Tensor) -> torch.Tensor:
        """[N, L] layer distances → [N]."""
        return d.mean(dim=1) if self.reduce_layers == "mean" else d.sum(dim=1)

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-layer distances [N, L]; each in [0, 4] for the unweighted backbones."""
        if x.shape != y.shape:
            raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        n = x.shape[0]
        # One pass over both batches: half the Python/dispatch overhead of two, same numbers (eval-mode BN).
        feats = self.features(torch.cat([x, y], dim=0))
        return self.feature_distances([f[:n] for f in feats], [f[n:] for f in feats])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.layer_distances(x, y))
