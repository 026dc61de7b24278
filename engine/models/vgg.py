"""VGG16 feature extractor (Simonyan & Zisserman 2015) with torchvision's `features.N.weight` layout.

Two sources of weights, one network:
- `vgg16(path)` loads a file the user supplies: torchvision's `vgg16-397923af.pth` (or any state dict with the same
  `features.*` keys, optionally inside a `state_dict` entry), as a pickle-free `torch.load(weights_only=True)` or a
  `.safetensors` file. Inputs are then ImageNet-normalised RGB batches, like `engine.models.mobilenet`.
- `engine.metrics.lpips` builds it from the LPIPS package's copy of those ImageNet weights (the `[metrics]` extra),
  through `from_state_dict`, with LPIPS' own input scaling.
Only the convolutional part is built: the classifier is never used for perceptual features, so its keys are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from engine.errors import UserError
from engine.models.mobilenet import run_stages

# Channels of each 3×3 conv, "M" for a 2×2 max pool (configuration D of the paper).
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

# `features` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the last activation before each pool,
# the layers LPIPS reads.
DEFAULT_STAGES = (3, 8, 15, 22, 29)
STAGE_CHANNELS = {3: 64, 8: 128, 15: 256, 22: 512, 29: 512}


class VGG16(nn.Module):
    """`features` only: conv3×3+ReLU blocks and max pools, indexed exactly as in torchvision."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                # inplace=False: the activations we return must not be overwritten by the next layer.
                layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU(inplace=False)]
                ch = v
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def stages(self, x: torch.Tensor, indices: Sequence[int] = DEFAULT_STAGES) -> list[torch.Tensor]:
        """Outputs of `features[i]` for each i in `indices`, running only as far as the last one."""
        return run_stages(self.features, x, indices)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file gets the same one-line advice
        raise UserError(
            f"cannot read VGG16 weights from {path} ({type(e).__name__}); "
            "give a torchvision vgg16 state dict saved with torch.save or as .safetensors"
        ) from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path} does not hold a state dict of tensors; give a torchvision vgg16 state dict")
    return sd


def from_state_dict(sd: dict[str, torch.Tensor], origin: str) -> VGG16:
    """VGG16 features in eval mode from a torchvision-layout state dict (`classifier.*` keys ignored). Raises
    UserError naming `origin` when its `features.*` keys or shapes don't match."""
    model = VGG16()
    expected = model.state_dict()
    # A full torchvision checkpoint also has classifier.*; those layers are not built here.
    given = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(
            f"{origin} is not a torchvision VGG16 state dict ({detail}"
            f"{', …' if len(missing or unexpected) > 3 else ''}); expected keys like features.0.weight"
        )
    for k, v in expected.items():
        if given[k].shape != v.shape:
            raise UserError(
                f"{origin}: {k} has shape {tuple(given[k].shape)}, VGG16 needs {tuple(v.shape)}; "
                "is this a different VGG variant?"
            )
    model.load_state_dict({k: given[k].float() for k in expected}, strict=True)
    return model.eval()


def vgg16(path: str | Path) -> VGG16:
    """VGG16 features in eval mode, with weights from `path` (torchvision layout). Raises UserError when the file
    is missing or unreadable, or when its `features.*` keys or shapes don't match."""
    if path is None or str(path) == "":
        raise UserError("VGG16 needs a weights file: pass the path of torchvision's vgg16-397923af.pth")
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"VGG16 weights file not found: {path}; pass the path of torchvision's vgg16-397923af.pth")
    return from_state_dict(_read_state_dict(path), str(path))
