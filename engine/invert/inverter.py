"""`Inverter`: everything the app and the CLI need to turn an aligned face into W+ codes.

It holds the generator, the encoder (optional) and the perceptual loss, so a photo costs one encoder pass plus,
optionally, a projector run. One Inverter can be shared between threads: `encode`, `render` and `metrics` only read
the networks and may run while another thread projects (the webcam keeps encoding during a refine); projections are
serialised by a lock, since two at once would only split the same cores. Cancel a running projection with a
`threading.Event` or a callback that returns False.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.errors import UserError
from engine.invert.projector import Callback, ProjectionResult, project, reconstruction_metrics
from engine.models.encoder import Encoder, check_compatible, load_encoder, w_statistics


@dataclass
class Inversion:
    """The outcome of `Inverter.invert`."""

    ws: torch.Tensor  # [1, num_ws, w_dim] final codes
    start_ws: torch.Tensor  # the encoder's codes (or w_avg) the projector started from
    metrics: dict  # reconstruction metrics of `ws`: perceptual, psnr, mse
    start_metrics: dict  # the same for `start_ws`
    projection: ProjectionResult | None = None  # None when no projector steps ran
    timings: dict = field(default_factory=dict)  # seconds: encode, project


class Inverter:
    """Aligned face crop → W+ codes for one generator: encoder, then an optional projector."""

    def __init__(
        self,
        G,  # the generator (teacher or student); the Inverter never changes it
        encoder: Encoder | None = None,  # None: start every projection from w_avg
        perceptual=None,  # a PerceptualLoss to share, or a backbone name ("lpips-vgg"); None: MobileNetV2
        *,
        lr: float = 0.03,  # projector defaults, see engine.invert.projector.project
        pixel_weight: float = 1.0,
        reg_weight: float = 0.01,
    ):
        from engine.models.perceptual import PerceptualLoss

        self.G = G
        self.device = G.w_avg.device
        if encoder is not None:
            check_compatible(encoder, G)
            # channels_last: the backbone's depthwise convs run several times faster on CPU.
            encoder = encoder.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        self.encoder = encoder
        if perceptual is None or isinstance(perceptual, str):
            perceptual = PerceptualLoss(perceptual or "mobilenet_v2")
        self.perceptual = perceptual.to(self.device)
        self.options = {"lr": lr, "pixel_weight": pixel_weight, "reg_weight": reg_weight}
        self._w_std: torch.Tensor | None = encoder.w_std.clone() if encoder is not None else None
        self._lock = threading.RLock()

    @classmethod
    def from_files(cls, model=None, encoder=None, **kwargs) -> Inverter:
        """Load the model (None: the bundled student) and the encoder (a path, or None for none)."""
        from engine.io.checkpoints import load_generator

        G = load_generator(model)
        return cls(G, load_encoder(encoder) if encoder is not None else None, **kwargs)

    @property
    def resolution(self) -> int:
        return self.G.resolution

    @property
    def w_std(self) -> torch.Tensor:
        """Per-dimension spread of W (the projector regulariser's unit): the encoder's, else estimated once."""
        with self._lock:
            if self._w_std is None:
                self._w_std = w_statistics(self.G)[1]
            return self._w_std

    # --- inputs ---

    def to_tensor(self, image) -> torch.Tensor:
        """An aligned face → [N, 3, R, R] in [-1, 1] at the generator's resolution, on the model's device.

        Accepts an `engine.faces.AlignedFace`, a square uint8 RGB array (H, W, 3) or a batch (N, H, W, 3), or a float
        tensor [N, 3, H, W] / [3, H, W] already in [-1, 1] (used as is apart from resizing).
        """
        image = getattr(image, "image", image)  # AlignedFace
        R = self.resolution
        if isinstance(image, torch.Tensor):
            x = image.detach().float()
            if x.ndim == 3:
                x = x[None]
            if x.ndim != 4 or x.shape[1] != 3:
                raise UserError(f"expected an image tensor [N, 3, H, W], got {tuple(x.shape)}")
            if x.shape[-2:] != (R, R):
                x = torch.nn.functional.interpolate(
                    x, size=(R, R), mode="bilinear", align_corners=False, antialias=x.shape[-1] > R
                )
            return x.to(self.device)
        a = np.asarray(image)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise UserError(f"expected an aligned RGB uint8 image (H, W, 3), got {a.dtype} {a.shape}")
        if a.shape[1] != a.shape[2]:
            raise UserError(f"the aligned face must be square, got {a.shape[2]}x{a.shape[1]}; align it first")
        if a.shape[1] != R:
            interp = cv2.INTER_AREA if a.shape[1] > R else cv2.INTER_LINEAR
            a = np.stack([cv2.resize(im, (R, R), interpolation=interp) for im in a])
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return x.to(self.device)

    # --- the steps ---

    @torch.no_grad()
    def encode(self, image) -> torch.Tensor:
        """W+ codes [N, num_ws, w_dim] for aligned face(s): the encoder's prediction, or w_avg without an encoder."""
        x = self.to_tensor(image)
        if self.encoder is None:
            return self.G.w_avg.detach().clone().expand(x.shape[0], self.G.num_ws, -1).clone()
        return self.encoder(x).float()

    def project(
        self,
        image,
        ws0: torch.Tensor | None = None,  # start codes; None: encode(image)
        steps: int = 100,
        callback: Callback | None = None,  # callback(step, total, loss); return False to stop
        cancel: threading.Event | None = None,
        progress: bool = False,  # tqdm bar (the CLI turns it on)
        **options,  # lr, pixel_weight, reg_weight overrides
    ) -> ProjectionResult:
        """Refine codes so the generator reproduces `image`; `.ws` holds the best codes seen."""
        target = self.to_tensor(image)
        if ws0 is None:
            ws0 = self.encode(target)
        opts = {**self.options, **options}
        with self._lock:
            return project(
                self.G, target, ws0.to(self.device), steps, perceptual=self.perceptual, w_std=self.w_std,
                callback=callback, cancel=cancel, progress=progress, **opts,
            )

    @torch.no_grad()
    def render(self, ws: torch.Tensor) -> np.ndarray:
        """uint8 [N, R, R, 3] images of W+ codes (noise_mode const, as the projector saw them)."""
        from engine.render import to_uint8

        return to_uint8(self.G.synthesis(ws.to(self.device), noise_mode="const"))

    @torch.no_grad()
    def metrics(self, image, ws: torch.Tensor) -> dict:
        """Reconstruction metrics of codes `ws` [1, num_ws, w_dim] against an aligned face."""
        target = self.to_tensor(image)
        recon = self.G.synthesis(ws.to(self.device), noise_mode="const")
        return reconstruction_metrics(recon, target, self.perceptual)

    def invert(
        self,
        image,
        steps: int = 100,
        callback: Callback | None = None,
        cancel: threading.Event | None = None,
        progress: bool = False,
        **options,
    ) -> Inversion:
        """Encode one aligned face, then project for `steps` (0: encoder only); metrics for both stages."""
        import time

        target = self.to_tensor(image)
        if target.shape[0] != 1:
            raise UserError("invert takes one face at a time")
        t = time.perf_counter()
        start = self.encode(target)
        t_enc = time.perf_counter() - t
        start_metrics = self.metrics(target, start)
        result, ws, t_proj = None, start, 0.0
        if steps > 0:
            t = time.perf_counter()
            result = self.project(target, start, steps, callback=callback, cancel=cancel, progress=progress,
                                  **options)
            t_proj = time.perf_counter() - t
            ws = result.ws
        metrics = self.metrics(target, ws) if result is not None else dict(start_metrics)
        return Inversion(ws=ws, start_ws=start, metrics=metrics, start_metrics=start_metrics, projection=result,
                         timings={"encode": t_enc, "project": t_proj})


def bundled_encoder_path() -> Path | None:
    """assets/encoder.safetensors when it is installed, else None."""
    from engine.assets import ENCODER

    return ENCODER if ENCODER.exists() else None


def pick_encoder(G, path=None, use: bool = True):
    """(encoder or None, a note for the user or None) for G. An explicit `path` that does not fit is an error; the
    bundled encoder that does not fit is skipped with a note (the user did not ask for it)."""
    if not use:
        if path:
            raise UserError("give --encoder or --no-encoder, not both")
        return None, None
    if path:
        E = load_encoder(path)
        check_compatible(E, G)
        return E, None
    bundled = bundled_encoder_path()
    if bundled is None:
        return None, "no encoder given and none bundled; starting from w_avg"
    E = load_encoder(bundled)
    try:
        check_compatible(E, G)
    except UserError:
        return None, "the bundled encoder belongs to another model; starting from w_avg (see --encoder)"
    return E, None
