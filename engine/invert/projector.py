"""The projector: refine W+ codes so the generator reproduces a target image.

Loss per image = perceptual distance + pixel_weight × MSE + reg_weight × mean(((ws − ws0) / w_std)²).
The synthesis noise stays the model's fixed buffers (noise_mode "const"), so nothing but W+ can absorb detail; the
regulariser keeps the codes near their start (the encoder's prediction or w_avg), where edits still behave, instead
of drifting to far-off W+ corners that fit the pixels but break under edits. Adam with NVIDIA's projector schedule:
a short learning-rate ramp-up, then a cosine ramp-down over the last quarter. The best codes seen are returned, per
image, so a bad last step or a cancel never loses progress.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.render import psnr

# The perceptual loss sees at most this size: above it, fine texture dominates the features and the cost grows
# with the square of the size (NVIDIA's projector also compares at 256).
PERCEPTUAL_MAX_SIZE = 256

# callback(step, total, loss) -> False to stop; anything else (None included) continues.
Callback = Callable[[int, int, float], "bool | None"]


@dataclass
class ProjectionResult:
    ws: torch.Tensor  # [N, num_ws, w_dim], the best codes seen for each image
    loss: float  # mean over images of each image's best loss
    start_loss: float  # mean loss at the start codes
    steps: int  # optimisation steps run (fewer than asked when cancelled)
    cancelled: bool = False
    history: list[float] = field(default_factory=list)  # mean loss before each step


def _lr_at(t: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning-rate factor at progress t in [0, 1)."""
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / rampdown)) if rampdown > 0 else 1.0
    return max(up * down, 0.0)


def _perceptual_input(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] > PERCEPTUAL_MAX_SIZE:
        s = PERCEPTUAL_MAX_SIZE
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    return x


def projection_losses(
    G, ws: torch.Tensor, target: torch.Tensor, perceptual, ws0: torch.Tensor, w_std: torch.Tensor,
    pixel_weight: float, reg_weight: float, noise_mode: str = "const",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-image total loss [N], the rendered images)."""
    img = G.synthesis(ws, noise_mode=noise_mode)
    loss = perceptual(_perceptual_input(img), _perceptual_input(target))
    if pixel_weight:
        loss = loss + pixel_weight * (img - target).square().mean(dim=(1, 2, 3))
    if reg_weight:
        loss = loss + reg_weight * ((ws - ws0) / w_std).square().mean(dim=(1, 2))
    return loss, img


def project(
    G,  # the generator (its parameters are not changed)
    target: torch.Tensor,  # [N, 3, R, R] images in [-1, 1] at the generator's resolution
    ws0: torch.Tensor,  # [N, num_ws, w_dim] start codes (encoder output, or w_avg repeated)
    steps: int = 100,  # optimisation steps
    *,
    perceptual,  # engine.models.perceptual.PerceptualLoss on the same device (MobileNetV2, or "lpips-vgg")
    w_std: torch.Tensor | None = None,  # [w_dim] spread of W, the regulariser's unit; 1 when None
    lr: float = 0.03,  # peak Adam learning rate (W units)
    pixel_weight: float = 1.0,  # weight of the per-pixel MSE next to the perceptual distance
    reg_weight: float = 0.01,  # weight of the pull toward ws0
    noise_mode: str = "const",
    callback: Callback | None = None,  # called after every step; returning False stops early
    cancel: threading.Event | None = None,  # set from another thread to stop early
    progress: bool = True,  # show a tqdm bar
    desc: str = "project",
) -> ProjectionResult:
    """Optimise W+ codes so G(ws) matches `target`. Runs with gradients enabled whatever the caller's grad or
    inference mode."""
    if target.ndim != 4 or target.shape[1:] != (3, G.resolution, G.resolution):
        raise ValueError(f"target must be [N, 3, {G.resolution}, {G.resolution}], got {tuple(target.shape)}")
    if ws0.shape != (target.shape[0], G.num_ws, G.w_dim):
        raise ValueError(f"ws0 must be [{target.shape[0]}, {G.num_ws}, {G.w_dim}], got {tuple(ws0.shape)}")
    # Inference-mode inputs (the app's live path) cannot take part in autograd: leave that mode before copying them.
    with torch.inference_mode(False), torch.enable_grad():
        return _optimise(G, target, ws0, max(0, int(steps)), perceptual, w_std, lr, pixel_weight, reg_weight,
                         noise_mode, callback, cancel, progress, desc)


def _optimise(G, target, ws0, steps, perceptual, w_std, lr, pixel_weight, reg_weight, noise_mode, callback, cancel,
              progress, desc) -> ProjectionResult:
    device = target.device
    ws0 = ws0.detach().to(device=device, dtype=torch.float32).clone()
    target = target.detach().float().clone()
    w_std = (torch.ones(G.w_dim) if w_std is None else w_std.detach()).to(device=device, dtype=torch.float32).clone()

    def losses_at(ws):
        return projection_losses(G, ws, target, perceptual, ws0, w_std, pixel_weight, reg_weight, noise_mode)[0]

    ws = ws0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ws], lr=lr, betas=(0.9, 0.999))
    best_ws = ws0.clone()
    best = torch.full((target.shape[0],), float("inf"), device=device)
    history: list[float] = []
    start_loss = None
    cancelled = False
    done = 0
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress or steps == 0, leave=False)
    try:
        for step in range(steps):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            for g in opt.param_groups:
                g["lr"] = lr * _lr_at(step / steps)
            loss = losses_at(ws)
            # Each image's loss belongs to the codes before this update.
            with torch.no_grad():
                better = loss.detach() < best
                best = torch.where(better, loss.detach(), best)
                best_ws[better] = ws.detach()[better]
            mean = float(loss.detach().mean())
            if start_loss is None:
                start_loss = mean
            history.append(mean)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
            if callback is not None and callback(done, steps, mean) is False:
                cancelled = done < steps
                break
    finally:
        bar.close()
    with torch.no_grad():
        final = losses_at(ws.detach())
        better = final < best
        best = torch.where(better, final, best)
        best_ws[better] = ws.detach()[better]
        if start_loss is None:
            start_loss = float(final.mean())
    return ProjectionResult(
        ws=best_ws.detach(), loss=float(best.mean()), start_loss=start_loss, steps=done, cancelled=cancelled,
        history=history,
    )


@torch.no_grad()
def reconstruction_metrics(image: torch.Tensor, target: torch.Tensor, perceptual) -> dict:
    """How well `image` (generator output) reproduces `target`, both [1, 3, R, R] in [-1, 1]; images are clamped
    and quantised to 8 bits as a user sees them. perceptual: the distance of the projector's loss (0 = same; with
    MobileNetV2 the two fixture photos, different people, are 1.4 apart at 64 px and 1.6 at 256, one of them against
    its mirror image 0.8–1.2; with LPIPS-VGG the two example photos are 0.67 apart at 64 px);
    psnr: dB over RGB (engine.render.psnr); mse: on the [0, 1] scale."""
    image = ((image.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    target = ((target.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    mse = float(((image - target) * 0.5).square().mean())
    dist = float(perceptual(_perceptual_input(image), _perceptual_input(target)).mean())
    return {"perceptual": round(dist, 5), "psnr": round(psnr(image, target), 3), "mse": round(mse, 7)}
