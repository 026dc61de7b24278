"""The inversion encoder: an aligned face crop → W+ codes, as in MediaPipe's face stylizer.

An ImageNet MobileNetV2 backbone (`engine.models.mobilenet`) feeds a light head: the feature maps of a few stages are
pooled to a small grid, reduced to one vector per stage by a learned spatial weighting (initialised as a plain
average, so it starts as global pooling), concatenated, and turned by one small MLP per group of W+ layers
(coarse 4–8 px, middle 16–32 px, fine above) into that group's codes. The head predicts offsets from `w_avg` in
units of W's per-dimension spread `w_std`, and its last layers start near zero, so an untrained encoder answers
`w_avg` for every face: the same start as a projector without an encoder.

The file is one `.safetensors` with the JSON `EncoderConfig` in its header. The config names the W space it was
trained for (`engine.io.latents.w_space_id`); `check_compatible` refuses a model with another one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import CheckpointError, UserError
from engine.models import mobilenet as _mobilenet

ENCODER_KEY = "blazestudio-encoder"
ENCODER_VERSION = 1
# `features` indices whose outputs the head sees: strides 8, 16 and 32 (32, 96 and 1280 channels).
DEFAULT_STAGES = (6, 13, 18)


def default_input_size(resolution: int) -> int:
    """The encoder's input size for a generator resolution: at most 256 (the cost grows with the square), at
    least 128 (below it MobileNetV2's stride-32 map is 2×2 or smaller and mostly padding)."""
    return int(min(256, max(128, resolution)))


def default_groups(num_ws: int) -> list[list[int]]:
    """W+ index ranges that share one head: coarse (blocks 4–8: pose, face shape), middle (16–32: features,
    expression) and fine (64 and up: colour, texture), StyleGAN's classic split."""
    bounds = [0, 4, 8, num_ws]
    groups = [[a, min(b, num_ws)] for a, b in zip(bounds[:-1], bounds[1:]) if a < num_ws and a < b]
    return [g for g in groups if g[1] > g[0]]


@dataclass
class EncoderConfig:
    num_ws: int  # W+ layers of the generator it inverts
    w_dim: int  # width of one W code
    resolution: int  # the generator's image size (the aligned crop it is trained on)
    w_space_id: str  # engine.io.latents.w_space_id of that generator: the W space its codes live in
    input_size: int = 256  # the crop is resized to this before the backbone
    stages: list[int] = field(default_factory=lambda: list(DEFAULT_STAGES))  # MobileNetV2 `features` indices
    pool_grid: int = 4  # each stage is average-pooled to pool_grid × pool_grid before the learned pooling
    hidden: int = 256  # width of each group's hidden layer
    groups: list[list[int]] = field(default_factory=list)  # [start, end) W+ ranges with their own head
    info: dict = field(default_factory=dict)  # provenance: model it was trained on, steps, losses

    def __post_init__(self):
        from engine.io.safety import MAX_NUM_WS, MAX_RESOLUTION, MAX_WIDTH, check_range

        # Bounded before anything is built: the config comes from a file's header.
        self.num_ws = check_range("num_ws", self.num_ws, 1, MAX_NUM_WS)
        self.w_dim = check_range("w_dim", self.w_dim, 1, MAX_WIDTH)
        self.resolution = check_range("resolution", self.resolution, 8, MAX_RESOLUTION)
        self.input_size = check_range("input_size", self.input_size, 32, 1024)
        self.pool_grid = check_range("pool_grid", self.pool_grid, 1, 16)
        self.hidden = check_range("hidden", self.hidden, 1, MAX_WIDTH)
        if not isinstance(self.stages, list) or not isinstance(self.groups, list) or len(self.groups) > MAX_NUM_WS:
            raise ValueError("stages and groups must be short lists")
        if not isinstance(self.info, dict) or not isinstance(self.w_space_id, str):
            raise ValueError("info must be an object and w_space_id a string")
        self.stages = [check_range("a stage", s, 0, 18) for s in self.stages]
        if not self.groups:
            self.groups = default_groups(self.num_ws)
        self.groups = [[check_range("a group start", g[0], 0, MAX_NUM_WS),
                        check_range("a group end", g[1], 0, MAX_NUM_WS)]
                       for g in self.groups if isinstance(g, (list, tuple)) and len(g) == 2]
        covered = [i for a, b in self.groups for i in range(a, b)]
        if covered != list(range(self.num_ws)):
            raise ValueError(f"groups {self.groups} must cover W+ layers 0..{self.num_ws - 1} once, in order")
        if not self.stages or sorted(set(self.stages)) != self.stages:
            raise ValueError(f"stages must be ascending MobileNetV2 feature indices, got {self.stages}")
        if self.stages[0] < 0 or self.stages[-1] > 18:
            raise ValueError(f"stages must lie in 0..18, got {self.stages}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown encoder config fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def for_generator(cls, G, **overrides) -> EncoderConfig:
        from engine.io.latents import w_space_id

        overrides.setdefault("input_size", default_input_size(G.resolution))
        return cls(num_ws=G.num_ws, w_dim=G.w_dim, resolution=G.resolution, w_space_id=w_space_id(G), **overrides)


def _out_channels(block: nn.Module) -> int:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class LearnedPool(nn.Module):
    """[N, C, H, W] → [N, C]: average-pool to grid × grid, then a per-channel weighted sum over the cells.

    Global average pooling throws away where things are (pose, face shape); this keeps a coarse layout at the cost
    of C × grid² weights, initialised to 1/grid² so training starts from the global average.
    """

    def __init__(self, channels: int, grid: int):
        super().__init__()
        self.grid = grid
        self.weight = nn.Parameter(torch.full((channels, grid * grid), 1.0 / (grid * grid)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, self.grid).flatten(2)  # [N, C, grid²]
        return (x * self.weight).sum(dim=2)


class GroupHead(nn.Module):
    """Pooled features → the offsets of one group of W+ layers, [N, layers, w_dim] (in units of w_std)."""

    def __init__(self, in_features: int, hidden: int, layers: int, w_dim: int, init_scale: float = 1e-3):
        super().__init__()
        self.layers, self.w_dim = layers, w_dim
        self.fc = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, layers * w_dim)
        # Near zero, not zero: the encoder starts at w_avg, yet the hidden layer gets a gradient from the first step.
        nn.init.normal_(self.out.weight, std=init_scale / hidden**0.5)
        nn.init.zeros_(self.out.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(F.leaky_relu(self.fc(f), 0.2)).view(-1, self.layers, self.w_dim)


class Encoder(nn.Module):
    """Aligned face crops [N, 3, H, W] in [-1, 1] (any square size) → W+ [N, num_ws, w_dim]."""

    def __init__(self, cfg: EncoderConfig, pretrained: bool = False):
        super().__init__()
        self.cfg = cfg
        net = _mobilenet.mobilenet_v2(pretrained=pretrained)
        # Only the stages the head reads are kept (and saved).
        self.backbone = nn.Module()
        self.backbone.features = net.features[: cfg.stages[-1] + 1]
        channels = [_out_channels(net.features[i]) for i in cfg.stages]
        self.pools = nn.ModuleList(LearnedPool(c, cfg.pool_grid) for c in channels)
        n_feat = sum(channels)
        # The stages differ in scale by orders of magnitude (linear bottlenecks vs. ReLU6 outputs).
        self.norm = nn.LayerNorm(n_feat)
        self.heads = nn.ModuleList(GroupHead(n_feat, cfg.hidden, b - a, cfg.w_dim) for a, b in cfg.groups)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.register_buffer("w_std", torch.ones(cfg.w_dim))
        self.register_buffer("mean", torch.tensor(_mobilenet.IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_mobilenet.IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    def train(self, mode: bool = True) -> Encoder:
        # Batch norm keeps its ImageNet statistics: encoder batches are small and all faces, so batch statistics
        # would be noisy and biased; the affine parameters still train.
        super().train(mode)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] crops → the backbone's input: resized to input_size, ImageNet-normalised, channels_last."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {tuple(images.shape)}")
        s = self.cfg.input_size
        if images.shape[2:] != (s, s):
            shrink = images.shape[2] > s
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=shrink)
        x = ((images + 1) * 0.5 - self.mean) / self.std
        # channels_last: MobileNetV2's depthwise convs are several times faster that way on CPU.
        return x.contiguous(memory_format=torch.channels_last)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        wanted = set(self.cfg.stages)
        pooled = []
        for i, block in enumerate(self.backbone.features):
            x = block(x)
            if i in wanted:
                pooled.append(self.pools[len(pooled)](x))
        return self.norm(torch.cat(pooled, dim=1))

    def offsets(self, images: torch.Tensor) -> torch.Tensor:
        """The head's raw output: (ws − w_avg) / w_std, [N, num_ws, w_dim]."""
        f = self.features(images)
        return torch.cat([head(f) for head in self.heads], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.w_avg + self.offsets(images) * self.w_std

    def normalized(self, ws: torch.Tensor) -> torch.Tensor:
        """W+ codes in the head's units: (ws − w_avg) / w_std (for latent losses and regularisers)."""
        return (ws - self.w_avg) / self.w_std


@torch.no_grad()
def w_statistics(G, samples: int = 4096, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_avg, w_std): G's tracked average and the per-dimension RMS spread of mapped codes around it."""
    device = G.w_avg.device
    gen = torch.Generator().manual_seed(seed)
    sq = torch.zeros(G.w_dim, device=device)
    done = 0
    while done < samples:
        n = min(1024, samples - done)
        w = G.mapping(torch.randn(n, G.z_dim, generator=gen).to(device))[:, 0]
        sq += (w - G.w_avg).square().sum(0)
        done += n
    std = (sq / samples).sqrt().clamp_min(1e-4)
    return G.w_avg.detach().clone(), std


def build_encoder(G, pretrained: bool = True, **config) -> Encoder:
    """A fresh encoder for G: ImageNet backbone (pretrained), head at zero, w_avg/w_std taken from G."""
    E = Encoder(EncoderConfig.for_generator(G, **config), pretrained=pretrained)
    w_avg, w_std = w_statistics(G)
    E.w_avg.copy_(w_avg.cpu())
    E.w_std.copy_(w_std.cpu())
    return E


def save_encoder(E: Encoder, path, info: dict | None = None) -> Path:
    """Write E as one `.safetensors` (config JSON in the header), atomically."""
    from engine.io.checkpoints import atomic_write

    path = Path(path)
    if info:
        E.cfg.info = {**E.cfg.info, **info}
    meta = {ENCODER_KEY: json.dumps({"version": ENCODER_VERSION, "config": E.cfg.to_dict()})}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in E.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def read_encoder_config(path) -> EncoderConfig:
    """The EncoderConfig in an encoder file's header, validated and bounded; one CheckpointError line otherwise."""
    from engine.io.safety import read_header_config

    return read_header_config(path, ENCODER_KEY, ENCODER_VERSION, EncoderConfig.from_dict)


def load_encoder(path) -> Encoder:
    """Load an encoder written by `save_encoder` (eval mode, no gradients). The stored tensors are checked against
    the shapes its config implies before anything is allocated (engine.io.safety)."""
    from engine.io.safety import build_checked

    cfg = read_encoder_config(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{Path(path).name}: damaged encoder file ({str(e)[:200]})") from None
    E = build_checked(lambda: Encoder(cfg, pretrained=False), state, Path(path).name, what="encoder")
    E.source_path = str(path)
    return E.eval().requires_grad_(False)


def check_compatible(E: Encoder, G) -> None:
    """UserError unless E predicts codes in G's W space (a teacher and its students share one)."""
    from engine.io.latents import w_space_id

    want = w_space_id(G)
    name = Path(getattr(E, "source_path", "") or "the encoder").name
    if E.cfg.w_space_id != want:
        trained = E.cfg.info.get("model", "another model")
        raise UserError(
            f"{name} was trained for another model ({trained}, W space {E.cfg.w_space_id}; this model's is {want}); "
            "use an encoder trained for this model (main.py train-encoder --model ...)"
        )
    if (E.cfg.num_ws, E.cfg.w_dim) != (G.num_ws, G.w_dim):
        raise UserError(
            f"{name} predicts W+ of shape [{E.cfg.num_ws}, {E.cfg.w_dim}] but the model needs [{G.num_ws}, {G.w_dim}]"
        )
