"""A direction from labelled latents (InterFaceGAN's recipe): fit a linear classifier that separates the latents the
user labelled 1 from those labelled 0; the unit normal of its hyperplane, pointing to the 1s, is the direction.

Logistic regression with an L2 penalty, solved by L-BFGS in float64 (a convex problem, so it converges to the same
answer every time). Features are only centred: per-dimension scaling would change which hyperplane the penalty
prefers, and on sampled W it recovered a known direction less well (measured).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import UserError
from engine.io.directions import Direction


def fit_direction(latents, labels, name: str = "attribute", *, num_ws: int | None = None,
                  layers: tuple[int, int] | None = None, per_layer: bool = False, l2: float = 1e-2,
                  iters: int = 200) -> Direction:
    """latents: [N, w_dim] (w) or [N, num_ws, w_dim] (W+); labels: N values of 0/1.

    With W+ latents the feature is the mean over `layers` (default all); `per_layer` instead fits one weight per
    layer and entry, giving a [num_ws, w_dim] direction that is zero outside `layers`."""
    x = torch.as_tensor(np.asarray(latents), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64)).flatten()
    if x.ndim == 2:
        x = x[:, None]
    if x.ndim != 3:
        raise UserError(f"latents must be [N, w_dim] or [N, num_ws, w_dim], got {list(x.shape)}")
    n, L, w_dim = x.shape
    num_ws = num_ws or L
    if len(y) != n:
        raise UserError(f"{n} latents but {len(y)} labels")
    if not torch.all((y == 0) | (y == 1)):
        raise UserError("labels must be 0 or 1")
    pos = int(y.sum())
    if pos == 0 or pos == n:
        raise UserError(f"need latents of both kinds to fit a direction (got {pos} labelled 1, {n - pos} labelled 0)")
    a, b = layers if layers is not None else (0, num_ws - 1)
    if per_layer:
        if L != num_ws:
            raise UserError("a per-layer direction needs W+ latents")
        feats = x[:, a : b + 1].reshape(n, -1)
    else:
        feats = x[:, a : b + 1].mean(1) if L > 1 else x[:, 0]

    f = feats - feats.mean(0)
    coef = torch.zeros(f.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([coef, bias], max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(f @ coef + bias, y) + 0.5 * l2 * coef.dot(coef)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    coef = coef.detach()
    accuracy = float((((f @ coef + bias.detach()) > 0).double() == y).double().mean())
    normal = coef
    if normal.norm() == 0:
        raise UserError("the labels carry no linear signal in these latents; label more or different latents")
    normal = normal / normal.norm()
    if per_layer:
        v = torch.zeros(num_ws, w_dim, dtype=torch.float64)
        v[a : b + 1] = normal.reshape(b - a + 1, w_dim)
        # Unit norm per layer used, so α means the same distance on each layer as for a w direction.
        v = v / v[a : b + 1].norm(dim=1).mean()
        proj = (x[:, a : b + 1] * v[a : b + 1]).sum((1, 2)) / (b - a + 1)
    else:
        v = normal
        proj = feats @ v
    std = float(proj.std())
    return Direction(name, v.float(), (a, b), (-round(3 * std, 4), round(3 * std, 4)), "fit", {
        "samples": n, "positives": pos, "train_accuracy": accuracy, "std": std, "l2": l2,
        "per_layer": per_layer,
    })
