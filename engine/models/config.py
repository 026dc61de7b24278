"""Model configuration: a dataclass that serialises to JSON inside the `.safetensors` header, so a model file always
knows how to rebuild its network."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from engine.io.safety import MAX_MAPPING_LAYERS, MAX_RESOLUTION, MAX_WIDTH, check_range

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
        # Configs come from downloaded files' headers: every size is bounded before anything is built from it.
        if self.arch not in ARCHES:
            raise ValueError(f"unknown architecture {str(self.arch)[:40]!r}; expected one of {ARCHES}")
        self.resolution = check_range("resolution", self.resolution, 8, MAX_RESOLUTION)
        if self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, not {self.resolution}")
        self.z_dim = check_range("z_dim", self.z_dim, 1, MAX_WIDTH)
        self.w_dim = check_range("w_dim", self.w_dim, 1, MAX_WIDTH)
        self.mapping_layers = check_range("mapping_layers", self.mapping_layers, 1, MAX_MAPPING_LAYERS)
        self.img_channels = check_range("img_channels", self.img_channels, 1, 4)
        if not isinstance(self.mapping_lr_multiplier, (int, float)) or not 0 < self.mapping_lr_multiplier <= 10:
            raise ValueError(f"mapping_lr_multiplier must be a number in (0, 10], not {self.mapping_lr_multiplier!r}")
        if self.conv_clamp is not None and (not isinstance(self.conv_clamp, (int, float)) or
                                            not 0 < self.conv_clamp < 1e9):
            raise ValueError(f"conv_clamp must be a positive number or null, not {self.conv_clamp!r}")
        if not isinstance(self.channels, dict) or not isinstance(self.head_channels, dict):
            raise ValueError("channels and head_channels must be objects {resolution: width}")
        if not isinstance(self.info, dict):
            raise ValueError("info must be an object")
        # JSON turns int keys into strings; accept both.
        self.channels = {check_range("a channels key", int(k), 4, MAX_RESOLUTION): check_range(
            f"channels[{k}]", v, 1, MAX_WIDTH) for k, v in self.channels.items()}
        self.head_channels = {check_range("a head_channels key", int(k), 4, MAX_RESOLUTION): check_range(
            f"head_channels[{k}]", v, 1, MAX_WIDTH) for k, v in self.head_channels.items()}
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
        if self.arch == "blazestylegan" and sorted(self.head_channels) != expected:
            raise ValueError(f"head_channels must give a width for each of {expected}, got "
                             f"{sorted(self.head_channels)}")

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
        if not isinstance(d, dict):
            raise ValueError("the config is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)[:5]}")
        try:
            return cls(**d)
        except (TypeError, OverflowError) as e:  # wrong JSON types, e.g. a string where a width belongs
            raise ValueError(f"malformed config ({e})") from None

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
