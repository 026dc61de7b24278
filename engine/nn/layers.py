"""Building blocks shared by the StyleGAN2 teacher and the BlazeStyleGAN student.

Weights are stored unscaled and multiplied by a constant gain at run time ("equalized learning rate", StyleGAN2), so
imported NVIDIA and rosinality weights copy over without rescaling. Every op here is one that Core ML, TFLite and ONNX
convert well: plain and depthwise conv2d, matmul, elementwise math and `F.interpolate` (see DEVELOPERS.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


def lrelu(x: torch.Tensor, gain: float = SQRT2, clamp: float | None = None) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) scaled to keep unit variance, optionally clamped as StyleGAN2's `conv_clamp` does."""
    x = F.leaky_relu(x, 0.2) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x * x).mean(dim=1, keepdim=True).add(eps).rsqrt()


def unit_max(x: torch.Tensor, dim=None, floor: float = 1e-4) -> torch.Tensor:
    """x divided by its largest |value| (over `dim`, or the whole tensor), so that the result lies in [-1, 1].

    Demodulation cancels any positive factor on one sample's styles or on one output channel's weights, so modulated
    layers may rescale them freely. They do, because half precision (what phones' GPUs and neural engines compute in)
    tops out at 65504: a trained layer's raw demodulation sum Σ s²·w² reaches 1e5–4e5 and its pre-demodulation
    activations thousands, which overflow to inf and zero whole channels. With styles and weights at most 1 in
    magnitude, the sum is bounded by the fan-in (≤ 9·in). NVIDIA's reference normalises the same way for its fp16
    layers. `floor` keeps an all-zero tensor finite."""
    dims = tuple(range(x.ndim)) if dim is None else dim  # explicit dims: ONNX's exporter has no dim-less amax
    return x * x.abs().amax(dim=dims, keepdim=True).clamp_min(floor).reciprocal()


