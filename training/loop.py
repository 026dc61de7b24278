"""Pieces every training loop here shares: the EMA update, the lazy R1 step and a clean stop on Ctrl-C / SIGTERM.
The distiller (training/distill.py) and the demo recipe's teacher fit (training/recipe.py) both use them."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.stop import StopFlag  # noqa: F401 - the distiller and the recipe stop through it
from training.losses import r1_penalty


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float, buffers: bool = False) -> None:
    """ema ← beta·ema + (1 − beta)·model, parameter by parameter; with `buffers`, the model's buffers are copied."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - beta)
    if buffers:
        for be, b in zip(ema.buffers(), model.buffers()):
            be.copy_(b)


def lazy_r1_step(D, params, opt: torch.optim.Optimizer, real: torch.Tensor, gamma: float, every: int,
                 clip: float | None = None) -> torch.Tensor:
    """The lazy R1 step of StyleGAN2, run every `every` discriminator steps: the penalty ‖∇ₓ D(x)‖² at real images,
    weighted gamma/2 × every so that it matches an R1 term on every step, applied by D's own optimiser. `D` is what
    runs the forward (a DDP wrapper, say) and `params` the discriminator's parameters (clipped to `clip` when given).
    Returns the penalty (detached), in float32: its double backward is where half precision overflows first."""
    real = real.detach().float().requires_grad_(True)
    logits = D(real)
    r1 = r1_penalty(logits, real)
    opt.zero_grad(set_to_none=True)
    # 0 × the logits keeps every output in the graph: DDP expects each parameter to take part in a backward.
    (r1 * (gamma / 2 * every) + 0 * logits.float().mean()).backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return r1.detach()
