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


class EncoderW(nn.Module):
    """Aligned face crop [1, 3, S, S] in -1..1 (S = the generator's resolution, the size the app aligns to) → W+
    [1, num_ws, w_dim]: the encoder with its resize to its own input size and ImageNet normalisation inside."""

    def __init__(self, E):
        super().__init__()
        self.encoder = E

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        return self.encoder(face)


class Stylizer(nn.Module):
    """What MediaPipe's Face Stylizer does, in one graph: aligned crop [1, 3, S, S] in -1..1 and slider values
    `alphas` [1, K] → encoder → W+ + Σ αₖ·dₖ → synthesis → raw image [1, 3, R, R].

    `directions` [K, num_ws, w_dim]: each slider's edit on every W+ layer (zero outside its layer range), so the
    edit is one matrix product and the app only passes numbers."""

    def __init__(self, E, G, directions: torch.Tensor, pixels: bool = False):
        super().__init__()
        self.encoder, self.synthesis, self.pixels = E, G.synthesis, pixels
        self.register_buffer("directions", directions.reshape(directions.shape[0], -1).float().clone())
        self.num_ws, self.w_dim = G.num_ws, G.w_dim

    def forward(self, face: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        ws = self.encoder(face) + (alphas @ self.directions).reshape(-1, self.num_ws, self.w_dim)
        img = self.synthesis(ws, noise_mode="const")
        # Core ML's image output wants 0..255, as SynthesisPixels.
        return (img.clamp(-1, 1) + 1) * 127.5 if self.pixels else img


def direction_matrix(dir_doc: dict, num_ws: int, w_dim: int) -> torch.Tensor:
    """[K, num_ws, w_dim] from the manifest's direction items: vector (or per-layer vectors) on layers [a, b]."""
    items = dir_doc["items"]
    out = torch.zeros(len(items), num_ws, w_dim)
    for k, d in enumerate(items):
        a, b = d["layers"]
        v = torch.tensor(d["vector"], dtype=torch.float32)
        out[k, a : b + 1] = v[a : b + 1] if d["per_layer"] else v
    return out


class NamedOutput(nn.Module):
    """Returns {name: module(*inputs)}: LiteRT takes a signature's input names from the keyword inputs and its output
    names from the keys of a dict output. Inputs go on positionally, in the example's order (a frozen graph's own
    argument names are torch.export's)."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module = module
        self.name = name

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.name: self.module(*inputs.values())}
