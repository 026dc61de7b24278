"""`main.py generate`: render seeds (or a latent file) to an image grid."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from engine.cli.common import add_direction_arguments, add_model_argument, load_model
from engine.errors import UserError
from engine.io.latents import load_latent, save_latent
from engine.models.generator import seeds_to_z
from engine.render import make_grid, parse_seeds, save_image, to_uint8


def add_arguments(p):
    add_model_argument(p)
    p.add_argument("--seeds", default=None, help="seeds, e.g. '0-15' or '1,4,9' (default 0-15 without --latent)")
    p.add_argument("--latent", default=None, help="a latent .npz to render instead of seeds")
    p.add_argument(
        "--psi", type=float, default=None, help="truncation ψ (1 = none; default 0.7 for seeds, 1 for a latent)"
    )
    p.add_argument("--cutoff", type=int, default=None, help="truncate only the first CUTOFF ws")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--cols", type=int, default=None, help="grid columns")
    p.add_argument("--out", "-o", required=True, help="output PNG (a grid when several images)")
    p.add_argument("--ws-out", default=None, help="also save the W+ latents to this .npz")
    p.add_argument("--batch", type=int, default=8)
    add_direction_arguments(p)


def run(args) -> int:
    G = load_model(args.model)
    meta = {}
    if args.latent:
        if args.seeds:
            raise UserError("give --seeds or --latent, not both")
        ws, _ = load_latent(args.latent, G)
        ws = G.mapping.truncate(ws, 1.0 if args.psi is None else args.psi, args.cutoff)
    else:
        seeds = parse_seeds(args.seeds or "0-15")
        psi = 0.7 if args.psi is None else args.psi
        z = seeds_to_z(seeds, G.z_dim)
        ws = torch.cat([G.mapping(z[i : i + 256], psi=psi, cutoff=args.cutoff) for i in range(0, len(z), 256)])
        meta = {"seeds": seeds, "psi": psi, "cutoff": args.cutoff}
    if args.edit:
        ws = _apply_edits(ws, G, args)
        meta["edits"] = list(args.edit)
    images = []
    for i in tqdm(range(0, len(ws), args.batch), desc="render", unit="batch", disable=len(ws) <= args.batch):
        images.append(to_uint8(G.synthesis(ws[i : i + args.batch], noise_mode=args.noise_mode)))
    arr = np.concatenate(images)
    save_image(arr[0] if len(arr) == 1 else make_grid(arr, args.cols), args.out)
    if args.ws_out:
        save_latent(args.ws_out, ws, G, **meta)
    print(f"wrote {args.out} ({len(arr)} image{'s' if len(arr) > 1 else ''}, {G.resolution}px, {G.cfg.arch})")
    return 0


def _apply_edits(ws, G, args):
    from engine.assets import DIRECTIONS
    from engine.edit.ops import apply_edits, parse_locks, resolve_edits
    from engine.io.directions import load_directions

    path = args.directions or (DIRECTIONS if DIRECTIONS.exists() else None)
    if path is None:
        raise UserError("--edit needs --directions FILE.npz (make one with: main.py directions --out FILE.npz)")
    dset = load_directions(path, G)
    return apply_edits(ws, resolve_edits(args.edit, dset, G.num_ws, parse_locks(args.lock)))
