"""`main.py stylize --style a.png [b.png ...] --out styled.safetensors`: fine-tune a copy of a model so that every
face renders in the style of one to a few exemplar images (engine.edit.stylize). Ctrl-C stops after the step and
keeps what is done; the same command resumes it. Writes a preview beside the model (…_preview.png)."""

from __future__ import annotations

import time
from pathlib import Path

from engine.cli.common import add_model_argument, load_model
from engine.errors import UserError


def add_arguments(p):
    p.add_argument("--style", nargs="+", required=True, metavar="IMAGE", help="one to a few style images")
    add_model_argument(p, "model to stylize (a student or a teacher); default: the bundled student")
    p.add_argument("--encoder", "-e", default=None, help="encoder for inverting the style images (default: bundled)")
    p.add_argument("--aligned", action="store_true",
                   help="the style images are already aligned square face crops (drawings, paintings, cartoons that "
                        "the face detector misses)")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps (default 300)")
    p.add_argument("--invert-steps", type=int, default=100, help="projector steps per style image (default 100)")
    p.add_argument("--keep-structure", type=float, default=0.0,
                   help="weight of a term keeping the base model's face structure (default 0)")
    p.add_argument("--keep-colour", type=float, default=0.0,
                   help="weight of a term keeping the base model's colours (default 0: the style's colours)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="a name for the style (default: the first image's stem)")
    p.add_argument("--out", "-o", required=True, help="the stylized model (.safetensors)")


def run(args) -> int:
    from engine.edit.stylize import StyleOptions, style_report, stylize
    from engine.invert import Inverter, pick_encoder
    from engine.stop import StopFlag

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"the stylized model is a .safetensors file, not {out.suffix or '(none)'}: {out}")
    from engine.assets import ENCODER, STUDENT, TEACHER

    preview = out.with_name(out.stem + "_preview.png")
    for s in args.style:
        if not Path(s).is_file():
            raise UserError(f"{s}: no such style image")
        if Path(s).resolve() in (out.resolve(), preview.resolve()):
            raise UserError(f"--out {out.name} (or its preview {preview.name}) would overwrite the style image {s}")
    # Never over an input: the model being stylized, its encoder, or a bundled file.
    inputs = [Path(p) for p in (args.model, args.encoder) if p] + [STUDENT, TEACHER, ENCODER]
    if any(p.exists() and p.resolve() == out.resolve() for p in inputs):
        raise UserError(f"--out {out} is an input model; write the stylized model to a new file")
    if args.steps < 1:
        raise UserError("--steps must be at least 1")
    G = load_model(args.model)
    E, note = pick_encoder(G, args.encoder)
    if note:
        print(note)
    options = StyleOptions(steps=args.steps, invert_steps=args.invert_steps, keep_structure=args.keep_structure,
                           keep_colour=args.keep_colour, seed=args.seed)
    t = time.perf_counter()
    with StopFlag(print) as stop:
        styled, st = stylize(G, args.style, Inverter(G, E), options, aligned=args.aligned, out=out,
                             name=args.name or Path(args.style[0]).stem, should_stop=lambda: stop.requested)
    if st is None:
        print("stopped while inverting the style images; nothing was trained yet")
        return 130
    if styled is None:
        print(f"stopped at step {st.step} of {args.steps}; run the same command to continue")
        return 130
    seconds = time.perf_counter() - t
    r = style_report(G, styled, st.exemplars, preview=preview)
    print(f"wrote {out} ({st.step} steps, {st.loss_name} loss, {seconds:.0f} s) and {preview.name} (rows: style "
          "images, base samples, stylized samples)")
    share = r["gram_stylized"] / max(r["gram_base"], 1e-12)
    print(f"style distance to the exemplars (Gram matrices of VGG16 features, lower is closer): base "
          f"{r['gram_base']:.4g} → stylized {r['gram_stylized']:.4g} ({share:.0%}); "
          f"the face mesh finds a face in {r['face_rate']:.0%} of {r['rate_seeds']} stylized samples")
    return 0
