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
    p.add_argument("--method", choices=["sefa", "ganspace", "fit", "attributes", "import"], default="sefa",
                   help="sefa: factorise the style weights; ganspace: PCA of W; fit: from labelled latents "
                        "(--latent, --labels); attributes: one direction per measured attribute (face mesh and "
                        "pixels, see --attributes); import: InterFaceGAN-style vectors (--vector)")
    p.add_argument("--attributes", default=None,
                   help="attributes: which ones, comma-separated (default smile,mouth_open,eyes_open,yaw,pitch,roll,"
                        "brightness,warmth)")
    p.add_argument("--describe", default=None, metavar="DIRS.npz",
                   help="instead: measure what each direction of DIRS.npz moves; writes --out as a heat map (.png) "
                        "with a table beside it (.md, .json)")
    p.add_argument("--held-out", type=int, default=100, help="attributes/--describe: held-out faces measured")
    p.add_argument("--with-locks", action="store_true",
                   help="--describe: also sweep each fitted attribute direction with the set's other attributes locked")
    p.add_argument("--layers", default=None,
                   help="W+ layer range a-b (or coarse / middle / fine / all): the layers SeFa factorises and that "
                        "the directions edit (default: all)")
    p.add_argument("--num", type=int, default=10, help="how many directions (sefa, ganspace; default 10)")
    p.add_argument("--samples", type=int, default=None,
                   help="mapped samples for ganspace (default 20000); measured faces for attributes (default 2000)")
    p.add_argument("--latent", default=None, help="fit: latents .npz (N latents)")
    p.add_argument("--labels", default=None, help="fit: N labels 0/1, as '0,1,1,…' or a text file of them")
    p.add_argument("--per-layer", action="store_true", help="fit: one vector per W+ layer")
    p.add_argument("--vector", default=None, help="import: a .npy or .pt direction file")
    p.add_argument("--name", default=None, help="fit/import: the direction's name; sefa/ganspace: name prefix")
    p.add_argument("--names", default=None, help="rename the new directions in order, e.g. 'age,smile,pose'")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="rename a direction (repeatable)")
    p.add_argument("--append", action="store_true", help="add to the directions already in --out")
    p.add_argument("--out", "-o", required=True, help="direction set file (.npz); with --describe, the heat map (.png)")


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
    if args.describe:
        return _describe(G, args)
    t = time.perf_counter()
    if args.method == "attributes":
        from engine.edit.labelled import DEFAULT_ATTRIBUTES, HELD_OUT_SEED, fit_attribute_directions, sample_attributes

        attrs = [a.strip() for a in args.attributes.split(",")] if args.attributes else list(DEFAULT_ATTRIBUTES)
        samples = sample_attributes(G, args.samples or 2000)
        new = fit_attribute_directions(G, samples, attrs, layers=layers,
                                       check_seeds=range(HELD_OUT_SEED, HELD_OUT_SEED + max(8, args.held_out)))
    elif args.method == "sefa":
        from engine.edit.unsupervised import sefa

        new = sefa(G, layers=layers, num=args.num, prefix=args.name or "sefa")
    elif args.method == "ganspace":
        from engine.edit.unsupervised import ganspace

        new = ganspace(G, num=args.num, samples=args.samples or 20000, layers=layers, prefix=args.name or "pc")
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
        keys = ("share", "explained", "train_accuracy", "r2_held_out")
        extra = " ".join(f"{k}={d.info[k]:.4g}" for k in keys if k in d.info)
        print(f"  {d.name:<16} layers {d.layers[0]}-{d.layers[1]}  slider {d.slider[0]:+.2f}:{d.slider[1]:+.2f}"
              f"  {d.method} {extra}".rstrip())
    return 0


def _describe(G, args) -> int:
    import json

    from engine.edit.labelled import HELD_OUT_SEED, describe, heatmap, report_markdown, sample_attributes
    from engine.render import save_image

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--describe writes a heat map: give --out a .png name, not {out.name}")
    dset = load_directions(args.describe, G)
    # Across-face spread of each attribute: the unit the changes are reported in.
    samples = sample_attributes(G, args.samples or 300, seed0=HELD_OUT_SEED + 50_000)
    result = describe(G, dset, samples, range(HELD_OUT_SEED, HELD_OUT_SEED + args.held_out),
                      with_locks=args.with_locks)
    save_image(heatmap(result), out)
    md = report_markdown(result)
    locked = {k: v for k, v in result.items() if "attributes_locked" in v}
    if locked:
        md += "\n## With the other attributes locked\n\n" + report_markdown(
            {k: {**v, "attributes": v["attributes_locked"]} for k, v in locked.items()})
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(_finite(result), indent=1))
    print(md)
    print(f"wrote {out} (heat map), {out.with_suffix('.md').name} and {out.with_suffix('.json').name}")
    return 0


def _finite(x):
    """JSON has no NaN: unmeasured values become null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not np.isfinite(x) else x
