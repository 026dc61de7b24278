"""Distillation and adversarial losses, kept apart from the training loop.

Distillation (BlazeStyleGAN, Jia et al. 2023): every auxiliary UpToRGB head of the student is compared with the
teacher's image at the same resolution — a perceptual distance plus a pixel L1 — so each level learns to carry the
content the teacher has at that scale. Adversarial: StyleGAN2's non-saturating logistic loss with lazy R1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.perceptual import PerceptualLoss


def default_perceptual_size(resolution: int, min_size: int = 128) -> int:
    """Size at which a head of this resolution is compared: small heads are upsampled to `min_size`, the backbone's
    (128 for MobileNetV2, whose deep layers would otherwise see mostly padding, see engine.models.perceptual; 64 for
    LPIPS-VGG), large ones capped at 256 (LPIPS' usual working size; the cost grows with the square)."""
    return min(max(resolution, min_size), 256)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


class DistillationLoss(nn.Module):
    """Multi-scale perceptual + L1 loss between the student's heads and the teacher's images at the same sizes.

    forward(student_images, teacher_images) takes the student's `return_aux` list (8 … R) and the teacher's images
    keyed by resolution (its `return_aux` list gives 4 … R), and returns a dict of scalar terms:
    "perceptual" and "l1" (each the mean over heads) and "distill" (their weighted sum).
    """

    def __init__(
        self,
        perceptual: PerceptualLoss,  # built with resize=0: this class resizes (all heads of one size in one pass)
        perceptual_weight: float = 1.0,
        l1_weight: float = 1.0,
        perceptual_size: int | None = None,  # compare every head at this size; None: default_perceptual_size(res)
    ):
        super().__init__()
        self.perceptual = perceptual
        self.perceptual_weight, self.l1_weight = perceptual_weight, l1_weight
        self.perceptual_size = perceptual_size

    def size_for(self, resolution: int) -> int:
        return self.perceptual_size or default_perceptual_size(resolution, self.perceptual.min_size)

    def perceptual_terms(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        """Per-head mean perceptual distance [H]. Heads compared at the same size share one backbone pass."""
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(student):
            groups.setdefault(self.size_for(s.shape[-1]), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(student)
        for size, idx in groups.items():
            xs = torch.cat([resize(student[i], size) for i in idx])
            with torch.no_grad():  # the targets' features need no backward pass: half the backbone's cost
                fy = self.perceptual.features(torch.cat([resize(teacher[i], size) for i in idx]).to(xs.dtype))
            fx = self.perceptual.features(xs)
            reduced = self.perceptual.reduce(self.perceptual.feature_distances(fx, fy))
            for j, per_head in zip(idx, reduced.reshape(len(idx), -1).mean(dim=1)):
                out[j] = per_head
        return torch.stack(out)  # type: ignore[arg-type]

    def forward(self, student: list[torch.Tensor], teacher: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
        try:
            targets = [teacher[s.shape[-1]] for s in student]
        except KeyError as e:
            raise ValueError(f"the teacher has no image at {e.args[0]}px to compare the student's head with") from None
        terms = {}
        zero = student[-1].new_zeros((), dtype=torch.float32)
        if self.perceptual_weight > 0:
            terms["perceptual"] = self.perceptual_terms(student, targets).mean()
        else:
            terms["perceptual"] = zero
        terms["l1"] = torch.stack([(s.float() - t.float()).abs().mean() for s, t in zip(student, targets)]).mean()
        terms["distill"] = self.perceptual_weight * terms["perceptual"] + self.l1_weight * terms["l1"]
        return terms


def generator_adversarial(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of the generator: softplus(-D(G(w)))."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_adversarial(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss of the discriminator: softplus(D(fake)) + softplus(-D(real))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ‖∇ₓ D(x)‖² at real images (R1, Mescheder et al. 2018); `reals` must require grad."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), reals, create_graph=True)
    return grad.float().square().sum(dim=[1, 2, 3]).mean()


class FeatureMatching(nn.Module):
    """Matches the mean and covariance of the generator's images to the real images' in ImageNet MobileNetV2's
    pooled 1280-d features (those of FD-MobileNetV2), a distribution loss that needs no discriminator.

    Why: a discriminator that is new (a warm start, whose file keeps none) learns too slowly on a CPU to guide the
    student, and its early gradients undo what the student had learnt (assets/MODEL_CARD.md). A frozen ImageNet
    network tells the two sets apart from the first step. It is not the Inception network FID uses. Measured on the
    demo recipe's student: those statistics came closer and FID rose (model card), so it stays off by default.

    The real statistics are fixed (`set_reals`, from a few thousand images). A batch of 8 cannot estimate a 1280-d
    covariance, so the fakes' statistics are running averages (`momentum` per step) and the batch only carries the
    gradient: the loss is taken at the running statistics, with the batch's mean and covariance standing in for them
    in the backward pass (the usual straight-through trick of moving-average moment matching).
    """

    def __init__(self, momentum: float = 0.02):
        super().__init__()
        from engine.models.mobilenet import POOLED_DIM, mobilenet_v2

        self.net = mobilenet_v2(pretrained=True).eval().requires_grad_(False)
        self.momentum = momentum
        d = POOLED_DIM
        for name in ("real_mean", "fake_mean"):
            self.register_buffer(name, torch.zeros(d))
        for name in ("real_cov", "fake_cov"):
            self.register_buffer(name, torch.zeros(d, d))
        self.register_buffer("counts", torch.zeros(2, dtype=torch.long))  # real images, fake images seen

    def train(self, mode: bool = True) -> FeatureMatching:
        return super().train(False)  # BatchNorm keeps its ImageNet statistics

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images [N, 3, H, W] → pooled features [N, 1280], float32, differentiable."""
        from engine.models.frechet import model_input

        return self.net.pooled(model_input(images, images.device)).float()

    @staticmethod
    def _moments(f: torch.Tensor, mean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu = f.mean(dim=0)
        c = f - (mu if mean is None else mean)
        return mu, c.T @ c / max(len(f) - (1 if mean is None else 0), 1)

    @torch.no_grad()
    def set_statistics(self, which: str, features: torch.Tensor) -> None:
        """Set the real ("real") or the running fake ("fake") statistics from features of many images."""
        mean, cov = self._moments(features.float())
        getattr(self, f"{which}_mean").copy_(mean)
        getattr(self, f"{which}_cov").copy_(cov)
        self.counts[0 if which == "real" else 1] = len(features)

    @property
    def ready(self) -> bool:
        return bool((self.counts > 1).all())

    def forward(self, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for a batch of generated images [N, 3, H, W] in [-1, 1]: "fm_mean" (‖Δμ‖²), "fm_cov"
        (‖ΔΣ‖_F²) and "fm" (their sum). Updates the running fake statistics."""
        if not self.ready:
            raise RuntimeError("FeatureMatching needs set_statistics('real', …) and ('fake', …) first")
        f = self.features(fake)
        with torch.autocast(f.device.type, enabled=False):  # a 1280² covariance wants float32, not bf16
            return self._terms(f)

    def _terms(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        # Centred on the running mean, so that a small batch's covariance is not shrunk by its own mean's noise.
        mu_b, cov_b = self._moments(f, self.fake_mean.clone())
        m = self.momentum
        with torch.no_grad():
            self.fake_mean.lerp_(mu_b.detach(), m)
            self.fake_cov.lerp_(cov_b.detach(), m)
            self.counts[1] += len(f)
        mu = self.fake_mean + (mu_b - mu_b.detach())
        cov = self.fake_cov + (cov_b - cov_b.detach())
        dm, dc = mu - self.real_mean, cov - self.real_cov
        terms = {"fm_mean": (dm * dm).sum(), "fm_cov": (dc * dc).sum()}
        terms["fm"] = terms["fm_mean"] + terms["fm_cov"]
        return terms
