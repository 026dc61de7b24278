"""Distilling a BlazeStyleGAN student from a StyleGAN2 teacher (Jia et al. 2023).

    z → teacher mapping (frozen) → W+ (style mixing, truncation) ─┬─ teacher synthesis (frozen) → image at 4 … R
                                                                   └─ student synthesis → UpToRGB heads at 8 … R
    loss = Σ_heads [perceptual + L1](student head, teacher image at that size)
         + (after a warm-up) adversarial, the student's image against real photos (--data) or teacher samples

The student carries its teacher's mapping and w_avg unchanged (frozen), so latents, truncation and edits made for the
teacher apply to it. Library use:

    cfg = DistillConfig(teacher="ffhq.pkl", out="runs/ffhq", steps=20000)
    d = Distiller(cfg)            # or Distiller(cfg, resume=True) to continue runs/ffhq/checkpoint.pt
    d.run(1000)                   # 1000 steps (or until cfg.steps); saves a checkpoint when it returns
    d.train_step()                # one step, returns its losses
    d.export()                    # EMA student → runs/ffhq/student.safetensors (engine.load_generator reads it)

`train(cfg)` does all of it. Under `torchrun --nproc_per_node N` the same code runs DistributedDataParallel.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from engine.errors import UserError
from engine.io.checkpoints import (
    atomic_write,
    build_generator,
    file_sha256,
    load_generator,
    read_checkpoint,
    save_generator,
)
from engine.models.frechet import FeatureStats, frechet_distance_from_stats, mobilenet_features
from engine.models.generator import Generator, seeds_to_z
from engine.models.perceptual import BACKBONES as PERCEPTUAL_BACKBONES
from engine.models.perceptual import PerceptualLoss
from engine.render import make_grid, psnr, save_image, to_uint8
from training import distributed
from training.data import ImageStream, LatentSampler, derive_seed
from training.discriminator import (
    DISCRIMINATOR_KINDS,
    DiscriminatorConfig,
    ProjectedConfig,
    ProjectedDiscriminator,
    discriminator_for_teacher,
    discriminator_from_config,
)
from training.loop import StopFlag, ema_update, lazy_r1_step
from training.losses import DistillationLoss, FeatureMatching, discriminator_adversarial, generator_adversarial, resize
from training.runlog import CsvLog, label_columns, plot_losses, resume_note

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
STUDENT = "student.safetensors"
CHECKPOINT_FORMAT = "blazestudio-distill"
CHECKPOINT_VERSION = 1
LOSS_COLUMNS = ["loss", "perceptual", "l1", "g_adv", "fm", "fm_mean", "fm_cov", "d_loss", "r1", "d_real", "d_fake"]
CSV_COLUMNS = ["step", "kimg", "seconds", "img_per_s", *LOSS_COLUMNS, "adv_weight", "grad_norm"]
EVAL_COLUMNS = ["step", "kimg", "perceptual", "psnr_db", "fd_mobilenetv2"]
SAMPLE_SEED0, EVAL_SEED0, FD_SEED0 = 0, 100_000, 200_000


# Settings a resumed run may change without changing what it trains: where it runs, how long, what it writes.
_BOOKKEEPING = {"out", "steps", "init", "device", "workers", "progress", "log_every", "sample_every", "sample_count",
                "ckpt_every", "keep_every", "eval_every", "eval_count", "fd_count"}


class NonFiniteLossError(UserError):
    """A loss or gradient became NaN/inf; the run stopped without saving over the last good checkpoint."""


@dataclass
class DistillConfig:
    """Everything that defines a distillation run; written to `<out>/config.json` and into every checkpoint."""

    # What to distil, and where the run lives
    teacher: str = ""  # teacher checkpoint: NVIDIA .pkl, rosinality .pt or our .safetensors (StyleGAN2)
    out: str = ""  # run folder: config.json, checkpoint.pt, losses.csv/.png, samples/, student.safetensors
    data: str | None = None  # folder of real images for the adversarial term; None: teacher samples are "real"
    resolution: int | None = None  # the student's resolution; must be the teacher's (None: the teacher's)
    student_channels: dict[int, int] | None = None  # feature width per level 4 … R/2; None: the engine's default
    # A warm start: an earlier student's file (the same layout) whose synthesis network starts this run; the mapping
    # always comes from this run's teacher. Its EMA ramp-up is then off (see ema_rampup), and it has no D to give.
    init: str | None = None
    # Schedule
    steps: int = 100_000  # total training steps (a resumed run continues to this many)
    batch: int = 8  # images per step and process
    seed: int = 0
    # Optimisation (student)
    lr: float = 2e-3
    betas: tuple[float, float] = (0.0, 0.99)
    grad_clip: float = 10.0  # max global gradient norm; 0: no clipping
    ema_kimg: float = 10.0  # half-life of the EMA copy, in thousands of images
    ema_rampup: float | None = 0.05  # early on, half-life ≤ this × images seen (None: off)
    amp: str = "auto"  # mixed precision: auto (bf16/fp16 on GPU, off on CPU), off, bf16, fp16
    device: str = "auto"  # auto (GPU when available), cpu, cuda, cuda:N
    # Latents
    mix_prob: float = 0.5  # style-mixing probability
    trunc_prob: float = 0.5  # probability of truncating a sample …
    psi_min: float = 0.5  # … with ψ uniform in [psi_min, 1]
    # Distillation loss
    perceptual: str = "mobilenet_v2"  # backbone: mobilenet_v2 (installed), lpips-vgg (LPIPS v0.1 with its linear
    #                                   layers, the [metrics] extra) or vgg16 (needs `vgg`)
    vgg: str | None = None  # torchvision vgg16 state dict file
    perceptual_size: int | None = None  # compare heads at this size; None: 128 … 256 (see training.losses)
    perceptual_weight: float = 1.0
    l1_weight: float = 1.0
    # Adversarial
    adv_weight: float = 0.05  # weight of the generator's adversarial loss after warm-up; 0: no discriminator
    adv_start: int = 5000  # steps of pure distillation before the adversarial term starts …
    adv_ramp: int = 5000  # … and the steps over which its weight ramps up linearly
    # The faces FID and the real images describe are untruncated; a truncated fake is one D can tell by its closeness
    # to the average, and its adversarial gradient pulls against matching the teacher's truncated face. With this on,
    # the first half of each batch is never truncated and only it is shown to D as fakes.
    adv_untruncated: bool = False
    # A D that is new when the term starts (a warm start from an earlier student, whose D was not kept, or a wider D)
    # tells the student nothing useful at first, and its early gradients undo what the student had learnt. These many
    # steps before adv_start train D alone, on the student's fakes as they are; the student and its EMA stay put.
    # On the demo recipe's student, 800 such steps left D's loss at chance and did not prevent the harm (model card).
    d_warmup: int = 0
    # Feature matching: the mean and covariance of untruncated samples in ImageNet MobileNetV2's pooled features
    # pulled toward the real images' (training.losses.FeatureMatching), a distribution loss with no discriminator.
    # Needs real images (--data, or a real_source). On the demo recipe's student it brought those statistics closer
    # while FID rose (model card); the projected D (d_kind) is what helped there.
    fm_weight: float = 0.0
    fm_batch: int = 8  # untruncated, unmixed samples per step for it (beside the batch)
    fm_count: int = 2048  # real images whose statistics are the target (and fakes that start the running ones)
    fm_momentum: float = 0.02  # the fakes' running statistics move this far toward each batch's
    # stylegan2: StyleGAN2's residual D on pixels (the teacher checkpoint's when it has one, else new). projected:
    # small heads on a frozen ImageNet MobileNetV2 (Sauer et al. 2021), which tells images apart from its first
    # steps, where a new pixel D needs thousands (assets/MODEL_CARD.md); only its heads train.
    d_kind: str = "stylegan2"
    d_lr: float = 2e-3
    d_betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float | None = None  # R1 weight; None: 0.0002 · R² / batch (StyleGAN2-ADA's heuristic)
    d_reg_every: int = 16  # lazy R1: every this many steps
    d_channel_base: int = 8192  # a new D's width at resolution r: min(d_channel_base / r, 512, the teacher's) …
    d_width: float = 1.0  # … times this (at most 512); a resume that changes either starts a new D
    xflip: bool = True  # mirror real images at random
    workers: int | None = None  # image-loading processes; None: 0 on CPU, 4 on GPU
    # Output
    log_every: int = 10  # a losses.csv row (the mean over these steps)
    sample_every: int = 1000  # a sample grid (teacher | student | heads) in samples/
    sample_count: int = 8
    ckpt_every: int = 1000
    keep_every: int = 0  # also keep the EMA student as student_<step>.safetensors every N steps (0: only the last),
    #                      to pick the best by FID afterwards (python -m training.fid_curve)
    eval_every: int = 5000  # 0: no periodic evaluation
    eval_count: int = 64  # fixed latents for perceptual distance and PSNR against the teacher
    fd_count: int = 1000  # samples for FD-MobileNetV2 against teacher samples; 0: skip it
    progress: bool = True  # tqdm bar

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        self.d_betas = tuple(float(b) for b in self.d_betas)
        if self.student_channels is not None:
            self.student_channels = {int(k): int(v) for k, v in self.student_channels.items()}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"], d["d_betas"] = list(self.betas), list(self.d_betas)
        if self.student_channels is not None:
            d["student_channels"] = {str(k): v for k, v in self.student_channels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        if "distill" in d and isinstance(d["distill"], dict):  # a run's config.json
            d = d["distill"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown distillation settings {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def load(cls, path) -> DistillConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read the config file {path}: {e}") from None

    def validate(self) -> None:
        if not self.teacher:
            raise UserError("no teacher given; pass --teacher FILE (an NVIDIA .pkl, rosinality .pt or .safetensors)")
        if not self.out:
            raise UserError("no run folder given; pass --out runs/NAME")
        positive = ("steps", "batch", "log_every", "sample_every", "ckpt_every", "d_reg_every", "sample_count")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("lr", "d_lr", "d_channel_base", "d_width"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("adv_weight", "perceptual_weight", "l1_weight", "grad_clip", "adv_start", "adv_ramp", "d_warmup",
                     "eval_every", "eval_count", "fd_count", "keep_every", "fm_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.d_kind not in DISCRIMINATOR_KINDS:
            raise UserError(f"d_kind must be one of {', '.join(DISCRIMINATOR_KINDS)}, not '{self.d_kind}'")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise UserError(f"amp must be auto, off, bf16 or fp16, not '{self.amp}'")
        if self.perceptual not in PERCEPTUAL_BACKBONES:
            raise UserError(f"unknown perceptual backbone '{self.perceptual}'; choose one of: "
                            f"{', '.join(PERCEPTUAL_BACKBONES)}")
        if self.vgg and self.perceptual != "vgg16":
            raise UserError("a VGG file only applies to the vgg16 perceptual backbone (perceptual='vgg16')")
        if not 0 <= self.psi_min <= 1 or not 0 <= self.mix_prob <= 1 or not 0 <= self.trunc_prob <= 1:
            raise UserError("psi_min, mix_prob and trunc_prob must lie in [0, 1]")
        if self.fm_weight > 0 and (self.fm_batch < 2 or self.fm_count < 2):
            raise UserError("feature matching needs fm_batch and fm_count of at least 2")
        if not 0 < self.fm_momentum <= 1:
            raise UserError(f"fm_momentum must lie in (0, 1], not {self.fm_momentum}")
        if self.fd_count == 1:
            raise UserError("fd_count must be 0 (off) or at least 2")


class _DiscriminatorPhases(nn.Module):
    """One module for DistributedDataParallel to wrap: D on (real) or on (real, fake) in one forward, so each
    backward reduces D's gradients once."""

    def __init__(self, D: nn.Module):
        super().__init__()
        self.D = D

    def forward(self, real: torch.Tensor, fake: torch.Tensor | None = None):
        if fake is None:
            return self.D(real)
        return self.D(fake), self.D(real)


