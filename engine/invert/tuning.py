"""Tune to this photo (pivotal tuning, Roich et al. 2022): fine-tune a copy of the synthesis network so that the
photo's inverted codes (the pivot) reproduce the photo's aligned face.

Inversion alone finds the generator's closest face, which is often someone else; tuning moves the generator to the
person instead of the codes to the generator. Only a copy of the synthesis weights changes: the mapping network,
`w_avg` and the W+ layout stay, so directions, latents and the encoder keep working. A locality term keeps edits
meaningful: at codes a fixed distance from the pivot towards random faces, the tuned network must still render what
the original did, so the change stays local to this person instead of bending the whole W space.

Loss = perceptual(G'(pivot), face) + pixel_weight · MSE(G'(pivot), face)
       + locality_weight · [perceptual + MSE](G'(w_r), G(w_r)),  w_r = pivot + locality_radius · unit(w_z - pivot)
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from engine.invert.projector import _perceptual_input

# callback(step, total, loss) -> False to stop; anything else continues.
Callback = Callable[[int, int, float], "bool | None"]


@dataclass
class TuningResult:
    G: object  # the tuned copy (eval mode, no gradients); the input generator is untouched
    steps: int  # steps run (fewer than asked when cancelled)
    start_loss: float  # reconstruction loss (perceptual + pixel) of the pivot before tuning
    loss: float  # and after
    seconds: float
    cancelled: bool = False
    history: list[float] = field(default_factory=list)


def tune_to_face(
    G,  # the generator; a copy is tuned
    target: torch.Tensor,  # [1, 3, R, R] in [-1, 1]: the aligned face
    pivot: torch.Tensor,  # [1, num_ws, w_dim]: its inverted codes
    steps: int = 100,
    *,
    perceptual,  # engine.models.perceptual.PerceptualLoss (or LPIPS-VGG) on the same device
    lr: float = 3e-4,  # Adam learning rate of the synthesis weights (PTI's)
    pixel_weight: float = 1.0,
    locality_weight: float = 0.1,
    locality_every: int = 4,  # the locality term runs every this many steps (it costs two more renders)
    locality_radius: float = 30.0,  # distance from the pivot in W (PTI's)
    seed: int = 0,
    callback: Callback | None = None,
    cancel: threading.Event | None = None,
    progress: bool = True,
) -> TuningResult:
    """Fine-tune a copy of G's synthesis network on one face; returns it with the losses before and after. Runs with
    gradients enabled whatever the caller's grad or inference mode."""
    if target.ndim != 4 or target.shape != (1, 3, G.resolution, G.resolution):
        raise ValueError(f"target must be [1, 3, {G.resolution}, {G.resolution}], got {tuple(target.shape)}")
    if pivot.shape != (1, G.num_ws, G.w_dim):
        raise ValueError(f"pivot must be [1, {G.num_ws}, {G.w_dim}], got {tuple(pivot.shape)}")
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        tuned = copy.deepcopy(G).float()
        tuned.requires_grad_(False)
        tuned.synthesis.requires_grad_(True)
        tuned.train(False)
        target = target.detach().float().clone()
        pivot = pivot.detach().float().clone()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(tuned.synthesis.parameters(), lr=lr, betas=(0.9, 0.999))

        def reconstruction(net) -> torch.Tensor:
            img = net.synthesis(pivot, noise_mode="const")
            return (perceptual(_perceptual_input(img), _perceptual_input(target)).mean()
                    + pixel_weight * (img - target).square().mean())

        with torch.no_grad():
            start = float(reconstruction(tuned))
        history: list[float] = []
        cancelled, done = False, 0
        bar = tqdm(total=steps, desc="tune", unit="step", disable=not progress or steps == 0, leave=False)
        try:
            for step in range(steps):
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                loss = reconstruction(tuned)
                if locality_weight > 0 and step % locality_every == 0:
                    z = torch.randn(1, G.z_dim, generator=gen).to(pivot.device)
                    with torch.no_grad():
                        w_z = G.mapping(z)
                        direction = w_z - pivot
                        w_r = pivot + locality_radius * direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                        ref = G.synthesis(w_r, noise_mode="const")
                    img = tuned.synthesis(w_r, noise_mode="const")
                    loss = loss + locality_weight * (
                        perceptual(_perceptual_input(img), _perceptual_input(ref)).mean() + (img - ref).square().mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done = step + 1
                history.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
                if callback is not None and callback(done, steps, history[-1]) is False:
                    cancelled = done < steps
                    break
        finally:
            bar.close()
        tuned.requires_grad_(False).eval()
        with torch.no_grad():
            final = float(reconstruction(tuned))
    tuned.cfg = copy.deepcopy(G.cfg)
    tuned.cfg.info = {**tuned.cfg.info, "tuned_to_photo": {"steps": done, "loss_before": start, "loss_after": final}}
    tuned.source_path = getattr(G, "source_path", "")
    return TuningResult(tuned, done, start, final, time.perf_counter() - t0, cancelled, history)
