"""StyleGAN2's residual discriminator (config F "resnet"), for the adversarial term of distillation.

Parameter names follow NVIDIA's `training/networks.py` (`b64.fromrgb.weight`, `b64.conv0.weight`, `b64.conv1.weight`,
`b64.skip.weight`, …, `b4.conv.weight`, `b4.fc.weight`, `b4.out.weight`), and the arithmetic is theirs (equalized
learning rate, [1,3,3,1] blur before every stride-2 conv, √½ on both residual branches, clamped activations, minibatch
standard deviation), so the discriminator of an NVIDIA snapshot loads key for key and starts from what it learned.
rosinality's discriminator computes the same function under other names; `from_rosinality` renames it.

`ProjectedDiscriminator` is the other kind (`d_kind="projected"`): small heads on a frozen ImageNet MobileNetV2, for
when no trained D exists and there is no budget to grow one from scratch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.nn.layers import SQRT2, FullyConnected, lrelu, setup_filter, upfirdn2d

SQRT_HALF = math.sqrt(0.5)


def default_channels(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> dict[int, int]:
    """NVIDIA's plan, min(channel_base / res, channel_max) for every resolution 4 … resolution."""
    return {2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


@dataclass
class DiscriminatorConfig:
    resolution: int = 256  # input image size
    channels: dict[int, int] = field(default_factory=dict)  # width at every resolution 4 … resolution
    img_channels: int = 3
    mbstd_group_size: int = 4  # samples per minibatch-stddev group (the largest divisor of N up to this is used)
    mbstd_num_channels: int = 1  # stddev features appended before the 4×4 conv
    conv_clamp: float | None = None  # clamp conv activations to ±conv_clamp (NVIDIA trains with 256)
    source: str = "new"  # where the weights came from: "new", "nvidia", "rosinality"

    def __post_init__(self):
        self.channels = {int(k): int(v) for k, v in self.channels.items()} or default_channels(self.resolution)
        want = sorted(default_channels(self.resolution))
        if sorted(self.channels) != want:
            raise ValueError(f"discriminator channels must cover {want}, got {sorted(self.channels)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        return d


class DConv(nn.Module):
    """NVIDIA's Conv2dLayer: equalized-lr conv, optional blurred 2× downsampling, bias, scaled lrelu, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "lrelu",  # "lrelu" (gain √2) or "linear"
        down: int = 1,  # 1 or 2
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        else:
            # Blur with the padding NVIDIA's conv2d_resample uses, then a stride-2 conv: H → H/2 for 1×1 and 3×3.
            p = self.padding + 1
            x = upfirdn2d(x, self.resample_filter, pad=(p, p, p, p))
            x = F.conv2d(x, w, stride=2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        if self.activation == "lrelu":
            return lrelu(x, SQRT2 * gain, clamp)
        x = x * gain if gain != 1 else x
        return x.clamp(-clamp, clamp) if clamp is not None else x


class DiscriminatorBlock(nn.Module):
    """One resolution: (FromRGB at the top) → 3×3 conv → 3×3 stride-2 conv, plus a 1×1 stride-2 skip, each × √½."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int, conv_clamp):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = DConv(img_channels, tmp_channels, 1, conv_clamp=conv_clamp)
        self.conv0 = DConv(tmp_channels, tmp_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = DConv(tmp_channels, out_channels, 3, down=2, conv_clamp=conv_clamp)
        self.skip = DConv(tmp_channels, out_channels, 1, bias=False, activation="linear", down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=SQRT_HALF)
        x = self.conv1(self.conv0(x), gain=SQRT_HALF)
        return y + x


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the standard deviation across groups of samples (averaged over channels and pixels) as feature maps.

    Sample i belongs to group i mod (N / G), as in NVIDIA's and rosinality's layer. G is the largest divisor of N not
    above `group_size`, so odd batch sizes work too.
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    f = num_channels
    y = x.float().reshape(g, -1, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n/G, F, c, H, W]
    y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4×4: minibatch stddev → 3×3 conv → fully connected → one logit."""

    def __init__(self, in_channels: int, mbstd_group_size: int, mbstd_num_channels: int, conv_clamp):
        super().__init__()
        self.mbstd_group_size, self.mbstd_num_channels = mbstd_group_size, mbstd_num_channels
        self.conv = DConv(in_channels + mbstd_num_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * 16, in_channels, "lrelu")
        self.out = FullyConnected(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd_num_channels > 0:
            x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.conv(x)
        # The fully connected layers run in float32, as NVIDIA's epilogue does.
        return self.out(self.fc(x.float().flatten(1)))


class Discriminator(nn.Module):
    """Image [N, C, R, R] in [-1, 1] → realness logit [N, 1]."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.block_resolutions = [r for r in sorted(ch, reverse=True) if r > 4]
        for r in self.block_resolutions:
            in_ch = 0 if r == cfg.resolution else ch[r]
            setattr(self, f"b{r}", DiscriminatorBlock(in_ch, ch[r], ch[r // 2], cfg.img_channels, cfg.conv_clamp))
        self.b4 = DiscriminatorEpilogue(ch[4], cfg.mbstd_group_size, cfg.mbstd_num_channels, cfg.conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if img.ndim != 4 or img.shape[1:] != (self.cfg.img_channels, r, r):
            raise ValueError(f"discriminator input must be [N, {self.cfg.img_channels}, {r}, {r}], "
                             f"got {list(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)

    # -----------------------------------------------------------------------------------------------------------------
    # Starting from a teacher's discriminator

    @classmethod
    def from_nvidia(cls, record: dict) -> Discriminator:
        """Build from `read_checkpoint(path)[2]["D"]` (`{"state": tensors, "init_kwargs": ...}`) of a StyleGAN2 NVIDIA
        snapshot. Raises ValueError for discriminators this class does not reproduce (conditional, 'orig'/'skip')."""
        state = {k: v for k, v in record["state"].items() if not k.endswith("resample_filter")}
        kw = record.get("init_kwargs") or {}
        if int(kw.get("c_dim", 0) or 0) > 0 or any(k.startswith("mapping.") for k in state):
            raise ValueError("a conditional (class-label) discriminator")
        arch = kw.get("architecture", "resnet")
        blocks = sorted(int(k.split(".")[0][1:]) for k in state if k.endswith(".conv0.weight"))
        if arch != "resnet" or not blocks or any(f"b{r}.skip.weight" not in state for r in blocks):
            raise ValueError(f"a '{arch}' discriminator (only 'resnet' is supported)")
        res = blocks[-1]
        channels = {r: int(state[f"b{r}.conv0.weight"].shape[0]) for r in blocks}
        channels[4] = int(state["b4.conv.weight"].shape[0])
        epi = kw.get("epilogue_kwargs") or {}
        mbstd_ch = int(state["b4.conv.weight"].shape[1]) - channels[4]
        clamp = kw.get("conv_clamp")
        cfg = DiscriminatorConfig(
            resolution=res,
            channels=channels,
            img_channels=int(state[f"b{res}.fromrgb.weight"].shape[1]),
            mbstd_group_size=int(epi.get("mbstd_group_size", 4) or 4),
            mbstd_num_channels=mbstd_ch,
            conv_clamp=None if clamp is None else float(clamp),
            source="nvidia",
        )
        D = cls(cfg)
        D.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return D

    @classmethod
    def from_rosinality(cls, sd: dict) -> Discriminator:
        """Build from a rosinality training checkpoint's `d` state dict (same function, other names)."""
        n_res = sum(1 for k in sd if k.startswith("convs.") and k.endswith(".conv1.0.weight"))
        if n_res == 0 or "final_linear.1.weight" not in sd:
            raise ValueError("not a rosinality StyleGAN2 discriminator")
        res = 4 * 2**n_res
        state: dict[str, torch.Tensor] = {
            f"b{res}.fromrgb.weight": sd["convs.0.0.weight"],
            f"b{res}.fromrgb.bias": sd["convs.0.1.bias"],
            "b4.conv.weight": sd["final_conv.0.weight"],
            "b4.conv.bias": sd["final_conv.1.bias"],
            "b4.fc.weight": sd["final_linear.0.weight"],
            "b4.fc.bias": sd["final_linear.0.bias"],
            "b4.out.weight": sd["final_linear.1.weight"],
            "b4.out.bias": sd["final_linear.1.bias"],
        }
        channels = {4: int(sd["final_conv.0.weight"].shape[0])}
        for i in range(n_res):
            r, src = res // 2**i, f"convs.{i + 1}"
            state[f"b{r}.conv0.weight"] = sd[f"{src}.conv1.0.weight"]
            state[f"b{r}.conv0.bias"] = sd[f"{src}.conv1.1.bias"]
            state[f"b{r}.conv1.weight"] = sd[f"{src}.conv2.1.weight"]
            state[f"b{r}.conv1.bias"] = sd[f"{src}.conv2.2.bias"]
            state[f"b{r}.skip.weight"] = sd[f"{src}.skip.1.weight"]
            channels[r] = int(sd[f"{src}.conv1.0.weight"].shape[0])
        cfg = DiscriminatorConfig(
            resolution=res,
            channels=channels,
            img_channels=int(sd["convs.0.0.weight"].shape[1]),
            mbstd_num_channels=int(sd["final_conv.0.weight"].shape[1]) - channels[4],
            source="rosinality",
        )
        D = cls(cfg)
        D.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return D


def discriminator_for_teacher(
    extras: dict,  # read_checkpoint(teacher)[2]
    resolution: int,
    channels: dict[int, int] | None = None,  # widths of a fresh D (default: NVIDIA's plan)
    img_channels: int = 3,
) -> tuple[Discriminator, str]:
    """The teacher checkpoint's discriminator when it has a usable one, else a fresh one; and a line saying which."""
    reasons = []
    for key, build in (("D", Discriminator.from_nvidia), ("D_rosinality", Discriminator.from_rosinality)):
        if key not in extras:
            continue
        try:
            D = build(extras[key])
        except (ValueError, KeyError, RuntimeError) as e:
            reasons.append(f"the checkpoint's discriminator is {e}" if isinstance(e, ValueError) else
                           f"the checkpoint's discriminator does not fit ({type(e).__name__})")
            continue
        if D.cfg.resolution == resolution and D.cfg.img_channels == img_channels:
            return D, f"discriminator: the teacher checkpoint's ({D.cfg.source})"
        reasons.append(f"the checkpoint's discriminator is for {D.cfg.resolution}px")
    why = "; ".join(reasons) or "the teacher checkpoint has none"
    cfg = DiscriminatorConfig(resolution=resolution, channels=channels or {}, img_channels=img_channels)
    return Discriminator(cfg), f"discriminator: new, randomly initialised ({why})"


@dataclass
class ProjectedConfig:
    """A discriminator on a frozen ImageNet MobileNetV2 (Sauer et al. 2021, "Projected GANs converge faster")."""

    resolution: int = 256  # the images it judges; resized to input_size for the backbone
    input_size: int = 128  # at 64 px MobileNetV2's stride-32 map would be 2×2
    stages: tuple[int, ...] = (3, 6, 13, 17)  # MobileNetV2 `features` indices: strides 4, 8, 16, 32
    width: int = 64  # channels of each stage's head
    kind: str = "projected"
    source: str = "new"

    def __post_init__(self):
        self.stages = tuple(int(s) for s in self.stages)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d


class ProjectedDiscriminator(nn.Module):
    """Small trainable heads, one per backbone stage, on a frozen ImageNet MobileNetV2; the logit is the sum of the
    heads' mean logits. The frozen features tell images apart from the first step, where a discriminator learnt
    from scratch needs thousands of steps on a CPU (assets/MODEL_CARD.md); only the heads train."""

    def __init__(self, cfg: ProjectedConfig):
        super().__init__()
        from engine.models.mobilenet import STAGE_CHANNELS, mobilenet_v2

        self.cfg = cfg
        self.backbone = mobilenet_v2(pretrained=True).features[: max(cfg.stages) + 1]
        self.backbone.eval().requires_grad_(False)
        sn = nn.utils.parametrizations.spectral_norm
        self.heads = nn.ModuleList(
            nn.Sequential(sn(nn.Conv2d(STAGE_CHANNELS[s], cfg.width, 3, padding=1)), nn.LeakyReLU(0.2),
                          sn(nn.Conv2d(cfg.width, cfg.width, 3, padding=1)), nn.LeakyReLU(0.2),
                          sn(nn.Conv2d(cfg.width, 1, 1)))
            for s in cfg.stages
        )

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.backbone.eval()  # BatchNorm keeps its ImageNet statistics
        return self

    def requires_grad_(self, requires_grad: bool = True) -> ProjectedDiscriminator:
        self.heads.requires_grad_(requires_grad)  # the backbone stays frozen; gradients still reach the image
        return self

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        from engine.models.mobilenet import normalize_imagenet, run_stages

        s = self.cfg.input_size
        x = F.interpolate(img, size=(s, s), mode="bilinear", align_corners=False, antialias=img.shape[-1] > s)
        feats = run_stages(self.backbone, normalize_imagenet(x), self.cfg.stages)
        return sum(head(f).mean(dim=(1, 2, 3)) for head, f in zip(self.heads, feats))[:, None]


DISCRIMINATOR_KINDS = ("stylegan2", "projected")


def discriminator_from_config(d: dict) -> nn.Module:
    """A discriminator rebuilt from its `cfg.to_dict()` (a checkpoint's "D_config"), weights not loaded."""
    if d.get("kind") == "projected":
        return ProjectedDiscriminator(ProjectedConfig(**d))
    return Discriminator(DiscriminatorConfig(**d))

