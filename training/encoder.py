"""Training the inversion encoder (engine.models.encoder) self-supervised on generator samples.

Each step draws W+ codes from the mapping network (random truncation ψ, and style mixing so the encoder also sees
codes that differ across layers), renders them, and asks the encoder to recover them from the clamped 8-bit-range
image, the way a user's photo arrives. Three losses:
- latent: MSE between predicted and true codes in units of W's spread (the only term that says *which* codes),
- pixel: MSE between the re-rendered prediction and the sample,
- perceptual: PerceptualLoss between the same two (MobileNetV2 by default, or LPIPS-VGG: cfg.perceptual).
With a folder of photos, part of every batch is real aligned faces: they have no true codes, so they get the pixel
and perceptual terms plus a small pull of the offsets toward w_avg. Without them the encoder only ever sees
generator images and real photos fall off its training distribution.

A run writes the encoder (`E.safetensors`, usable at any time) and its training state (`E.train.pt`: step,
optimiser, random state) at every checkpoint; `resume=True` continues from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.device import pick_device
from engine.errors import NoFaceError, UserError
from engine.io.checkpoints import atomic_write
from engine.io.latents import w_space_id
from engine.models.encoder import Encoder, EncoderConfig, build_encoder, save_encoder
from engine.models.perceptual import PerceptualLoss
from training.runlog import resume_note

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
STATE_SUFFIX = ".train.pt"
EVAL_SEED = 1_000_003  # held-out codes for the evaluation latent loss; training never draws this generator seed


@dataclass
class EncoderTrainConfig:
    batch: int = 8  # images per step (synthetic + real)
    lr: float = 1e-3  # Adam learning rate of the head
    backbone_lr: float = 1e-4  # of the ImageNet backbone: fine-tuned gently so it keeps what ImageNet taught it
    latent_weight: float = 1.0
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual: str = "mobilenet_v2"  # the perceptual loss: mobilenet_v2 or lpips-vgg (LPIPS v0.1, [metrics] extra)
    real_reg_weight: float = 0.01  # pull of real photos' offsets toward w_avg (they have no true codes)
    psi_min: float = 0.5  # truncation ψ drawn uniformly from [psi_min, 1]
    mix_prob: float = 0.5  # share of samples with two codes crossed over at a random layer
    real_fraction: float = 0.5  # share of each batch taken from --data photos, when given
    seed: int = 0
    eval_samples: int = 64  # held-out codes for the evaluation latent loss

    @classmethod
    def from_dict(cls, d: dict) -> EncoderTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def state_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.stem + STATE_SUFFIX)


# ---------------------------------------------------------------------------------------------------------------------
# Real photos


class FaceFolder:
    """Aligned face crops from a folder of photos, for the real-image part of the batches.

    With aligned=False every photo is aligned once (engine.faces, at the generator's resolution) into `cache_dir`,
    so a restart or a resumed run does not align again; photos without a face are skipped and counted.
    With aligned=True the folder already holds aligned crops (e.g. FFHQ) and they are only resized.
    """

    def __init__(self, root, resolution: int, cache_dir=None, aligned: bool = False, progress: bool = True):
        self.root = Path(root)
        self.resolution = int(resolution)
        if not self.root.is_dir():
            raise UserError(f"--data {self.root}: not a folder of photos")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"--data {self.root}: no photos found (JPEG, PNG, WebP or BMP)")
        self.skipped = 0
        if aligned:
            self.files = files
        else:
            if cache_dir is None:
                raise ValueError("cache_dir is needed to align photos")
            self.files = self._align_all(files, Path(cache_dir), progress)
        if not self.files:
            raise UserError(f"--data {self.root}: no face found in any of the {len(files)} photos")

    def _align_all(self, files: list[Path], cache: Path, progress: bool) -> list[Path]:
        from engine.faces import align_face
        from engine.render import save_image

        cache.mkdir(parents=True, exist_ok=True)
        index_path = cache / "index.json"
        try:
            index = json.loads(index_path.read_text()) if index_path.exists() else {}
        except (OSError, json.JSONDecodeError):
            index = {}  # a damaged cache only costs aligning again
        out: list[Path] = []
        changed = 0

        def save_index():
            atomic_write(index_path, lambda tmp: tmp.write_text(json.dumps(index)))

        for f in tqdm(files, desc="aligning photos", unit="photo", disable=not progress):
            st = f.stat()
            key = hashlib.sha1(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
            if key not in index:
                try:
                    crop = align_face(f, size=self.resolution).image
                    save_image(crop, cache / f"{key}.png")
                    index[key] = f"{key}.png"
                except NoFaceError:
                    index[key] = None
                except UserError as e:  # unreadable file: say which and carry on
                    tqdm.write(f"skipping {f}: {e}")
                    index[key] = None
                changed += 1
                if changed % 200 == 0:  # an interrupted first pass keeps what it aligned
                    save_index()
            if index[key] is None:
                self.skipped += 1
            else:
                out.append(cache / index[key])
        if changed:
            save_index()
        return out

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> torch.Tensor:
        from engine.faces import load_image

        img = load_image(self.files[i])
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
        if x.shape[-2:] != (self.resolution, self.resolution):
            shrink = max(x.shape[-2:]) > self.resolution
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return x[0]

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.files), (n,), generator=gen).tolist()
        flip = (torch.rand(n, generator=gen) < 0.5).tolist()
        # A mirrored face is as good a face: doubles the variety of small folders.
        return torch.stack([self.load(i).flip(-1) if f else self.load(i) for i, f in zip(idx, flip)])


# ---------------------------------------------------------------------------------------------------------------------
# The trainer


class EncoderTrainer:
    """One optimisation step at a time: `step()` returns the step's loss terms as floats."""

    def __init__(
        self,
        G,  # the generator whose samples teach the encoder (frozen; moved to `device`)
        encoder: Encoder,  # from engine.models.encoder.build_encoder(G) (or a checkpoint)
        cfg: EncoderTrainConfig | None = None,
        device: torch.device | str = "cpu",
        data: FaceFolder | None = None,  # real aligned faces; None trains on generator samples only
        perceptual: PerceptualLoss | None = None,
    ):
        self.cfg = cfg or EncoderTrainConfig()
        self.device = torch.device(device)
        if encoder.cfg.w_space_id != w_space_id(G):
            raise UserError("the encoder being trained belongs to another model's W space; start a new one")
        self.G = G.eval().requires_grad_(False).to(self.device)
        self.E = encoder.to(self.device).train().requires_grad_(True)
        self.data = data
        if self.cfg.perceptual_weight and perceptual is None:
            perceptual = PerceptualLoss(self.cfg.perceptual)
        self.perceptual = perceptual.to(self.device) if perceptual is not None else None
        backbone = list(self.E.backbone.parameters())
        ids = {id(p) for p in backbone}
        head = [p for p in self.E.parameters() if id(p) not in ids]
        self.opt = torch.optim.Adam(
            [{"params": head, "lr": self.cfg.lr}, {"params": backbone, "lr": self.cfg.backbone_lr}],
            betas=(0.9, 0.99),
        )
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.step_count = 0
        self._eval_ws: torch.Tensor | None = None

    # --- sampling ---

    @torch.no_grad()
    def sample_ws(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        """Codes as the encoder will meet them: random ψ in [psi_min, 1], some mixed across layers."""
        gen = self.gen if gen is None else gen
        G, c = self.G, self.cfg
        z = torch.randn(2 * n, G.z_dim, generator=gen).to(self.device)
        ws = G.mapping(z)
        psi = (c.psi_min + (1 - c.psi_min) * torch.rand(2 * n, 1, 1, generator=gen)).to(self.device)
        ws = G.w_avg + (ws - G.w_avg) * psi
        a, b = ws[:n], ws[n:]
        mix = (torch.rand(n, generator=gen) < c.mix_prob).to(self.device)
        cut = torch.randint(1, G.num_ws, (n,), generator=gen).to(self.device)
        later = torch.arange(G.num_ws, device=self.device)[None, :] >= cut[:, None]
        take_b = (later & mix[:, None])[:, :, None]
        return torch.where(take_b, b, a)

    @torch.no_grad()
    def render(self, ws: torch.Tensor) -> torch.Tensor:
        return self.G.synthesis(ws, noise_mode="const")

    # --- losses ---

    def _image_losses(self, pred_ws: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.G.synthesis(pred_ws, noise_mode="const")
        pixel = (img - target).square().mean()
        if self.perceptual is not None and self.cfg.perceptual_weight:
            perc = self.perceptual(_max256(img), _max256(target)).mean()
        else:
            perc = img.new_zeros(())
        return pixel, perc

    def step(self) -> dict[str, float]:
        c = self.cfg
        n_real = round(c.batch * c.real_fraction) if self.data is not None else 0
        n_real = min(n_real, c.batch - 1)
        n_syn = c.batch - n_real
        ws = self.sample_ws(n_syn)
        target = self.render(ws)
        pred = self.E(target.clamp(-1, 1))
        latent = (self.E.normalized(pred) - self.E.normalized(ws)).square().mean()
        pixel, perc = self._image_losses(pred, target)
        total = c.latent_weight * latent + c.pixel_weight * pixel + c.perceptual_weight * perc
        stats = {"latent": latent.item(), "pixel": pixel.item(), "perceptual": perc.item()}
        if n_real:
            real = self.data.sample(n_real, self.gen).to(self.device)
            pred_r = self.E(real)
            pix_r, perc_r = self._image_losses(pred_r, real)
            reg = self.E.normalized(pred_r).square().mean()
            # Weighted by the real share of the batch, so --data does not change the scale of the loss.
            share = n_real / c.batch
            total = (1 - share) * total + share * (
                c.pixel_weight * pix_r + c.perceptual_weight * perc_r + c.real_reg_weight * reg
            )
            stats.update({"real_pixel": pix_r.item(), "real_perceptual": perc_r.item()})
        if not torch.isfinite(total):
            raise UserError(f"the encoder's loss became {float(total)} at step {self.step_count}; lower --lr")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        self.step_count += 1
        stats["total"] = total.item()
        return stats

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Latent loss on held-out codes (the same ones every time), and the image losses of their predictions."""
        if self._eval_ws is None:
            self._eval_ws = self.sample_ws(self.cfg.eval_samples, torch.Generator().manual_seed(EVAL_SEED))
        self.E.eval()
        try:
            lat, pix, perc, n = 0.0, 0.0, 0.0, 0
            for i in range(0, len(self._eval_ws), 16):
                ws = self._eval_ws[i : i + 16]
                target = self.render(ws)
                pred = self.E(target.clamp(-1, 1))
                k = len(ws)
                lat += float((self.E.normalized(pred) - self.E.normalized(ws)).square().mean()) * k
                p, q = self._image_losses(pred, target)
                pix, perc, n = pix + float(p) * k, perc + float(q) * k, n + k
        finally:
            self.E.train()
        return {"eval_latent": lat / n, "eval_pixel": pix / n, "eval_perceptual": perc / n}

    # --- checkpoints ---

    def state_dict(self) -> dict:
        return {
            "step": self.step_count,
            "encoder_config": self.E.cfg.to_dict(),
            "encoder": {k: v.detach().cpu() for k, v in self.E.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "rng": self.gen.get_state(),
            "train_config": dataclasses.asdict(self.cfg),
        }

    def load_state_dict(self, state: dict) -> None:
        self.E.load_state_dict(state["encoder"])
        self.opt.load_state_dict(state["optimizer"])
        # The saved optimiser carries the rates it was saved with; this run's (a resume's --lr) must win.
        for group, lr in zip(self.opt.param_groups, (self.cfg.lr, self.cfg.backbone_lr)):
            group["lr"] = lr
        self.gen.set_state(state["rng"])
        self.step_count = int(state["step"])

    def save(self, out, info: dict | None = None) -> None:
        """The encoder (`out`) and the state to resume from (`out` with .train.pt), both written atomically."""
        self.E.eval()
        try:
            save_encoder(self.E, out, info={"steps": self.step_count, **(info or {})})
        finally:
            self.E.train()
        state = self.state_dict()
        atomic_write(state_path(out), lambda tmp: torch.save(state, tmp))


def load_state(path) -> dict:
    path = Path(path)
    try:
        # weights_only: the state holds tensors, numbers and strings; never run code from a file.
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"nothing to resume: {path} does not exist; run without --resume to start") from None
    except Exception as e:
        raise UserError(f"{path.name}: damaged training state ({type(e).__name__}: {e})") from None


def _max256(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] > 256:
        return F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
    return x


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warm_start(E: Encoder, path, log=print) -> None:
    """Copy an earlier encoder's weights into E, a fresh encoder for G. Its W statistics stay G's; only the layout must
    match, since the point is to fine-tune for a retrained G (whose W space has another id) rather than start from
    ImageNet."""
    from engine.models.encoder import load_encoder

    prev = load_encoder(path)
    keep = ("num_ws", "w_dim", "resolution", "input_size", "stages", "pool_grid", "hidden", "groups")
    diff = [k for k in keep if getattr(prev.cfg, k) != getattr(E.cfg, k)]
    if diff:
        raise UserError(f"{Path(path).name} does not fit this model's encoder (differs in {', '.join(diff)}); "
                        "train from ImageNet instead (drop --init)")
    state = {k: v for k, v in prev.state_dict().items() if k not in ("w_avg", "w_std")}
    E.load_state_dict(state, strict=False)
    log(f"encoder initialised from {path}")


def train_encoder(
    G,  # generator to learn to invert (a teacher is best: its samples are the sharpest)
    out,  # encoder .safetensors path; the training state goes next to it (.train.pt)
    steps: int = 20000,  # total steps (a resumed run continues up to this count)
    batch: int = 8,
    data=None,  # folder of photos (aligned on first use) or None
    aligned: bool = False,  # the data folder already holds aligned crops
    resume: bool = False,
    device: str | None = None,  # "auto"/None: CUDA when available
    checkpoint_every: int = 1000,
    input_size: int | None = None,  # encoder input size (new runs only); default from the resolution
    hidden: int | None = None,  # head width (new runs only)
    cfg: EncoderTrainConfig | None = None,
    progress: bool = True,
    log=print,
    init=None,  # new runs only: start from this encoder file's weights (e.g. one made for an earlier G snapshot)
    changes: dict | None = None,  # resumed runs: settings that replace the run's own (e.g. a lowered lr)
) -> tuple[Encoder, dict]:
    """Train (or continue training) an encoder for G; returns the encoder and the last evaluation."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"the encoder is saved as .safetensors, not {out.suffix or '(no extension)'}: {out}")
    if steps < 1 or batch < 1 or checkpoint_every < 1:
        raise UserError("--steps, --batch and --checkpoint-every must be positive")
    dev = pick_device(device)
    spath = state_path(out)
    state = None
    if resume:
        state = load_state(spath)
        if state["encoder_config"].get("w_space_id") != w_space_id(G):
            raise UserError(f"{spath.name} was trained for another model (another W space); resume with that model")
        cfg = EncoderTrainConfig.from_dict(state["train_config"])
        if changes:
            saved = dataclasses.asdict(cfg)
            note = resume_note(saved, {**saved, **changes})
            if note:
                log(note)
            cfg = EncoderTrainConfig.from_dict({**saved, **changes})
        if batch != cfg.batch:
            log(f"note: batch {batch} (the run started with {cfg.batch})")
            cfg.batch = batch
        E = Encoder(EncoderConfig.from_dict(state["encoder_config"]), pretrained=False)
    else:
        if spath.exists():
            raise UserError(
                f"{spath} holds an earlier run; pass --resume to continue it, "
                f"or delete it (and {out.name}) to start over"
            )
        cfg = cfg or EncoderTrainConfig(batch=batch)
        cfg.batch = batch
        _seed_everything(cfg.seed)
        extra = {k: v for k, v in {"input_size": input_size, "hidden": hidden}.items() if v is not None}
        E = build_encoder(G, pretrained=init is None, **extra)
        if init is not None:
            warm_start(E, init, log)
        model_name = Path(getattr(G, "source_path", "") or "").name
        E.cfg.info = {"model": model_name, "model_arch": G.cfg.arch, "train_config": dataclasses.asdict(cfg)}

    faces = None
    if data is not None:
        faces = FaceFolder(data, G.resolution, cache_dir=out.with_name(f"{out.stem}.faces-{G.resolution}"),
                           aligned=aligned, progress=progress)
        log(f"{len(faces)} aligned faces from {data}" + (f" ({faces.skipped} without a face skipped)"
                                                         if faces.skipped else ""))
    trainer = EncoderTrainer(G, E, cfg, device=dev, data=faces)
    if state is not None:
        trainer.load_state_dict(state)
        log(f"resuming at step {trainer.step_count} of {steps}")
        if trainer.step_count >= steps:
            log(f"already trained {trainer.step_count} steps; raise --steps to train more")
            return trainer.E.eval(), {}

    log(f"training an encoder on {dev} ({G.cfg.arch} {G.resolution}px, input {E.cfg.input_size}px, batch {cfg.batch}, "
        f"perceptual loss {cfg.perceptual})")
    ema: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    t0 = time.time()
    start = trainer.step_count

    def checkpoint():
        nonlocal last_eval
        last_eval = trainer.evaluate()
        trainer.save(out, info={"eval": {k: round(v, 5) for k, v in last_eval.items()}, "data": str(data or "")})
        if progress:
            summary = ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items())
            tqdm.write(f"step {trainer.step_count}: {summary}; saved {out.name}")

    bar = tqdm(total=steps, initial=start, desc="train encoder", unit="step", disable=not progress)
    # SIGTERM (a scheduler's pre-emption, `kill`) stops like Ctrl-C, but between steps, so the state saved is clean.
    term = {"hit": False}
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, lambda *a: term.update(hit=True))
    try:
        while trainer.step_count < steps:
            if term["hit"]:
                raise KeyboardInterrupt
            stats = trainer.step()
            for k, v in stats.items():
                ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
            bar.update(1)
            bar.set_postfix({k: f"{ema[k]:.3f}" for k in ("latent", "pixel", "perceptual") if k in ema},
                            refresh=False)
            if trainer.step_count % checkpoint_every == 0 and trainer.step_count < steps:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        trainer.save(out)
        log(f"interrupted at step {trainer.step_count}; saved {out} and the state to resume from")
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    bar.close()
    checkpoint()
    rate = (trainer.step_count - start) / max(time.time() - t0, 1e-9)
    log(f"wrote {out} after {trainer.step_count} steps ({rate:.2f} steps/s); "
        + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
    return trainer.E.eval(), last_eval