class FullyConnected(nn.Module):
    """Linear layer with equalized learning rate: the stored weight is scaled by lr_multiplier / sqrt(in)."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        activation: str = "linear",  # "linear" or "lrelu"
        bias_init: float = 0.0,  # initial bias (1 for style affines, so styles start around 1)
        lr_multiplier: float = 1.0,  # 0.01 in the mapping network
    ):
        super().__init__()
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)
        return lrelu(x) if self.activation == "lrelu" else x


# ---------------------------------------------------------------------------------------------------------------------
# FIR resampling (teacher only). The student upsamples with F.interpolate, which every mobile runtime has.


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad=(0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Zero-insertion upsampling, padding (x0, x1, y0, y1) and a 2-D FIR filter, as in StyleGAN2's reference op."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[2], pad[3]])
    # conv2d correlates; flipping makes it a true convolution (a no-op for the symmetric default filter).
    k = (f * gain).flip([0, 1]).to(x.dtype)
    k = k[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


# ---------------------------------------------------------------------------------------------------------------------
# Teacher layers (StyleGAN2). Parameter names follow NVIDIA's so their snapshots copy over key for key.


class NoiseMixin:
    """Per-pixel noise: a stored buffer ("const"), fresh Gaussian noise ("random") or none, times a learned strength."""

    def _init_noise(self, resolution: int) -> None:
        self.resolution = resolution
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))

    def _noise(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
        if noise_mode == "const":
            return self.noise_const * self.noise_strength
        if noise_mode == "random":
            n = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            return n * self.noise_strength
        if noise_mode == "none":
            return None
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, not {noise_mode!r}")


class SynthesisLayer(NoiseMixin, nn.Module):
    """StyleGAN2 modulated 3×3 convolution with demodulation, optional 2× upsampling, noise, bias and lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,  # output resolution (the noise map's size)
        up: int = 1,  # 2 for the first conv of a block
        conv_clamp: float | None = None,  # clamp activations to ±conv_clamp (NVIDIA: 256; rosinality: none)
        kernel_size: int = 3,
    ):
        super().__init__()
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self._init_noise(resolution)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = unit_max(self.affine(w), dim=1)  # [N, in]; scale-free under demodulation (see unit_max)
        weight = unit_max(self.weight, dim=(1, 2, 3))
        wsq = (weight * weight).sum(dim=[2, 3])  # [out, in]
        dcoefs = ((styles * styles) @ wsq.t() + 1e-8).rsqrt()  # [N, out]
        x = x * styles[:, :, None, None]
        if self.up == 1:
            x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        else:
            # Transposed conv (stride 2, no padding) then the [1,3,3,1] blur: what StyleGAN2's reference does.
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = upfirdn2d(x, self.resample_filter, pad=(1, 1, 1, 1), gain=4)
        x = x * dcoefs[:, :, None, None]
        noise = self._noise(x, noise_mode)
        if noise is not None:
            x = x + noise
        return lrelu(x + self.bias[None, :, None, None], clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1×1 convolution to RGB without demodulation (StyleGAN2's ToRGBLayer)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = F.conv2d(x * styles[:, :, None, None], self.weight) + self.bias[None, :, None, None]
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


# ---------------------------------------------------------------------------------------------------------------------
# Student layers (BlazeStyleGAN).


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    # Bilinear upsampling converts to a single resize op in Core ML, TFLite and ONNX (conv_transpose does not in iOS16).
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class DepthwiseModulatedConv(NoiseMixin, nn.Module):
    """Depthwise-separable modulated conv: modulate → depthwise 3×3 → pointwise 1×1 → demodulate (+ noise, bias, lrelu).

    The effective dense kernel is pw[o,i]·dw[i]·s[i], so the demodulation factor is
    rsqrt(Σ_i pw[o,i]²·Σdw[i]²·s[i]²): one small matmul against a [out, in] table of squared weights. No per-sample
    (grouped) convolution is needed, which is what keeps the layer fast in TFLite and Core ML. Styles (per sample),
    pw (per output channel) and dw (as a whole) are first scaled to a largest magnitude of 1, which demodulation
    cancels exactly and which keeps every intermediate inside half precision's range (see `unit_max`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,  # output resolution (the noise map's size)
        use_noise: bool = True,
        activation: bool = True,
    ):
        super().__init__()
        self.use_noise = use_noise
        self.activation = activation
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.dw_weight = nn.Parameter(torch.randn(in_channels, 1, 3, 3))
        self.pw_weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self._init_noise(resolution)

    def scaled_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dw, pw) with magnitudes ≤ 1: dw by one factor for all channels (a per-channel factor would change the
        kernel's shape), pw by one factor per output channel."""
        return unit_max(self.dw_weight), unit_max(self.pw_weight, dim=1)

    @staticmethod
    def squared_weights(dw: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        dw, pw = dw.flatten(1), pw.flatten(1)
        return (pw * pw) * (dw * dw).sum(dim=1)[None, :]  # [out, in]

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = unit_max(self.affine(w), dim=1)  # [N, in]
        dw, pw = self.scaled_weights()
        dcoefs = ((styles * styles) @ self.squared_weights(dw, pw).t() + 1e-8).rsqrt()  # [N, out]
        x = x * styles[:, :, None, None]
        x = F.conv2d(x, dw, padding=1, groups=dw.shape[0])
        x = F.conv2d(x, pw)
        # Demodulation, noise, bias and the activation gain in two passes over the tensor instead of six: on CPU
        # these elementwise passes cost as much as the convolutions. lrelu(v)·g = lrelu(v·g) for g > 0.
        gain = SQRT2 if self.activation else 1.0
        scale = (dcoefs * gain)[:, :, None, None]
        noise = self._noise(x, noise_mode) if self.use_noise else None
        x = x * scale if noise is None else torch.addcmul(noise * gain, x, scale)
        x = x.add_((self.bias * gain)[None, :, None, None])
        return F.leaky_relu(x, 0.2, inplace=True) if self.activation else x


class UpsampleHead(nn.Module):
    """A block's entry: 2× upsample → depthwise 3×3 → pointwise 1×1 (+ bias, lrelu). Unmodulated, so gains keep
    activations at unit scale."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.dw_weight = nn.Parameter(torch.randn(in_channels, 1, 3, 3))
        self.pw_weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.dw_gain = 1.0 / 3.0
        self.pw_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample2x(x)
        x = F.conv2d(x, self.dw_weight * self.dw_gain, padding=1, groups=self.dw_weight.shape[0])
        x = F.conv2d(x, self.pw_weight * (self.pw_gain * SQRT2), self.bias * SQRT2)
        return F.leaky_relu(x, 0.2, inplace=True)


class UpToRGB(NoiseMixin, nn.Module):
    """BlazeStyleGAN's auxiliary head: from features at resolution r to an RGB image at 2r.

    modulate → 1×1 (narrow) → 2× upsample → depthwise 3×3 → demodulate (+ noise, bias, lrelu) → modulated 1×1 to RGB.
    Narrowing before upsampling keeps the only full-resolution work to a depthwise conv and the RGB projection, which
    is what lets block features stay at half the output resolution. Every level has one for the multi-scale
    distillation loss; inference runs only the last.
    """

    def __init__(self, in_channels: int, mid_channels: int, w_dim: int, out_resolution: int, img_channels: int = 3):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.pw_weight = nn.Parameter(torch.randn(mid_channels, in_channels, 1, 1))
        self.dw_weight = nn.Parameter(torch.randn(mid_channels, 1, 3, 3))
        self.bias = nn.Parameter(torch.zeros(mid_channels))
        self._init_noise(out_resolution)
        self.torgb = ToRGB(mid_channels, img_channels, w_dim)

    def scaled_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pw, dw) with magnitudes ≤ 1, each by one factor per output channel (demodulation cancels both)."""
        return unit_max(self.pw_weight, dim=1), unit_max(self.dw_weight, dim=(1, 2, 3))

    @staticmethod
    def squared_weights(pw: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        # Effective kernel of output o: dw[o]·pw[o,i]·s[i] (the bilinear upsample between them is ignored).
        pw, dw = pw.flatten(1), dw.flatten(1)
        return (pw * pw) * (dw * dw).sum(dim=1)[:, None]  # [out, in]

    def forward(self, x: torch.Tensor, w_conv: torch.Tensor, w_rgb: torch.Tensor, noise_mode: str = "const"):
        styles = unit_max(self.affine(w_conv), dim=1)
        pw, dw = self.scaled_weights()
        dcoefs = ((styles * styles) @ self.squared_weights(pw, dw).t() + 1e-8).rsqrt()
        x = F.conv2d(x * styles[:, :, None, None], pw)
        x = upsample2x(x)
        x = F.conv2d(x, dw, padding=1, groups=dw.shape[0])
        scale = (dcoefs * SQRT2)[:, :, None, None]
        noise = self._noise(x, noise_mode)
        x = x * scale if noise is None else torch.addcmul(noise * SQRT2, x, scale)
        x = F.leaky_relu(x.add_((self.bias * SQRT2)[None, :, None, None]), 0.2, inplace=True)
        return self.torgb(x, w_rgb)