def _d_hyper(cfg: DistillConfig) -> dict:
    """The discriminator's Adam lr and betas. Lazy regularisation: scaled so that the regularised optimiser matches
    the unlazy one."""
    c = cfg.d_reg_every / (cfg.d_reg_every + 1)
    return {"lr": cfg.d_lr * c, "betas": tuple(b**c for b in cfg.d_betas)}


def _set_hyper(opt: torch.optim.Optimizer, lr: float, betas: tuple[float, float]) -> None:
    for group in opt.param_groups:
        group["lr"], group["betas"] = lr, tuple(betas)


def _copy_noise_from_teacher(student: Generator, teacher: Generator) -> None:
    """Give the student the teacher's fixed noise maps at the matching layers (same sizes): its noise strengths start
    at zero and can then learn to use the noise the teacher's images were rendered with."""
    t, s = teacher.synthesis, student.synthesis
    pairs = []
    for r in s.levels:
        if r > 4:
            pairs.append((f"conv{r}a", f"b{r}.conv0"))
        pairs.append((f"conv{r}b", f"b{r}.conv1"))
        pairs.append((f"head{r}", f"b{2 * r}.conv1"))
    with torch.no_grad():
        for s_name, t_name in pairs:
            src = t.get_submodule(t_name).noise_const
            dst = s.get_submodule(s_name).noise_const
            if src.shape == dst.shape:
                dst.copy_(src)


