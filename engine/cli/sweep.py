"""`main.py sweep`: a video (.mp4) or GIF of one slider swept across a range — what users share."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from engine.cli.common import add_model_argument, load_model
from engine.errors import UserError


def add_arguments(p):
    # Let `--range -3:3` read as a value, not as an unknown option (argparse only knows plain negative numbers).
    if hasattr(p, "_negative_number_matcher"):
        p._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-[\d.]+:-?[\d.]+$")
    add_model_argument(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seed", type=int, help="the seed to edit")
    src.add_argument("--latent", help="a latent .npz to edit")
    p.add_argument("--index", type=int, default=0, help="which latent of a file holding several (default 0)")
    p.add_argument("--psi", type=float, default=None, help="truncation ψ (default 0.7 for a seed, 1 for a latent)")
    p.add_argument("--directions", default=None, help="direction set .npz (default: the bundled one)")
    p.add_argument("--edit", required=True, help="the direction to sweep")
    p.add_argument("--range", default=None, metavar="LO:HI", help="amounts to sweep (default: the slider's range)")
    p.add_argument("--layers", default=None, help="W+ layers a-b to edit (default: the direction's)")
    p.add_argument("--lock", action="append", default=[], metavar="ATTRS",
                   help="hold these attributes still while sweeping, e.g. yaw,pitch (fitted boundaries needed)")
    p.add_argument("--also", action="append", default=[], metavar="NAME=AMOUNT",
                   help="a fixed edit applied to every frame (repeatable)")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--bounce", action="store_true", help="sweep there and back (frames counts the whole loop)")
    p.add_argument("--compare", default=None, metavar="MODEL",
                   help="a second model with the same W space (e.g. the teacher) rendered beside the first")
    p.add_argument("--size", type=int, default=None, help="output height in pixels (default: the model's)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", "-o", required=True, help="sweep.mp4 or sweep.gif")


def _parse_range(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(lo), float(hi)
    except ValueError:
        raise UserError(f"bad --range {text!r}; use LO:HI, e.g. -3:3") from None


def run(args) -> int:
    from engine.assets import DIRECTIONS
    from engine.edit.layers import parse_layers
    from engine.edit.ops import apply_edits, parse_locks, resolve_edits
    from engine.edit.sweep import alphas_for, render_sweep, write_video
    from engine.io.directions import load_directions
    from engine.io.latents import load_latent, same_w_space
    from engine.models.generator import seeds_to_z
    from engine.runtime import prepare_for_cpu

    G = prepare_for_cpu(load_model(args.model))
    models = [G]
    if args.compare:
        H = prepare_for_cpu(load_model(args.compare))
        if not same_w_space(G, H):
            raise UserError(f"{Path(args.compare).name} has another W space than the model; compare a student "
                            "with its own teacher")
        models.append(H)
    path = args.directions or (DIRECTIONS if DIRECTIONS.exists() else None)
    if path is None:
        raise UserError("give --directions FILE.npz (make one with: main.py directions --out FILE.npz)")
    dset = load_directions(path, G)
    d = dset[args.edit]
    layers = parse_layers(args.layers, G.num_ws, default=d.layers)
    lo, hi = _parse_range(args.range) if args.range else d.slider
    alphas = alphas_for(lo, hi, args.frames, args.bounce)

    if args.latent:
        ws, _ = load_latent(args.latent, G)
        if not 0 <= args.index < len(ws):
            raise UserError(f"{Path(args.latent).name} holds {len(ws)} latent(s); --index {args.index} is out of range")
        ws = G.mapping.truncate(ws[args.index : args.index + 1], 1.0 if args.psi is None else args.psi)
    else:
        ws = G.mapping(seeds_to_z([args.seed], G.z_dim), psi=0.7 if args.psi is None else args.psi)
    locks = parse_locks(args.lock)
    ws = apply_edits(ws, resolve_edits(args.also, dset, G.num_ws, locks))
    if locks:
        from engine.edit.labelled import boundaries_for, lock

        d = lock(d, boundaries_for(dset, locks))
    batch = torch.cat([apply_edits(ws, [(d, float(a), layers)]) for a in alphas])

    bar = tqdm(total=len(batch), desc="sweep", unit="frame")
    frames = render_sweep(models, batch, batch=args.batch, on_batch=lambda done, total: bar.update(done - bar.n))
    bar.close()
    if args.size and args.size != frames[0].shape[0]:
        h, w = frames[0].shape[:2]
        size = (max(2, round(w * args.size / h)), args.size)
        frames = [np.asarray(Image.fromarray(f).resize(size, Image.LANCZOS)) for f in frames]
    write_video(frames, args.out, args.fps)
    print(f"wrote {args.out}: {len(frames)} frames of '{d.name}' from {lo:+.2f} to {hi:+.2f} on layers "
          f"{layers[0]}-{layers[1]} ({frames[0].shape[1]}x{frames[0].shape[0]})")
    return 0
