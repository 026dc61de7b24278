"""`main.py align IMAGE`: detect the largest face and write its FFHQ-aligned crop (and, optionally, the geometry)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="photo to align (JPEG, PNG, WebP, ...)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the aligned crop (default: IMAGE_aligned.png)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the alignment (faces, quad in source pixels, matrix, image size) as JSON",
    )
    parser.add_argument("--size", type=int, default=256, help="side of the aligned crop in pixels (default 256)")
    parser.add_argument(
        "--pad",
        choices=("ffhq", "reflect"),
        default="ffhq",
        help="fill beyond the photo's edges: FFHQ's blurred mirror (default) or a plain mirror",
    )


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from engine.faces.align import FaceAligner

    out = args.out or args.image.with_name(f"{args.image.stem}_aligned.png")
    if out.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"cannot write {out}: unknown image extension '{out.suffix}'; use .png or .jpg")
    aligned = FaceAligner(pad=args.pad).align(args.image, size=args.size)

    _write(out, lambda: Image.fromarray(aligned.image).save(out))
    if args.json is not None:
        text = json.dumps(aligned.to_json(), indent=2) + "\n"
        _write(args.json, lambda: args.json.write_text(text))
    others = f" (largest of {aligned.faces} faces)" if aligned.faces > 1 else ""
    print(f"aligned the face in {args.image}{others} -> {out} ({aligned.size}x{aligned.size})")
    return 0


def _write(path: Path, write) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write()
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
