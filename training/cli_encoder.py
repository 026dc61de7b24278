"""`main.py train-encoder --model M --out E.safetensors`: train the inversion encoder on generator samples.

Checkpoints (the encoder itself plus E.train.pt with the optimiser state) are written every --checkpoint-every steps
and at the end; --resume continues a run up to --steps in total.
"""

from __future__ import annotations

import sys

from engine.errors import UserError


def add_arguments(p):
    p.add_argument("--model", "-m", default=None,
                   help="generator whose samples teach the encoder (default: the bundled teacher; its students share "
                        "its W space, so the encoder serves them too)")
    p.add_argument("--out", "-o", required=True, help="encoder .safetensors to write (state: OUT stem + .train.pt)")
    p.add_argument("--steps", type=int, default=20000, help="total training steps (default 20000)")
    p.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--data", default=None, help="a folder of face photos mixed into every batch (aligned once, "
                                                "cached next to OUT)")
    p.add_argument("--aligned", action="store_true", help="the --data photos are already aligned crops (e.g. FFHQ)")
    p.add_argument("--resume", action="store_true", help="continue the run saved at OUT")
    p.add_argument("--init", default=None, help="start a new run from this encoder's weights (same layout), e.g. one "
                   "trained for an earlier snapshot of the model")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu or cuda[:N]")
    p.add_argument("--input-size", type=int, default=None,
                   help="encoder input size (default: the resolution, clamped to 128..256)")
    p.add_argument("--hidden", type=int, default=None, help="width of each head's hidden layer (default 256)")
    p.add_argument("--lr", type=float, default=None,
                   help="head learning rate (default 1e-3; backbone 1/10 of it); a resume takes a given one")
    p.add_argument("--latent-weight", type=float, default=None)
    p.add_argument("--pixel-weight", type=float, default=None)
    p.add_argument("--perceptual-weight", type=float, default=None)
    p.add_argument("--perceptual", default=None, choices=["mobilenet_v2", "lpips-vgg"],
                   help="perceptual loss: mobilenet_v2 (default) or lpips-vgg (LPIPS v0.1, the [metrics] extra)")
    p.add_argument("--eval-samples", type=int, default=64, help="held-out samples scored at each checkpoint")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import engine
    from training.encoder import EncoderTrainConfig, train_encoder

    if args.model is None:
        G = engine.load_teacher()
    else:
        G = engine.load_generator(args.model)
    if args.eval_samples < 1:
        raise UserError("--eval-samples must be positive")
    cfg = EncoderTrainConfig(batch=args.batch, seed=args.seed, eval_samples=args.eval_samples)
    changes = {}  # the settings given on this command line: a resumed run takes these and keeps the rest of its own
    if args.lr is not None:
        if args.lr <= 0:
            raise UserError("--lr must be positive")
        changes.update(lr=args.lr, backbone_lr=args.lr / 10)
    for name in ("latent_weight", "pixel_weight", "perceptual_weight"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raise UserError(f"--{name.replace('_', '-')} must be 0 or more")
            changes[name] = value
    for name, value in changes.items():
        setattr(cfg, name, value)
    if args.input_size is not None and not 32 <= args.input_size <= 1024:
        raise UserError("--input-size must be between 32 and 1024")
    if args.aligned and args.data is None:
        raise UserError("--aligned describes the --data folder; give --data too")
    if args.resume and args.init:
        raise UserError("--init starts a new run; a resumed run continues from its own state")
    if args.resume and any(getattr(args, n) is not None for n in ("input_size", "hidden", "perceptual")):
        raise UserError("--input-size, --hidden and --perceptual are fixed when a run starts; drop them with --resume")
    if args.perceptual is not None:
        cfg.perceptual = args.perceptual
    try:
        train_encoder(
            G,
            args.out,
            steps=args.steps,
            batch=args.batch,
            data=args.data,
            aligned=args.aligned,
            resume=args.resume,
            device=args.device,
            checkpoint_every=args.checkpoint_every,
            input_size=args.input_size,
            hidden=args.hidden,
            cfg=None if args.resume else cfg,
            changes=changes,
            init=args.init,
        )
    except KeyboardInterrupt:  # the recipe resumes by itself; this command needs the flag
        print("to continue: the same command with --resume", file=sys.stderr)
        raise
    return 0
