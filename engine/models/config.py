"""Model configuration: a dataclass that serialises to JSON inside the `.safetensors` header, so a model file always
knows how to rebuild its network."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

ARCHES = ("stylegan2", "blazestylegan")


def ffhq_teacher_channels(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> dict[int, int]:
    """NVIDIA's channel plan: min(channel_base / res, channel_max) at every block resolution."""
    return {r: min(channel_base // r, channel_max) for r in block_resolutions(resolution)}


def block_resolutions(resolution: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(resolution)) + 1)]


def default_student_channels(resolution: int) -> dict[int, int]:
    """Widths for the student's feature levels (4 … resolution/2), chosen so that the 256 model stays under the
    paper's budget (≤ 2.0 M synthesis parameters, ≤ 1.3 GFLOPs): wide and cheap at low resolution where the styles
    act, thin where pixels are many."""
    table = {4: 256, 8: 256, 16: 192, 32: 128, 64: 80, 128: 40, 256: 24, 512: 16}
    return {r: table[r] for r in block_resolutions(resolution // 2)}


def default_head_channels(channels: dict[int, int]) -> dict[int, int]:
    """Width of the modulated conv inside each level's UpToRGB head: it runs at twice the level's resolution, so it
    is kept at half the level's width (8…32)."""
    return {r: max(8, min(32, c // 2)) for r, c in channels.items()}


@dataclass
class ModelConfig:
    arch: str = "stylegan2"  # "stylegan2" (teacher) or "blazestylegan" (student)
    resolution: int = 256  # output image size (a power of two, 64–1024 for the student)
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    img_channels: int = 3
    # Feature widths per block resolution. Teacher: every block 4…resolution. Student: feature levels 4…resolution/2.
    channels: dict[int, int] = field(default_factory=dict)
    # Student only: the UpToRGB head's conv width per level.
    head_channels: dict[int, int] = field(default_factory=dict)
    conv_clamp: float | None = None  # NVIDIA snapshots use 256; rosinality none
    # Free-form provenance: where the weights came from (source file, sha256, teacher of a student, training run).
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        # JSON turns int keys into strings; accept both.
        self.channels = {int(k): int(v) for k, v in self.channels.items()}
        self.head_channels = {int(k): int(v) for k, v in self.head_channels.items()}
        if self.arch not in ARCHES:
            raise ValueError(f"unknown architecture {self.arch!r}; expected one of {ARCHES}")
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, not {self.resolution}")
        if not self.channels:
            if self.arch == "stylegan2":
                self.channels = ffhq_teacher_channels(self.resolution)
            else:
                self.channels = default_student_channels(self.resolution)
        if self.arch == "blazestylegan" and not self.head_channels:
            self.head_channels = default_head_channels(self.channels)
        expected = block_resolutions(self.resolution if self.arch == "stylegan2" else self.resolution // 2)
        if sorted(self.channels) != expected:
            raise ValueError(f"channels must give a width for each of {expected}, got {sorted(self.channels)}")

    @property
    def num_ws(self) -> int:
        # Two per block after 4×4, plus the 4×4 conv and the last ToRGB; the same for teacher and student.
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        d["head_channels"] = {str(k): v for k, v in self.head_channels.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**d)

    def student(self, resolution: int | None = None, **overrides) -> ModelConfig:
        """The default BlazeStyleGAN student config for this teacher (same mapping and W+ layout)."""
        res = resolution or self.resolution
        if res != self.resolution:
            raise ValueError(f"a student must match its teacher's resolution ({self.resolution}), not {res}")
        return ModelConfig(
            arch="blazestylegan",
            resolution=res,
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            mapping_lr_multiplier=self.mapping_lr_multiplier,
            img_channels=self.img_channels,
            **overrides,
        )
