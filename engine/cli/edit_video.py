"""`main.py edit-video IN --edit NAME=AMOUNT --out OUT.mp4`: edit the face in every frame of a video; same frame
count, frame rate and size; frames without a face pass through."""

from __future__ import annotations

from pathlib import Path

from engine.cli.common import add_edit_arguments, load_edit_setup
from engine.errors import UserError


def add_arguments(p):
    p.add_argument("video", help="a video OpenCV reads (MP4, AVI, MOV, MKV, WebM)")
    add_edit_arguments(p)
    p.add_argument("--out", "-o", required=True, help="output video (.mp4 or .avi)")
    p.add_argument("--side-by-side", action="store_true", help="write the input and the edit side by side")
    p.add_argument("--preview", default=None, metavar="PNG",
                   help="also write a picture of four frames across the video, input | edit")


def run(args) -> int:
    from engine.edit.ops import apply_edits
    from engine.edit.photo import check_blend, check_output_path
    from engine.edit.video import VideoReader, edit_video

    check_output_path(args.video, args.out)
    check_blend(args.blend)
    if args.preview:
        from PIL import Image

        check_output_path(args.video, args.preview)
        if Path(args.preview).resolve() == Path(args.out).resolve():
            raise UserError("--preview must be another file than --out")
        if Path(args.preview).suffix.lower() not in Image.registered_extensions():
            raise UserError(f"--preview is a picture: give it an image suffix such as .png, not {args.preview}")
    if args.blend != 1.0 and args.mode != "regenerate":
        print("note: --blend applies to --mode regenerate; edit transfer keeps your own face")
    VideoReader(args.video).close()  # an unreadable input fails here, before any model loads
    G, inv, edits = load_edit_setup(args)
    stats = edit_video(args.video, args.out, inv, lambda ws: apply_edits(ws, edits), mode=args.mode,
                       blend=args.blend, side_by_side=args.side_by_side, preview=args.preview)
    w, h = stats.size
    print(f"wrote {args.out}: {stats.frames} frames, {w}x{h}, {stats.fps:g} fps ({args.mode}); a face in "
          f"{stats.with_face}; {stats.frames_per_second:.1f} frames/s; flicker {stats.flicker_ratio:.2f}× the input's")
    if stats.audio:
        print(f"note: {Path(args.video).name} has an audio track, which is not copied (video only)")
    elif stats.audio is None:
        print("note: audio, if the input has any, is not copied (video only)")
    if args.preview:
        print(f"wrote {args.preview} (input | edit, four frames across the video)")
    return 0
