"""The student's synthesis at batch 1 with each layer's modulation and demodulation folded into its weights.

At batch 1 a layer's styles s and demodulation factors d are one vector each, so the modulated layer
x·s → conv → ·d is one plain conv with weights w·s·d: the elementwise passes over the feature maps before and after
the conv (which on a CPU cost about as much as the convs) disappear. `fold_synthesis` derives this variant from the
network itself: a shallow copy of the synthesis module whose modulated layers are replaced by wrappers that compute the
folded weights from the layer's own parameters and helpers (`affine`, `scaled_weights`, `squared_weights`,
`_noise`) and run the same convs; the traversal (which W+ row goes where) stays StudentSynthesis.forward.

Measured on the 256 student, 1 thread, this CPU: PyTorch 19.6 ms folded + traced vs 21.1 ms traced, 24.5 ms eager
(medians, busy machine). ONNX Runtime is slower with folded weights (21.7 vs 19.6 ms: weights that depend on the input
cannot be pre-packed) and litert-torch cannot convert a depthwise conv whose weights are computed, so the exported
graphs keep the unfolded layers and only `engine.runtime.fast_synthesis` uses this one.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from engine.nn import layers as L


def _modulation(layer, w: torch.Tensor):
    """(styles [in], demodulation [out], weights a, b) of one sample, as the layer's forward computes them."""
    if w.shape[0] != 1:
        raise ValueError(f"a folded layer renders one sample at a time, got a batch of {w.shape[0]}")
    styles = L.unit_max(layer.affine(w), dim=1)
    a, b = layer.scaled_weights()
    dcoefs = ((styles * styles) @ layer.squared_weights(a, b).t() + 1e-8).rsqrt()
    return styles[0], dcoefs[0], a, b


class FoldedModulatedConv(nn.Module):
    """DepthwiseModulatedConv at batch 1: styles folded into the depthwise kernel, demodulation and the activation
    gain into the pointwise one."""

    def __init__(self, layer: L.DepthwiseModulatedConv):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        m = self.layer
        s, d, dw, pw = _modulation(m, w)
        gain = L.SQRT2 if m.activation else 1.0
        x = F.conv2d(x, dw * s[:, None, None, None], padding=1, groups=dw.shape[0])
        x = F.conv2d(x, pw * (d * gain)[:, None, None, None], m.bias * gain)
        noise = m._noise(x, noise_mode) if m.use_noise else None
        if noise is not None:
            x = x.add_(noise * gain)
        return F.leaky_relu(x, 0.2, inplace=True) if m.activation else x


class FoldedUpToRGB(nn.Module):
    """UpToRGB at batch 1: styles and demodulation in the narrowing 1×1 kernel (demodulation is per output channel,
    and the upsample and depthwise conv after it act on each channel alone), the RGB styles in the ToRGB kernel."""

    def __init__(self, layer: L.UpToRGB):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, w_conv: torch.Tensor, w_rgb: torch.Tensor, noise_mode: str = "const"):
        m = self.layer
        s, d, pw, dw = _modulation(m, w_conv)
        x = F.conv2d(x, pw * (s[None, :] * (d * L.SQRT2)[:, None])[:, :, None, None])
        x = L.upsample2x(x)
        x = F.conv2d(x, dw, m.bias * L.SQRT2, padding=1, groups=dw.shape[0])
        noise = m._noise(x, noise_mode)
        if noise is not None:
            x = x.add_(noise * L.SQRT2)
        x = F.leaky_relu(x, 0.2, inplace=True)
        t = m.torgb
        rgb = t.affine(w_rgb)[0] * t.weight_gain
        x = F.conv2d(x, t.weight * rgb[None, :, None, None], t.bias)
        return x.clamp(-t.conv_clamp, t.conv_clamp) if t.conv_clamp is not None else x


_FOLDED = {L.DepthwiseModulatedConv: FoldedModulatedConv, L.UpToRGB: FoldedUpToRGB}


def fold_synthesis(synthesis: nn.Module) -> nn.Module:
    """A batch-1 copy of a student's synthesis network sharing its parameters, with modulated layers folded. Its
    forward is the original's; it raises for other batch sizes (the folded weights are one sample's)."""
    if not any(type(m) in _FOLDED for m in synthesis.children()):
        raise ValueError("only a BlazeStyleGAN student's synthesis network can be folded")
    folded = copy.copy(synthesis)
    folded._modules = {k: _FOLDED[type(m)](m) if type(m) in _FOLDED else m for k, m in synthesis._modules.items()}
    return folded