class Distiller:
    """A distillation run: teacher, student (+ EMA), discriminator, optimisers, data, logs and checkpoints."""

    def __init__(self, cfg: DistillConfig, resume: bool = False, real_source=None):
        """`real_source`: optional object whose `next()` returns this rank's next batch of real images
        [batch, 3, R, R] in [-1, 1] for the discriminator, instead of --data or teacher samples; if it has
        `state_dict()`/`load_state_dict()` they are saved in and restored from checkpoints."""
        cfg.validate()
        self.cfg = cfg
        self.env = env = distributed.init(cfg.device)
        self.device = env.device
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / CHECKPOINT
        self.step = 0
        self.elapsed = 0.0  # wall seconds over all segments of the run (steps, samples, evaluations, checkpoints)
        self._step_time = 0.0  # seconds inside train_step since the last losses.csv row (for images/s)
        self.last_good_step: int | None = None
        if resume and not self.ckpt_path.exists():
            raise UserError(f"{self.ckpt_path}: no checkpoint to resume; start the run without --resume")
        if not resume and self.ckpt_path.exists():
            raise UserError(f"{self.out} already holds a run (checkpoint.pt); pass --resume to continue it, "
                            "or choose another --out")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        # The same initial weights on every rank (DDP would broadcast rank 0's anyway).
        torch.manual_seed(derive_seed("init", cfg.seed))

        # Teacher (frozen), loaded once with its extras (an NVIDIA snapshot's discriminator).
        t_cfg, t_state, extras = read_checkpoint(cfg.teacher)
        if t_cfg.arch != "stylegan2":
            raise UserError(f"{cfg.teacher} is a {t_cfg.arch} model; distil from a StyleGAN2 teacher")
        if cfg.resolution not in (None, t_cfg.resolution):
            raise UserError(f"--resolution {cfg.resolution}: the student renders at its teacher's resolution "
                            f"({t_cfg.resolution}); omit --resolution or pass {t_cfg.resolution}")
        # channels_last: the teacher only runs forward, and its convs run ~10% faster so (measured on CPU).
        self.teacher = build_generator(t_cfg, t_state, Path(cfg.teacher).name).to(self.device)
        self.teacher.to(memory_format=torch.channels_last)
        self.teacher_info = {
            "path": str(cfg.teacher),
            "sha256": t_cfg.info.get("source_sha256") or file_sha256(cfg.teacher),
            "resolution": t_cfg.resolution,
            "source": {k: v for k, v in t_cfg.info.items() if k != "teacher"},
        }
        self.resolution = t_cfg.resolution

        # Student: the teacher's mapping and w_avg (frozen) + a fresh BlazeStyleGAN synthesis network.
        overrides = {"channels": cfg.student_channels} if cfg.student_channels else {}
        try:
            s_cfg = t_cfg.student(**overrides)
        except ValueError as e:
            raise UserError(f"student configuration: {e}") from None
        self.student = Generator(s_cfg)
        self.student.mapping.load_state_dict(self.teacher.mapping.state_dict())
        self.student.mapping.requires_grad_(False)
        _copy_noise_from_teacher(self.student, self.teacher)
        if cfg.init and not resume:
            self._warm_start(cfg.init)
        self.student.to(self.device).train()
        self.ema = copy.deepcopy(self.student).eval().requires_grad_(False)

        # Losses
        backbone = "vgg16" if cfg.vgg else cfg.perceptual
        perceptual = PerceptualLoss(backbone=backbone, vgg_path=cfg.vgg, resize=0).to(self.device)
        self.loss = DistillationLoss(perceptual, cfg.perceptual_weight, cfg.l1_weight, cfg.perceptual_size)
        self.opt_G = torch.optim.Adam(self.student.synthesis.parameters(), lr=cfg.lr, betas=cfg.betas, eps=1e-8)

        # Discriminator, only when there is an adversarial term.
        self.D: nn.Module | None = None  # Discriminator or ProjectedDiscriminator
        self.d_origin = "discriminator: none (adversarial weight 0)"
        if cfg.adv_weight > 0:
            # A new D is at most as wide as the teacher, and lighter than StyleGAN2's plan (32768 / r): it only adds
            # a small adversarial term, yet a step runs it about 9 forward passes' worth (G phase, real and fake,
            # backward). At 256 px: 94 GFLOPs per image with 32768 (the teacher renders with 91), 9.8 with 8192.
            if cfg.d_kind == "projected":
                self.D = ProjectedDiscriminator(ProjectedConfig(resolution=self.resolution))
                self.d_origin = "discriminator: projected, new heads on a frozen ImageNet MobileNetV2"
            else:
                d_channels = {r: max(1, min(round(min(c, cfg.d_channel_base // r) * cfg.d_width), 512))
                              for r, c in t_cfg.channels.items()}
                self.D, self.d_origin = discriminator_for_teacher(extras, self.resolution, d_channels,
                                                                  t_cfg.img_channels)
            self.D.to(self.device)
            self.opt_D = self._d_optimiser()
            self.r1_gamma = cfg.r1_gamma if cfg.r1_gamma is not None else 0.0002 * self.resolution**2 / cfg.batch
        del t_state, extras

        # Mixed precision: bf16 where the GPU has it (no loss scaling needed), else fp16 with GradScaler.
        amp = cfg.amp
        if amp == "auto":
            amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if self.device.type == "cuda" else "off"
        self.amp = amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler_G = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.scaler_D = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")

        # Data
        self.latents = LatentSampler(self.teacher.mapping, cfg.seed, env.rank, cfg.mix_prob, cfg.trunc_prob,
                                     cfg.psi_min)
        self.reals = real_source
        if (self.D is not None or cfg.fm_weight > 0) and cfg.data and real_source is None:
            workers = cfg.workers if cfg.workers is not None else (4 if self.device.type == "cuda" else 0)
            self.reals = ImageStream(cfg.data, self.resolution, cfg.batch, cfg.seed, env.rank, env.world_size,
                                     cfg.xflip, workers)

        # Fixed latents for sample grids and evaluation (the same in every run of this teacher).
        with torch.no_grad():
            z = seeds_to_z(range(SAMPLE_SEED0, SAMPLE_SEED0 + cfg.sample_count), t_cfg.z_dim).to(self.device)
            self.sample_ws = self.teacher.mapping(z, psi=0.7)
        self._eval_cache: dict = {}

        self.fm: FeatureMatching | None = None
        if cfg.fm_weight > 0:
            if self.reals is None:
                raise UserError("feature matching (fm_weight) compares with real images: give --data")
            self.fm = FeatureMatching(cfg.fm_momentum).to(self.device)

        if resume:
            self._load_checkpoint()
        self.last_good_step = self.step if resume else None

        # Multi-process: gradients averaged by DDP; buffers (noise maps) never change, so are not synced per forward.
        self.G_train: nn.Module = self.student.synthesis
        self.D_train: nn.Module | None = _DiscriminatorPhases(self.D) if self.D is not None else None
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # The [1, C] weight of D's last layer gets a gradient with a different (equivalent) stride than DDP's
            # bucket view; torch warns about speed on every rank, for a 64-element tensor.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.G_train = DDP(self.student.synthesis, device_ids=ids, forward_sync_buffers=False)
            if self.D_train is not None:
                self.D_train = DDP(self.D_train, device_ids=ids, forward_sync_buffers=False)

        self._acc: dict[str, list[float]] = {}
        self._saved_step = self.step if resume else None
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(f".{CHECKPOINT}.*"):  # a write cut short by kill -9 (the rename never came)
                stale.unlink(missing_ok=True)
            (self.out / "samples").mkdir(exist_ok=True)
            self.write_config()
            self.csv = CsvLog(self.out / "losses.csv", CSV_COLUMNS, resume_step=self.step if resume else -1)
            self.eval_csv = CsvLog(self.out / "eval.csv", EVAL_COLUMNS, resume_step=self.step if resume else -1)

    @torch.no_grad()
    def _fm_statistics(self) -> None:
        """The target (real images) and the starting point of the running fake statistics, for feature matching."""
        cfg, fm = self.cfg, self.fm
        n_batches = math.ceil(cfg.fm_count / cfg.batch)
        feats = [fm.features(self.reals.next().to(self.device))
                 for _ in tqdm(range(n_batches), desc="feature matching: real images", disable=not cfg.progress)]
        fm.set_statistics("real", torch.cat(feats)[: cfg.fm_count])
        g = torch.Generator().manual_seed(derive_seed("fm start", cfg.seed, self.env.rank))
        feats = []
        for i in tqdm(range(0, cfg.fm_count, 64), desc="feature matching: samples", disable=not cfg.progress):
            z = torch.randn(min(64, cfg.fm_count - i), self.teacher.mapping.z_dim, generator=g).to(self.device)
            feats.append(fm.features(self.ema.synthesis(self.teacher.mapping(z), noise_mode="const")))
        fm.set_statistics("fake", torch.cat(feats))

    def _warm_start(self, path: str) -> None:
        """The student's synthesis from an earlier student's file. Read before the run folder is made, so that a
        wrong file leaves nothing behind."""
        prev = load_generator(path)
        if not prev.is_student:
            raise UserError(f"--init {path}: a teacher (StyleGAN2), not a student; give an earlier student's file")
        try:
            self.student.synthesis.load_state_dict(prev.synthesis.state_dict())
        except RuntimeError:
            raise UserError(f"--init {path}: a student of another layout (channels {prev.cfg.channels}) than "
                            f"this run's ({self.student.cfg.channels})") from None
        # The ramp-up shortens the EMA's half-life to a twentieth of the images seen, which suits a new student; a
        # warm-started one is not new, and with the ramp its EMA copy would be the raw generator for thousands of
        # steps (FID 32.3 → 46.2 after 500 steps of the bundled student, measured). Recorded in config.json, so a
        # resume keeps it.
        self.cfg.ema_rampup = None
        self.log(f"student synthesis initialised from {path}")

    def _d_optimiser(self) -> torch.optim.Optimizer:
        # Only what trains: a projected D's backbone is frozen.
        return torch.optim.Adam([p for p in self.D.parameters() if p.requires_grad], **_d_hyper(self.cfg), eps=1e-8)

    # -----------------------------------------------------------------------------------------------------------------
    # Run description

    def run_config(self) -> dict:
        """The full record of this run: settings, resolved choices and provenance."""
        return {
            "distill": self.cfg.to_dict(),
            "student": self.student.cfg.to_dict(),
            "teacher": self.teacher_info,
            "perceptual": {
                **self.loss.perceptual.config,
                "head_sizes": {str(2 * r): self.loss.size_for(2 * r) for r in self.student.synthesis.levels},
                "weight": self.cfg.perceptual_weight,
                "l1_weight": self.cfg.l1_weight,
            },
            "discriminator": self.D.cfg.to_dict() if self.D is not None else None,
            "discriminator_origin": self.d_origin,
            "r1_gamma": getattr(self, "r1_gamma", None),
            "amp": self.amp,
            "device": str(self.device),
            "world_size": self.env.world_size,
            "global_batch": self.cfg.batch * self.env.world_size,
            "real_images": self._describe_reals(),
            "torch": torch.__version__,
        }

    def _describe_reals(self) -> str | None:
        if self.D is None:
            return None
        if isinstance(self.reals, ImageStream):
            return f"{self.cfg.data} ({len(self.reals)} images)"
        if self.reals is not None:
            return getattr(self.reals, "description", type(self.reals).__name__)
        return "teacher samples"

    def write_config(self) -> None:
        text = json.dumps(self.run_config(), indent=1, sort_keys=False)
        atomic_write(self.out / CONFIG, lambda tmp: tmp.write_text(text + "\n"))

    def log(self, msg: str) -> None:
        if self.env.is_main:
            tqdm.write(msg)

    # -----------------------------------------------------------------------------------------------------------------
    # One step

    def adv_weight_at(self, step: int) -> float:
        if self.D is None or step < self.cfg.adv_start:
            return 0.0
        ramp = max(1, self.cfg.adv_ramp)
        return self.cfg.adv_weight * min(1.0, (step - self.cfg.adv_start + 1) / ramp)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _agree(self, values: dict[str, torch.Tensor | float], stop: bool = False) -> tuple[dict[str, float], bool]:
        """Average scalars over ranks (one collective), stop with NonFiniteLossError if any is NaN/inf; also tell
        whether any rank asked to stop."""
        names = list(values)
        t = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device).detach().reshape(())
                         for v in values.values()] + [torch.tensor(float(stop), device=self.device)])
        t = distributed.all_reduce_sum(t, self.env).cpu()
        n = self.env.world_size
        out = {k: float(v) / n for k, v in zip(names, t[:-1])}
        bad = [k for k, v in out.items() if not math.isfinite(v)]
        if bad:
            self._fail_nonfinite(bad[0], out[bad[0]])
        return out, bool(t[-1] > 0)

    def _fail_nonfinite(self, term: str, value: float) -> None:
        if self.last_good_step is not None:
            kept = f"the last good checkpoint (step {self.last_good_step}) is kept in {self.ckpt_path}"
        else:
            kept = "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"{term} became {value} at step {self.step}; the run stopped and {kept}. Lower --lr (or the adversarial "
            "weight) and continue with --resume"
        )

    def _optimise(self, loss, opt, scaler, params, term: str) -> float | None:
        """Backward, unscale, clip, step. Returns the gradient norm (None for an fp16 step the scaler skipped)."""
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not scaler.is_enabled() and not torch.isfinite(norm):
            self._fail_nonfinite(f"the {term} gradient", float(norm))
        scaler.step(opt)  # an fp16 step with inf/NaN gradients is skipped by the scaler
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return float(norm) if torch.isfinite(norm) else None

    def d_warming_at(self, step: int) -> bool:
        """Whether `step` is one of the discriminator's warm-up steps (D trains, the student does not)."""
        return self.D is not None and step < self.cfg.adv_start <= step + self.cfg.d_warmup

    def train_step(self, stop_requested: bool = False) -> dict[str, float]:
        """One optimisation step of the student (and the discriminator once the adversarial term is on, or of the
        discriminator alone during its warm-up). Returns the step's losses averaged over ranks; "stop" is 1.0 when
        any rank asked to stop."""
        cfg, step = self.cfg, self.step
        untruncated = max(1, cfg.batch // 2) if self.D is not None and cfg.adv_untruncated else 0
        n_fake = untruncated or cfg.batch  # D's fakes: the untruncated ones when asked, else the whole batch
        ws = self.latents.sample(cfg.batch, step, self.device, untruncated=untruncated)
        warming = self.d_warming_at(step)
        n_fm = cfg.fm_batch if self.fm is not None and not warming else 0
        if n_fm and not self.fm.ready:  # the first such step (a resume brings them back from the checkpoint)
            self._fm_statistics()
        if n_fm:  # one forward pass for both (DistributedDataParallel expects one per backward)
            ws = torch.cat([ws, self.latents.plain(n_fm, step, self.device)])
        with torch.no_grad():
            teacher = {im.shape[-1]: im for im in self.teacher.synthesis(ws[: cfg.batch], noise_mode="const",
                                                                         return_aux=True)}
        adv_w = self.adv_weight_at(step)
        logs: dict[str, torch.Tensor | float] = {}

        # Student (during D's warm-up only its losses are measured, for the log)
        with self._autocast(), torch.no_grad() if warming else nullcontext():
            heads = self.G_train(ws, noise_mode="const", return_aux=True)
            if n_fm:
                fm_images = heads[-1][cfg.batch:]
                heads = [h[: cfg.batch] for h in heads]
            terms = self.loss(heads, teacher)
            loss = terms["distill"]
            if n_fm:
                fm_terms = self.fm(fm_images)
                loss = loss + cfg.fm_weight * fm_terms["fm"]
                logs.update(fm_terms)
            if adv_w > 0:
                self.D.requires_grad_(False)
                g_adv = generator_adversarial(self.D(heads[-1][:n_fake]))
                loss = loss + adv_w * g_adv
                logs["g_adv"] = g_adv
        logs.update(loss=loss, perceptual=terms["perceptual"], l1=terms["l1"])
        values, stop = self._agree(logs, stop_requested)
        if not warming:
            grad_norm = self._optimise(loss, self.opt_G, self.scaler_G, self.student.synthesis.parameters(), "student")
            if grad_norm is not None:
                values["grad_norm"] = grad_norm
        values["adv_weight"] = adv_w

        # Discriminator
        if adv_w > 0 or warming:
            self.D.requires_grad_(True)
            real = self.reals.next().to(self.device, non_blocking=True) if self.reals is not None else teacher[
                self.resolution]
            with self._autocast():
                fake_logits, real_logits = self.D_train(real, heads[-1][:n_fake].detach())
                d_loss = discriminator_adversarial(fake_logits, real_logits)
            d_vals, _ = self._agree({"d_loss": d_loss, "d_real": real_logits.float().mean(),
                                     "d_fake": fake_logits.float().mean()})
            self._optimise(d_loss, self.opt_D, self.scaler_D, self.D.parameters(), "discriminator")
            values.update(d_vals)
            if step % cfg.d_reg_every == 0:
                r1 = lazy_r1_step(self.D_train, self.D.parameters(), self.opt_D, real, self.r1_gamma,
                                  cfg.d_reg_every, clip=cfg.grad_clip)
                r1_vals, _ = self._agree({"r1": r1})
                values.update(r1_vals)

        if not warming:
            self._update_ema()
        self.step += 1
        values["stop"] = float(stop)
        return values

    @torch.no_grad()
    def _update_ema(self) -> None:
        cfg = self.cfg
        batch = cfg.batch * self.env.world_size
        half_life = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            half_life = min(half_life, (self.step + 1) * batch * cfg.ema_rampup)
        ema_update(self.ema.synthesis, self.student.synthesis, 0.5 ** (batch / max(half_life, 1e-8)))

    # -----------------------------------------------------------------------------------------------------------------
    # The loop

    def run(self, steps: int | None = None) -> str:
        """Train `steps` more steps (default: until cfg.steps). Returns "done" (cfg.steps reached: checkpoint and
        student.safetensors written), "paused" (steps done, checkpoint written) or "stopped" (a signal; checkpoint
        written)."""
        cfg, env = self.cfg, self.env
        end = cfg.steps if steps is None else min(cfg.steps, self.step + steps)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="distill", unit="step", dynamic_ncols=True,
                   disable=not (env.is_main and cfg.progress))
        status = "paused"
        t_last = time.perf_counter()
        try:
            with StopFlag(self.log) as stop:
                while self.step < end:
                    t0 = time.perf_counter()
                    values = self.train_step(stop.requested)
                    self._step_time += time.perf_counter() - t0
                    self._accumulate(values)
                    bar.update(1)
                    if env.is_main and cfg.progress:
                        bar.set_postfix_str(self._postfix(values), refresh=False)
                    self._periodic()
                    now = time.perf_counter()
                    self.elapsed += now - t_last
                    t_last = now
                    if values["stop"]:
                        status = "stopped"
                        break
        finally:
            bar.close()
        if self.step >= cfg.steps:
            status = "done"
        self.elapsed += time.perf_counter() - t_last
        self._flush_log()
        if self._saved_step != self.step:
            self.save_checkpoint()
        if env.is_main:
            self.plot()
            if status == "done":
                if self.step % cfg.sample_every:
                    self.save_samples()
                if cfg.eval_every and self.step % cfg.eval_every:
                    self.log_eval(self.evaluate())
                path = self.export()
                self.log(f"student: {path}")
        return status

    def _postfix(self, v: dict) -> str:
        parts = [f"loss {v['loss']:.3f}", f"perc {v['perceptual']:.3f}", f"l1 {v['l1']:.3f}"]
        if "g_adv" in v:
            parts.append(f"adv {v['g_adv']:.2f}")
        if "fm" in v:
            parts.append(f"fm {v['fm']:.1f}")
        if "d_loss" in v:
            parts.append(f"D {v['d_loss']:.2f}")
        return " ".join(parts)

    def _accumulate(self, values: dict) -> None:
        for k, v in values.items():
            self._acc.setdefault(k, []).append(v)

    def _flush_log(self) -> None:
        if not self._acc:
            return
        acc, self._acc = self._acc, {}
        if not self.env.is_main:
            return
        n = len(acc["loss"])
        seconds, self._step_time = self._step_time, 0.0
        row = {k: float(np.mean(v)) for k, v in acc.items() if k != "stop"}
        row.update(
            step=self.step,
            kimg=self.step * self.cfg.batch * self.env.world_size / 1000,
            seconds=round(self.elapsed, 2),
            img_per_s=n * self.cfg.batch * self.env.world_size / max(seconds, 1e-9),
        )
        self.csv.append(row)

    def _periodic(self) -> None:
        cfg, s = self.cfg, self.step
        if s % cfg.log_every == 0:
            self._flush_log()
        if self.env.is_main and s % cfg.sample_every == 0:
            self.save_samples()
            self.plot()
        if cfg.eval_every and s % cfg.eval_every == 0 and self.env.is_main:
            self.log_eval(self.evaluate())
        if cfg.keep_every and s % cfg.keep_every == 0 and self.env.is_main:
            self.export(self.out / f"student_{s:06d}.safetensors")
        if s % cfg.ckpt_every == 0 and s < cfg.steps:
            self.save_checkpoint()

    # -----------------------------------------------------------------------------------------------------------------
    # Checkpoints

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: plain tensors, dicts, lists, numbers and strings, so that
        `torch.load(weights_only=True)` reads it."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "elapsed": self.elapsed,
            "config": self.cfg.to_dict(),
            "student_config": self.student.cfg.to_dict(),
            "teacher": self.teacher_info,
            "student": self.student.state_dict(),
            "ema": self.ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "scaler_G": self.scaler_G.state_dict(),
            "D": None,
            "rng": {"torch": torch.get_rng_state()},
            # The latent and image streams are counter-based (training.data): the step and the number of image
            # batches taken are their whole state.
            "data": self.reals.state_dict() if hasattr(self.reals, "state_dict") else None,
            "fm": {k: v for k, v in self.fm.state_dict().items() if not k.startswith("net.")} if self.fm else None,
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.D is not None:
            state.update(D=self.D.state_dict(), D_config=self.D.cfg.to_dict(), opt_D=self.opt_D.state_dict(),
                         scaler_D=self.scaler_D.state_dict())
        return state

    def save_checkpoint(self) -> Path:
        """Atomically replace `<out>/checkpoint.pt` (rank 0 writes; all ranks must call it)."""
        self._check_in_sync()
        if self.env.is_main:
            state = self.state_dict()
            atomic_write(self.ckpt_path, lambda tmp: torch.save(state, tmp))
        self.last_good_step = self._saved_step = self.step
        return self.ckpt_path

    def _check_in_sync(self) -> None:
        """Under DDP every rank must hold the same weights; if they drifted the checkpoint would be a lie."""
        if not self.env.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            f = [sum(p.double().sum() for p in self.student.synthesis.parameters())]
            if self.D is not None:
                f.append(sum(p.double().sum() for p in self.D.parameters()))
            hi = torch.stack(f).to(self.device)
            lo = hi.clone()
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        if not torch.allclose(hi, lo, rtol=1e-9, atol=1e-6):
            raise RuntimeError(f"ranks disagree on the weights at step {self.step} ({hi.tolist()} vs {lo.tolist()})")

    def _load_checkpoint(self) -> None:
        try:
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated/corrupt: atomic writes make this unlikely, but say so clearly
            raise UserError(f"{self.ckpt_path}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{self.ckpt_path}: not a distillation checkpoint")
        saved = dict(state["student_config"], info={})
        if saved != dict(self.student.cfg.to_dict(), info={}):
            raise UserError(f"{self.ckpt_path}: the checkpoint's student differs from this configuration "
                            "(another teacher or student widths?)")
        if state["teacher"]["sha256"] != self.teacher_info["sha256"]:
            raise UserError(f"{self.ckpt_path}: the run was trained from another teacher file "
                            f"(sha256 {state['teacher']['sha256'][:12]}…, now {self.teacher_info['sha256'][:12]}…)")
        # A setting added since the run began is one it ran with at its default; comparing against that says when a
        # resume turns it on.
        saved_cfg = {**DistillConfig().to_dict(), **(state.get("config") or {})}
        note = resume_note(saved_cfg, self.cfg.to_dict(), _BOOKKEEPING)
        if note:
            self.log(note)
        self.student.load_state_dict(state["student"])
        self.ema.load_state_dict(state["ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        # An optimiser's state carries the learning rate it was saved with; a resume with a lowered --lr must train at
        # the lowered one (resume_note above promised it), so this run's settings win over the saved ones.
        _set_hyper(self.opt_G, lr=self.cfg.lr, betas=self.cfg.betas)
        self.scaler_G.load_state_dict(state["scaler_G"])
        # Another width asked for (one the teacher's cap does not undo): the run's D cannot serve, so the new one built
        # above stays and learns from here.
        d_resized = [f"{k} {saved_cfg[k]} → {getattr(self.cfg, k)}" for k in ("d_channel_base", "d_width")
                     if saved_cfg.get(k) != getattr(self.cfg, k)]
        if self.D is not None:
            saved_d = state["D_config"] if state.get("D") is not None else None
            saved_kind = saved_d.get("kind", "stylegan2") if saved_d else None
            if saved_d and saved_kind != self.cfg.d_kind:
                self.d_origin = f"discriminator: new ({self.cfg.d_kind}; the run's was {saved_kind})"
            elif (saved_d and saved_kind == "stylegan2" and d_resized and self.D.cfg.source == "new"
                  and (saved_channels := DiscriminatorConfig(**saved_d).channels) != self.D.cfg.channels):
                self.d_origin = (f"discriminator: new, randomly initialised ({', '.join(d_resized)}; the run's was "
                                 f"{saved_channels}, now {self.D.cfg.channels})")
            elif saved_d:
                if saved_d != self.D.cfg.to_dict():
                    self.D = discriminator_from_config(saved_d).to(self.device)
                    self.opt_D = self._d_optimiser()
                self.D.load_state_dict(state["D"])
                self.opt_D.load_state_dict(state["opt_D"])
                _set_hyper(self.opt_D, **_d_hyper(self.cfg))
                self.scaler_D.load_state_dict(state["scaler_D"])
                self.d_origin = f"discriminator: from the checkpoint ({self.D.cfg.source} at first)"
        if hasattr(self.reals, "load_state_dict") and state.get("data"):
            self.reals.load_state_dict(state["data"])
        if self.fm is not None and state.get("fm"):  # else computed afresh (feature matching turned on by the resume)
            self.fm.load_state_dict(state["fm"], strict=False)
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))

    # -----------------------------------------------------------------------------------------------------------------
    # What people look at

    @torch.no_grad()
    def save_samples(self, path=None) -> Path:
        """Grid, one row per fixed latent: teacher | student (EMA) | the student's smaller heads, upscaled."""
        ws = self.sample_ws
        teacher = self.teacher.synthesis(ws, noise_mode="const")
        heads = self.ema.synthesis(ws, noise_mode="const", return_aux=True)
        R = self.resolution
        cols = [teacher, heads[-1]] + [torch.nn.functional.interpolate(h, size=(R, R), mode="nearest")
                                       for h in heads[:-1]]
        tiles = torch.stack(cols, dim=1).flatten(0, 1)  # row-major: sample i's columns together
        grid = make_grid(to_uint8(tiles), cols=len(cols))
        labels = ["teacher", "student"] + [f"head {h.shape[-1]}" for h in heads[:-1]]
        grid = label_columns(grid, labels, R)
        path = Path(path) if path else self.out / "samples" / f"step-{self.step:07d}.png"
        save_image(grid, path)
        return path

    def plot(self) -> Path | None:
        return plot_losses(self.out / "losses.csv", self.out / "losses.png", LOSS_COLUMNS,
                           title=f"{self.out.name}: distillation losses")

    def _eval_teacher(self):
        """Teacher images for the eval latents and the teacher's FD-MobileNetV2 statistics, computed once."""
        if self._eval_cache:
            return self._eval_cache
        cfg, T = self.cfg, self.teacher
        bs = max(1, cfg.batch * 2)
        if cfg.eval_count:
            z = seeds_to_z(range(EVAL_SEED0, EVAL_SEED0 + cfg.eval_count), T.z_dim).to(self.device)
            ws = T.mapping(z)
            self._eval_cache["ws"] = ws
            self._eval_cache["teacher"] = torch.cat([T.synthesis(ws[i : i + bs]) for i in range(0, len(ws), bs)])
        if cfg.fd_count:
            z = seeds_to_z(range(FD_SEED0, FD_SEED0 + cfg.fd_count), T.z_dim)
            self._eval_cache["fd_z"] = z
            feats = mobilenet_features(self._render(T, z, bs), device=self.device, progress=False)
            self._eval_cache["fd_teacher"] = FeatureStats.from_features(feats)
        return self._eval_cache

    def _render(self, G, z, bs):
        for i in range(0, len(z), bs):
            yield G.synthesis(G.mapping(z[i : i + bs].to(self.device)), noise_mode="const")

    @torch.no_grad()
    def evaluate(self, use_ema: bool = True) -> dict:
        """Student vs teacher on fixed latents: mean perceptual distance (the training backbone, at the training
        size), PSNR, and FD-MobileNetV2 against teacher samples (a Fréchet distance on MobileNetV2 features, not
        FID)."""
        G = self.ema if use_ema else self.student
        was_training = G.training
        G.eval()
        cache = self._eval_teacher()
        cfg, bs = self.cfg, max(1, self.cfg.batch * 2)
        out = {"step": self.step, "kimg": self.step * cfg.batch * self.env.world_size / 1000}
        if cfg.eval_count:
            ws, t_all = cache["ws"], cache["teacher"]
            perc, ps = [], []
            size = self.loss.size_for(self.resolution)
            for i in range(0, len(ws), bs):
                s, t = G.synthesis(ws[i : i + bs]), t_all[i : i + bs]
                perc.append(self.loss.perceptual(resize(s, size), resize(t, size)).float())
                ps.append(psnr(s, t, per_sample=True))
            out["perceptual"] = float(torch.cat(perc).mean())
            out["psnr_db"] = float(torch.cat(ps).mean())
        if cfg.fd_count:
            feats = mobilenet_features(self._render(G, cache["fd_z"], bs), device=self.device, progress=False)
            # eigh, not scipy's sqrtm: the same value here in ~1 s instead of ~30 s for 1280×1280 on a CPU.
            out["fd_mobilenetv2"] = frechet_distance_from_stats(FeatureStats.from_features(feats), cache["fd_teacher"],
                                                                method="eigh")
        G.train(was_training)
        return out

    def log_eval(self, metrics: dict) -> None:
        if not self.env.is_main:
            return
        self.eval_csv.append(metrics)
        parts = [f"step {metrics['step']}"]
        if "perceptual" in metrics:
            parts += [f"perceptual {metrics['perceptual']:.4f}", f"PSNR {metrics['psnr_db']:.2f} dB"]
        if "fd_mobilenetv2" in metrics:
            parts.append(f"FD-MobileNetV2 {metrics['fd_mobilenetv2']:.2f} (a quick proxy, not FID; "
                         f"{self.cfg.fd_count} vs teacher samples)")
        self.log("eval (EMA student vs teacher): " + ", ".join(parts))

    def export(self, path=None) -> Path:
        """Write the EMA student as one `.safetensors` that engine.load_generator reads (default: in the run folder)."""
        G = copy.deepcopy(self.ema).cpu()
        info = {
            "teacher": self.teacher_info,
            "distill": {"run": str(self.out), "step": self.step, "weights": "ema",
                        "kimg": self.step * self.cfg.batch * self.env.world_size / 1000,
                        "perceptual": self.loss.perceptual.name, "adversarial": self.D is not None},
        }
        return save_generator(G, Path(path) if path else self.out / STUDENT, info=info)

    def close(self, barrier: bool = True) -> None:
        """Leave the process group (multi-process runs); `barrier` waits for the other ranks first."""
        if barrier:
            distributed.barrier(self.env)
        distributed.shutdown(self.env)


def train(cfg: DistillConfig, resume: bool = False) -> Path | None:
    """Run (or continue) a distillation to cfg.steps; returns the exported student's path (None if stopped early)."""
    d = Distiller(cfg, resume=resume)
    try:
        status = d.run()
    except BaseException:
        d.close(barrier=False)
        raise
    d.close()
    return d.out / STUDENT if status == "done" else None


__all__ = ["DistillConfig", "Distiller", "NonFiniteLossError", "train"]
