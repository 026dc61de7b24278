"""`main.py directions`: compute (SeFa, GANSpace), fit (labelled latents) or import (InterFaceGAN .npy/.pt)
edit directions into a direction-set file, and rename them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine.cli.common import add_model_argument, load_model
from engine.edit.layers import parse_layers
from engine.errors import UserError
from engine.io.directions import DirectionSet, import_direction_file, load_directions
from engine.io.latents import load_latent


def add_arguments(p):
    add_model_argument(p)
    p.add_argument("--method", choices=["sefa", "ganspace", "fit", "import"], default="sefa",
                   help="sefa: factorise the style weights; ganspace: PCA of W; fit: from labelled latents "
                        "(--latent, --labels); import: InterFaceGAN-style vectors (--vector)")
    p.add_argument("--layers", default=None,
                   help="W+ layer range a-b (or coarse / middle / fine / all): the layers SeFa factorises and that "
                        "the directions edit (default: all)")
    p.add_argument("--num", type=int, default=10, help="how many directions (sefa, ganspace; default 10)")
    p.add_argument("--samples", type=int, default=20000, help="mapped samples for ganspace (default 20000)")
    p.add_argument("--latent", default=None, help="fit: latents .npz (N latents)")
    p.add_argument("--labels", default=None, help="fit: N labels 0/1, as '0,1,1,…' or a text file of them")
    p.add_argument("--per-layer", action="store_true", help="fit: one vector per W+ layer")
    p.add_argument("--vector", default=None, help="import: a .npy or .pt direction file")
    p.add_argument("--name", default=None, help="fit/import: the direction's name; sefa/ganspace: name prefix")
    p.add_argument("--names", default=None, help="rename the new directions in order, e.g. 'age,smile,pose'")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="rename a direction (repeatable)")
    p.add_argument("--append", action="store_true", help="add to the directions already in --out")
    p.add_argument("--out", "-o", required=True, help="direction set file (.npz)")


def _labels(text: str) -> np.ndarray:
    path = Path(text)
    src = path.read_text() if path.exists() else text
    try:
        return np.array([int(float(t)) for t in src.replace(",", " ").split()], dtype=np.int64)
    except ValueError:
        raise UserError(f"bad labels {text[:40]!r}: give 0/1 values as '0,1,1' or a file of them") from None


def run(args) -> int:
    G = load_model(args.model)
    layers = parse_layers(args.layers, G.num_ws) if args.layers else None
    t = time.perf_counter()
    if args.method == "sefa":
        from engine.edit.unsupervised import sefa

        new = sefa(G, layers=layers, num=args.num, prefix=args.name or "sefa")
    elif args.method == "ganspace":
        from engine.edit.unsupervised import ganspace

        new = ganspace(G, num=args.num, samples=args.samples, layers=layers, prefix=args.name or "pc")
    elif args.method == "fit":
        from engine.edit.supervised import fit_direction

        if not args.latent or not args.labels:
            raise UserError("--method fit needs --latent L.npz and --labels")
        ws, _ = load_latent(args.latent, G)
        d = fit_direction(ws, _labels(args.labels), args.name or "attribute", num_ws=G.num_ws, layers=layers,
                          per_layer=args.per_layer)
        new = DirectionSet.for_model(G, [d])
    else:
        if not args.vector:
            raise UserError("--method import needs --vector FILE.npy|.pt")
        new = DirectionSet.for_model(G, import_direction_file(args.vector, G, args.name, layers))
    elapsed = time.perf_counter() - t

    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) > len(new):
            raise UserError(f"--names gives {len(names)} names for {len(new)} directions")
        for old, nn in zip(list(new.names), names):
            if nn:
                new.rename(old, nn)
    out = Path(args.out)
    if args.append and out.exists():
        dset = load_directions(out, G)
        dset.extend(new)
    else:
        dset = new
    for spec in args.rename:
        old, sep, nn = spec.partition("=")
        if not sep:
            raise UserError(f"bad --rename {spec!r}; use OLD=NEW")
        dset.rename(old.strip(), nn)
    dset.save(out)
    print(f"{args.method}: {len(new)} direction(s) in {elapsed:.2f} s; wrote {out} ({len(dset)} in the set)")
    for d in dset:
        extra = " ".join(f"{k}={d.info[k]:.4g}" for k in ("share", "explained", "train_accuracy") if k in d.info)
        print(f"  {d.name:<16} layers {d.layers[0]}-{d.layers[1]}  slider {d.slider[0]:+.2f}:{d.slider[1]:+.2f}"
              f"  {d.method} {extra}".rstrip())
    return 0
