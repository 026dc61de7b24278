"""Directions found without labels, from the model itself.

- SeFa (Shen & Zhou 2021, closed-form factorisation): a style is s = A·w + b, so the unit step d in W that moves the
  styles of the chosen layers most maximises |A·d|², i.e. d is a top eigenvector of AᵀA, where A stacks the affine
  weights of every modulated layer whose W+ entry lies in the chosen range. Needs no sampling.
- GANSpace (Härkönen et al. 2020): principal components of W over many mapped samples.

Both give orthonormal directions in W, sorted by importance, with a deterministic sign (the largest-magnitude entry
is positive) so the same model always yields the same file. Each direction's slider spans ±3 standard deviations of
the mapped W along it.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from engine.edit.layers import modulated_affines
from engine.errors import UserError
from engine.io.directions import Direction, DirectionSet


@torch.no_grad()
def sample_w(G, n: int, seed: int = 0, batch: int = 2048, progress: bool = True) -> torch.Tensor:
    """n untruncated w [n, w_dim] from z ~ N(0, I) with a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in tqdm(range(0, n, batch), desc="map", unit="batch", disable=not progress or n <= batch, leave=False):
        z = torch.randn(min(batch, n - i), G.z_dim, generator=gen)
        out.append(G.mapping(z, psi=1.0)[:, 0])
    return torch.cat(out)


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, idx[:, None]))
    signs[signs == 0] = 1
    return vectors * signs


def _sliders(stds: torch.Tensor, k: float = 3.0) -> list[tuple[float, float]]:
    return [(-round(k * float(s), 4), round(k * float(s), 4)) for s in stds]


@torch.no_grad()
def sefa(G, layers: tuple[int, int] | None = None, num: int = 10, normalize: bool = True, std_samples: int = 4096,
         prefix: str = "sefa") -> DirectionSet:
    """The top `num` SeFa directions for the W+ layers [a, b] (default: all) of G's synthesis (teacher or student).

    `normalize` scales every style channel's weight row to unit length first, so that layers with larger affine
    weights (or more channels' worth of gain) do not dominate the factorisation."""
    a, b = layers if layers is not None else (0, G.num_ws - 1)
    affines = [(name, fc) for name, fc, idx in modulated_affines(G) if a <= idx <= b]
    if not affines:
        raise UserError(f"no modulated layer consumes W+ entries {a}-{b} in this {G.cfg.arch} model")
    A = torch.cat([fc.weight.double() * fc.weight_gain for _, fc in affines])  # [Σ channels, w_dim]
    if normalize:
        A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    evals, evecs = torch.linalg.eigh(A.T @ A)  # ascending
    order = torch.argsort(evals, descending=True)[: max(1, min(num, G.w_dim))]
    vectors = _fix_signs(evecs[:, order].T).float()
    evals = evals[order]
    total = float(torch.linalg.eigvalsh(A.T @ A).clamp_min(0).sum())
    w = sample_w(G, std_samples, progress=False)
    stds = ((w - w.mean(0)) @ vectors.T).std(dim=0)
    dset = DirectionSet.for_model(G)
    for i, (v, ev, sd, sl) in enumerate(zip(vectors, evals, stds, _sliders(stds))):
        dset.add(Direction(f"{prefix}{i}", v, (a, b), sl, "sefa", {
            "rank": i, "eigenvalue": float(ev), "share": float(ev) / total, "std": float(sd),
            "factorised_layers": [a, b], "layers_used": [n for n, _ in affines], "arch": G.cfg.arch,
        }))
    return dset


@torch.no_grad()
def ganspace(G, num: int = 10, samples: int = 20000, layers: tuple[int, int] | None = None, seed: int = 0,
             prefix: str = "pc") -> DirectionSet:
    """The top `num` principal components of W over `samples` mapped samples; edits apply on `layers`."""
    if samples < 2 * num:
        raise UserError(f"GANSpace needs more samples than components (got {samples} for {num})")
    a, b = layers if layers is not None else (0, G.num_ws - 1)
    w = sample_w(G, samples, seed=seed).double()
    mean = w.mean(0)
    x = w - mean
    cov = x.T @ x / (len(x) - 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[: max(1, min(num, G.w_dim))]
    vectors = _fix_signs(evecs[:, order].T).float()
    var = evals[order].clamp_min(0)
    stds = var.sqrt()
    total = float(evals.clamp_min(0).sum())
    dset = DirectionSet.for_model(G)
    for i, (v, vr, sd, sl) in enumerate(zip(vectors, var, stds, _sliders(stds))):
        dset.add(Direction(f"{prefix}{i}", v, (a, b), sl, "ganspace", {
            "rank": i, "variance": float(vr), "explained": float(vr) / total, "std": float(sd), "samples": samples,
        }))
    return dset
