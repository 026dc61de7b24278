"""`main.py edit PHOTO --edit NAME=AMOUNT --out OUT.png`: edit the face(s) of a photo and write the whole photo at
its own size. Transfer mode (default) keeps the photo's pixels and carries over only what the edit changes; with no
--edit the output is the input's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.cli.common import add_edit_arguments, load_edit_setup
from engine.errors import UserError


def add_arguments(p):
    p.add_argument("photo", help="a photo with a face (JPEG, PNG, WebP, TIFF, ...)")
    add_edit_arguments(p)
    p.add_argument("--steps", type=int, default=0, help="projector steps after the encoder (default 0)")
    p.add_argument("--tune", type=int, default=0, metavar="STEPS",
                   help="tune a copy of the generator to this photo for STEPS steps (pivotal tuning; default off)")
    p.add_argument("--all-faces", action="store_true", help="edit every face (default: the largest)")
    p.add_argument("--side-by-side", action="store_true", help="write the original and the edit side by side")
    p.add_argument("--out", "-o", required=True, help="output image (.png, .jpg, ...)")


def run(args) -> int:
    from engine.edit.ops import apply_edits
    from engine.edit.photo import PhotoEdit, check_blend, check_output_path
    from engine.render import save_image

    check_output_path(args.photo, args.out)
    check_blend(args.blend)
    if args.blend != 1.0 and args.mode != "regenerate":
        print("note: --blend applies to --mode regenerate; edit transfer keeps your own face")
    if args.steps < 0 or args.tune < 0:
        raise UserError("--steps and --tune must be 0 or more")
    if not Path(args.photo).is_file():
        raise UserError(f"{args.photo}: no such photo")
    G, inv, edits = load_edit_setup(args)
    photo = PhotoEdit(args.photo, inv, all_faces=args.all_faces, steps=args.steps, tune=args.tune, progress=True)
    if photo.faces_seen > 1 and not args.all_faces:
        print(f"{photo.faces_seen} faces found; editing the largest (--all-faces edits them all)")
    out = photo.render(lambda ws: apply_edits(ws, edits), mode=args.mode, blend=args.blend)
    if args.side_by_side:
        out = np.concatenate([photo.rgb, out], axis=1)
    save_image(out, args.out)
    what = ", ".join(args.edit) if args.edit else "no edit: the photo as it is"
    faces = f"{len(photo.faces)} face{'s' if len(photo.faces) != 1 else ''}"
    print(f"wrote {args.out} ({out.shape[1]}x{out.shape[0]}, {args.mode}, {faces}; {what})")
    for k, face in enumerate(photo.faces):
        m, tune = face.metrics, face.tuning
        line = f"  face {k + 1}: reconstruction PSNR {m.get('psnr', 0):.1f} dB, perceptual {m.get('perceptual', 0):.3f}"
        if tune:
            line += f" after {tune['steps']} tuning steps ({tune['seconds']:.1f} s)"
        print(line)
    return 0
