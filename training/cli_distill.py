"""`main.py distill`: distil a BlazeStyleGAN student from a StyleGAN2 teacher.

    python main.py distill --teacher ffhq.pkl --out runs/ffhq [--data photos/] [--steps N] [--batch B]
    python main.py distill --out runs/ffhq --resume            # continue after Ctrl-C, kill -9 or a crash
    torchrun --nproc_per_node 8 main.py distill --teacher ffhq.pkl --out runs/ffhq   # DistributedDataParallel

Settings come from the defaults, then a JSON file (--config; a run's own config.json works too), then the flags given
on the command line. With --resume the run's saved settings replace the defaults and the file, and flags given now
(e.g. a larger --steps) still apply on top.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.errors import UserError

# flag → (type, help); the destination is the DistillConfig field of the same name.
_FLAGS: dict[str, tuple] = {
    "--data": (str, "folder of real face images for the adversarial term (default: teacher samples)"),
    "--init": (str, "an earlier student's .safetensors (same layout) to start the synthesis from (default: none)"),
    "--resolution": (int, "student resolution; must equal the teacher's (default: the teacher's)"),
    "--steps": (int, "total training steps"),
    "--batch": (int, "images per step and process"),
    "--lr": (float, "student learning rate"),
    "--seed": (int, "seed of latents, data order and initial weights"),
    "--device": (str, "auto (default: GPU when available), cpu, cuda or cuda:N"),
    "--amp": (str, "mixed precision on GPU: auto (default), off, bf16, fp16"),
    "--perceptual": (str, "perceptual loss: mobilenet_v2 (default), lpips-vgg (LPIPS v0.1, the [metrics] extra) or "
                          "vgg16 (with --vgg)"),
    "--vgg": (str, "torchvision vgg16 weights file; selects the VGG16 perceptual loss"),
    "--perceptual-size": (int, "compare all heads at this size (default: 128 for small heads, up to 256)"),
    "--l1-weight": (float, "weight of the pixel L1 term"),
    "--adv-weight": (float, "adversarial weight after warm-up; 0 turns the discriminator off"),
    "--adv-start": (int, "steps of pure distillation before the adversarial term"),
    "--adv-ramp": (int, "steps over which the adversarial weight ramps up"),
    "--adv-untruncated": (bool, "show D only untruncated fakes, the first half of each batch"),
    "--d-warmup": (int, "steps before --adv-start that train D alone on the student's fakes, the student held "
                   "(for a new D, e.g. after --resume with another --d-width and a later --adv-start)"),
    "--fm-weight": (float, "feature matching: weight of the MobileNetV2 feature mean and covariance of untruncated "
                    "samples against the real images' (--data); 0 = off"),
    "--fm-batch": (int, "untruncated samples per step for feature matching"),
    "--fm-count": (int, "real images whose feature statistics feature matching aims at"),
    "--d-kind": (str, "discriminator: stylegan2 (on pixels; the teacher's when its file has one) or projected "
                  "(heads on a frozen ImageNet MobileNetV2, which learns in hundreds of steps)"),
    "--r1-gamma": (float, "R1 weight (default 0.0002·R²/batch)"),
    "--d-channel-base": (int, "width of a new discriminator: min(BASE / resolution, 512, the teacher's)"),
    "--d-width": (float, "× a new discriminator's widths (at most 512); on --resume a change starts a new one"),
    "--workers": (int, "image-loading processes (default 0 on CPU, 4 on GPU)"),
    "--log-every": (int, "steps per losses.csv row"),
    "--sample-every": (int, "steps between sample grids"),
    "--ckpt-every": (int, "steps between checkpoints"),
    "--keep-every": (int, "also keep the EMA student as student_STEP.safetensors every N steps (0 = only the last)"),
    "--eval-every": (int, "steps between evaluations, 0 = off"),
    "--eval-count": (int, "fixed latents for perceptual distance and PSNR"),
    "--fd-count": (int, "samples for FD-MobileNetV2 (a quick proxy, not FID: main.py eval gives FID) against the "
                        "teacher, 0 = off"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a flag that is not given leaves no attribute, so only what the user typed overrides a config.
    S = argparse.SUPPRESS
    p.add_argument("--teacher", "-t", default=S, help="StyleGAN2 teacher: NVIDIA .pkl, rosinality .pt, .safetensors")
    p.add_argument("--out", "-o", default=S, help="run folder, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--config", default=None, help="JSON file of settings (field names as in the run's config.json)")
    from training.distill import DistillConfig

    defaults = DistillConfig()
    for flag, (typ, help_text) in _FLAGS.items():
        if "default" not in help_text:
            help_text += f" (default {getattr(defaults, flag[2:].replace('-', '_'))})"
        if typ is bool:  # --flag / --no-flag
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=S, help=help_text)
        else:
            p.add_argument(flag, type=typ, default=S, help=help_text)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bar")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def _given(args) -> dict:
    names = ["teacher", "out", "progress"] + [f[2:].replace("-", "_") for f in _FLAGS]
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def build_config(args):
    from training.distill import CONFIG, DistillConfig

    given = _given(args)
    if args.resume and args.config:
        raise UserError("give --resume (the run's own settings) or --config, not both")
    if args.resume:
        if "out" not in given:
            raise UserError("--resume needs --out, the run folder to continue")
        saved = Path(given["out"]) / CONFIG
        if not saved.exists():
            raise UserError(f"{given['out']}: no run to resume (no {CONFIG}); start it without --resume")
        base = DistillConfig.load(saved).to_dict()
    elif args.config:
        base = DistillConfig.load(args.config).to_dict()
    else:
        base = DistillConfig().to_dict()
    if "vgg" in given and "perceptual" not in given:
        given["perceptual"] = "vgg16"
    base.update(given)
    return DistillConfig.from_dict(base)


def run(args) -> int:
    import torch

    from training.distill import Distiller

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(args)
    d = Distiller(cfg, resume=args.resume)
    try:
        if d.env.is_main:
            s, t = d.student, d.teacher
            n = sum(p.numel() for p in s.synthesis.parameters())
            d.log(
                f"distilling {cfg.teacher} ({t.resolution}px StyleGAN2) into a BlazeStyleGAN student "
                f"({n / 1e6:.2f} M synthesis parameters) on {d.device}"
                + (f" × {d.env.world_size} processes" if d.env.distributed else "")
                + (f", resuming at step {d.step}" if args.resume else "")
            )
            d.log(f"run folder {d.out} (settings in config.json); {d.d_origin}")
            if d.D is None and cfg.data:
                d.log(f"note: --data {cfg.data} is unused: real images only feed the adversarial term, which is off "
                      "(--adv-weight 0)")
            if d.D is not None:
                real = cfg.data or "teacher samples"
                d.log(f"adversarial: weight {cfg.adv_weight} from step {cfg.adv_start} (ramp {cfg.adv_ramp}), "
                      f"real images: {real}")
        status = d.run()
    except BaseException:
        d.close(barrier=False)  # other ranks may be gone; just leave the process group
        raise
    d.close()
    if d.env.is_main:
        if status == "stopped":
            print(f"stopped at step {d.step}; checkpoint saved. Continue: main.py distill --out {cfg.out} --resume")
        elif status == "done":
            print(json.dumps({"student": str(d.out / "student.safetensors"), "steps": d.step}))
    return 130 if status == "stopped" else 0
