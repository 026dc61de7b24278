"""The generator: a StyleGAN2 mapping network followed by either the StyleGAN2 teacher synthesis network or the
BlazeStyleGAN student synthesis network. Both consume the same W+ layout, so truncation, edits and latents carry over.

Public API (stable): G.mapping(z, psi=1.0, cutoff=None) -> ws [N, num_ws, w_dim];
G.synthesis(ws, noise_mode="const") -> image [N, 3, H, W] (about -1..1); G.num_ws, G.resolution, G.w_avg.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.config import ModelConfig, block_resolutions
from engine.nn.layers import (
    DepthwiseModulatedConv,
    FullyConnected,
    SynthesisLayer,
    ToRGB,
    UpsampleHead,
    UpToRGB,
    normalize_2nd_moment,
    setup_filter,
    upsample2d,
)


class MappingNetwork(nn.Module):
    """z → w through an MLP; truncation ψ pulls w toward the tracked average `w_avg` (only the first `cutoff` ws)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        for i in range(num_layers):
            fc = FullyConnected(z_dim if i == 0 else w_dim, w_dim, "lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{i}", fc)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z.to(self.w_avg.dtype))  # float32, or float16 for the phone-numerics check
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x[:, None, :].repeat(1, self.num_ws, 1)
        return self.truncate(ws, psi, cutoff)

    def truncate(self, ws: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        if psi == 1:
            return ws
        cut = self.num_ws if cutoff is None else int(cutoff)
        head = self.w_avg.lerp(ws[:, :cut], psi)
        return torch.cat([head, ws[:, cut:]], dim=1)


class SynthesisBlock(nn.Module):
    """One StyleGAN2 resolution: (const | upsampling conv) → conv → ToRGB added to the upsampled skip image."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, conv_clamp):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x, img, ws, noise_mode):
        if self.in_channels == 0:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class TeacherSynthesis(nn.Module):
    """StyleGAN2 synthesis network (config F, skip architecture)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_dim, self.resolution, self.num_ws = cfg.w_dim, cfg.resolution, cfg.num_ws
        self.block_resolutions = block_resolutions(cfg.resolution)
        prev = 0
        for r in self.block_resolutions:
            ch = cfg.channels[r]
            setattr(self, f"b{r}", SynthesisBlock(prev, ch, cfg.w_dim, r, cfg.img_channels, cfg.conv_clamp))
            prev = ch

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", return_aux: bool = False):
        _check_ws(ws, self.num_ws, self.w_dim)
        x = img = None
        w_idx, images = 0, []
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], noise_mode)
            w_idx += block.num_conv
            images.append(img)
        # return_aux: the skip image at every resolution (4 … R), the teacher's targets for the student's heads.
        return images if return_aux else img


class StudentSynthesis(nn.Module):
    """BlazeStyleGAN synthesis network.

    Levels run at 4, 8, …, R/2. Level k (resolution r) uses the teacher's W+ entries of the teacher's block at r:
    ws[0] for the 4×4 conv, ws[2k-1] and ws[2k] for the two convs after it; its UpToRGB head produces the 2r image
    with ws[2k+2] (conv) and ws[2k+3] (RGB), which are the teacher's styles for its 2r block's second conv and ToRGB.
    The head's image is compared with the teacher's skip image at 2r during distillation; inference runs only the
    last head, whose output is the full-resolution image.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_dim, self.resolution, self.num_ws = cfg.w_dim, cfg.resolution, cfg.num_ws
        self.levels = block_resolutions(cfg.resolution // 2)
        c4 = cfg.channels[4]
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        prev = c4
        for r in self.levels:
            ch = cfg.channels[r]
            if r > 4:
                setattr(self, f"up{r}", UpsampleHead(prev, ch))
                setattr(self, f"conv{r}a", DepthwiseModulatedConv(ch, ch, cfg.w_dim, r))
            setattr(self, f"conv{r}b", DepthwiseModulatedConv(ch, ch, cfg.w_dim, r))
            setattr(self, f"head{r}", UpToRGB(ch, cfg.head_channels[r], cfg.w_dim, 2 * r, cfg.img_channels))
            prev = ch

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", return_aux: bool = False):
        _check_ws(ws, self.num_ws, self.w_dim)
        x = self.const[None].repeat(ws.shape[0], 1, 1, 1)
        images = []
        for k, r in enumerate(self.levels):
            if r > 4:
                x = getattr(self, f"up{r}")(x)
                x = getattr(self, f"conv{r}a")(x, ws[:, 2 * k - 1], noise_mode)
                x = getattr(self, f"conv{r}b")(x, ws[:, 2 * k], noise_mode)
            else:
                x = self.conv4b(x, ws[:, 0], noise_mode)
            if return_aux or r == self.levels[-1]:
                images.append(getattr(self, f"head{r}")(x, ws[:, 2 * k + 2], ws[:, 2 * k + 3], noise_mode))
        # return_aux: every head's image, 8 … R (the last is the output image).
        return images if return_aux else images[-1]


def _check_ws(ws: torch.Tensor, num_ws: int, w_dim: int) -> None:
    if ws.ndim != 3 or ws.shape[1] != num_ws or ws.shape[2] != w_dim:
        raise ValueError(f"ws must be [N, {num_ws}, {w_dim}], got {list(ws.shape)}")


class Generator(nn.Module):
    """Mapping + synthesis, for either architecture. `cfg.arch` says which synthesis network it holds."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(
            cfg.z_dim, cfg.w_dim, cfg.num_ws, cfg.mapping_layers, cfg.mapping_lr_multiplier
        )
        self.synthesis = TeacherSynthesis(cfg) if cfg.arch == "stylegan2" else StudentSynthesis(cfg)

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def w_dim(self) -> int:
        return self.cfg.w_dim

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def is_student(self) -> bool:
        return self.cfg.arch == "blazestylegan"

    def forward(self, z, psi: float = 1.0, cutoff: int | None = None, noise_mode: str = "const"):
        return self.synthesis(self.mapping(z, psi=psi, cutoff=cutoff), noise_mode=noise_mode)

    def extra_repr(self) -> str:
        return f"arch={self.cfg.arch}, resolution={self.resolution}, num_ws={self.num_ws}"


def seeds_to_z(seeds, z_dim: int = 512) -> torch.Tensor:
    """The z for each integer seed, the same on every machine (NumPy's RandomState, as NVIDIA's scripts use)."""
    import numpy as np

    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).float()
