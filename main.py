#!/usr/bin/env python3
"""BlazeStudio command line. With no subcommand it opens the desktop editor.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; modules are imported
only when their command runs, so `main.py generate` never pays for Qt and `main.py` (the app) never pays for training.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "app": ("app.cli", "open the desktop editor (default when no command is given)"),
    "import": ("engine.cli.import_cmd", "convert an NVIDIA .pkl or rosinality .pt into a .safetensors model"),
    "generate": ("engine.cli.generate", "render seeds or a latent (with edits) to an image grid"),
    "bench": ("engine.cli.bench", "parameters, FLOPs and CPU latency of teacher and student (or exported files)"),
    "align": ("engine.cli.align", "detect and align a face FFHQ-style"),
    "invert": ("engine.cli.invert", "invert a photo into W+ (encoder, then optional projector)"),
    "directions": ("engine.cli.directions", "compute SeFa or GANSpace directions"),
    "sweep": ("engine.cli.sweep", "render a slider sweep as a video or GIF"),
    "export": ("engine.cli.export", "export the student for Core ML, TFLite and ONNX, verified"),
    "edit": ("engine.cli.edit", "edit the face in a photo, at the photo's own size (edit transfer or regenerate)"),
    "edit-video": ("engine.cli.edit_video", "edit the face in every frame of a video"),
    "stylize": ("engine.cli.stylize", "fine-tune a copy of a model to the style of one to a few images"),
    "distill": ("training.cli_distill", "distil a BlazeStyleGAN student from a StyleGAN2 teacher"),
    "train-encoder": ("training.cli_encoder", "train the inversion encoder on generator samples"),
    "eval": ("engine.cli.eval", "the paper's table: params, FLOPs, FID, LPIPS and PSNR of teacher and student"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["app", *argv]
    if argv and argv[0] in COMMANDS:
        # Build only the parser of the chosen command: importing every command module would pull in Qt, etc.
        name = argv[0]
        module, help_text = COMMANDS[name]
        parser = argparse.ArgumentParser(prog=f"main.py {name}", description=help_text)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                print(f"error: the '{name}' command is not available in this build", file=sys.stderr)
                return 2
            raise
        mod.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        from engine.errors import report_errors

        return report_errors(mod.run, args)
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    parser.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
