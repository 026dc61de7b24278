"""The graphs that get exported: thin wrappers around the one network definition (no copies of its layers).

Every wrapper runs the generator with the per-layer noise baked in as constants (noise_mode="const"), so the exported
graphs hold no random ops and the same W+ always gives the same image.
"""

from __future__ import annotations

import torch
from torch import nn


class SynthesisRaw(nn.Module):
    """ws [1, num_ws, w_dim] → raw image [1, 3, R, R] (about -1..1): what ONNX and TFLite ship and what verification
    compares with PyTorch."""

    def __init__(self, G):
        super().__init__()
        self.synthesis = G.synthesis

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.synthesis(ws, noise_mode="const")


class SynthesisPixels(nn.Module):
    """ws → RGB in 0..255, for a Core ML image output: the same mapping as engine.render.to_uint8 (clamp to -1..1,
    then (x + 1)·127.5) before Core ML's conversion to 8-bit pixels."""

    def __init__(self, G):
        super().__init__()
        self.synthesis = G.synthesis

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return (self.synthesis(ws, noise_mode="const").clamp(-1, 1) + 1) * 127.5


class MappingW(nn.Module):
    """z [1, z_dim] → w [1, w_dim], untruncated. The app builds W+ itself (broadcast, truncation toward w_avg, edits)
    from the arrays in manifest.json, so one small graph serves every ψ and slider setting."""

    def __init__(self, G):
        super().__init__()
        self.mapping = G.mapping

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mapping(z)[:, 0]


class NamedOutput(nn.Module):
    """Returns {name: module(**inputs)}: LiteRT takes a signature's output names from the keys of a dict output."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module = module
        self.name = name

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.name: self.module(**inputs)}
