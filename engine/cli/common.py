"""Options and helpers shared by the command-line tools."""

from __future__ import annotations

import torch

from engine.io.checkpoints import load_generator


def add_model_argument(p, help_text: str = "model file (.safetensors, NVIDIA .pkl, rosinality .pt); default: the "
                       "bundled student") -> None:
    p.add_argument("--model", "-m", default=None, help=help_text)


def load_model(path):
    G = load_generator(path)
    torch.set_grad_enabled(False)
    return G


def add_direction_arguments(p) -> None:
    """--directions, --edit and --lock, as `generate`, `edit` and `edit-video` take them."""
    p.add_argument("--directions", default=None, help="direction set .npz for --edit (default: the bundled one)")
    p.add_argument("--edit", action="append", default=[], metavar="NAME=AMOUNT[@a-b]",
                   help="a direction and its amount, e.g. 'mouth open=+4' or smile=+2@0-6 (W+ layers a-b optional); "
                        "repeatable")
    p.add_argument("--lock", action="append", default=[], metavar="ATTRS",
                   help="hold these attributes still while editing, e.g. yaw,pitch (their fitted boundaries must be "
                        "in the direction set: main.py directions --method attributes)")


def add_edit_arguments(p) -> None:
    """The options `edit` and `edit-video` share."""
    add_model_argument(p)
    p.add_argument("--encoder", "-e", default=None,
                   help="encoder .safetensors (default: the bundled encoder when it fits the model)")
    add_direction_arguments(p)
    p.add_argument("--mode", default="transfer", choices=["transfer", "regenerate"],
                   help="transfer (default): your own pixels, changed only by the edit; regenerate: the "
                        "generator's rendition of the face pasted in (for stylized models)")
    p.add_argument("--blend", type=float, default=1.0, metavar="0..1",
                   help="with --mode regenerate: how much of the generated (e.g. stylized) face replaces your own "
                        "(default 1; 0.5 is half and half)")


def load_edit_setup(args):
    """(G, Inverter, [(Direction, α, layers)]) for the edit commands; notes for the user are printed."""
    from engine.assets import DIRECTIONS
    from engine.edit.ops import parse_locks, resolve_edits
    from engine.invert import Inverter, pick_encoder
    from engine.io.directions import load_directions

    G = load_model(args.model)
    E, note = pick_encoder(G, args.encoder)
    if note:
        print(note)
    edits = []
    if args.edit:
        path = args.directions or (DIRECTIONS if DIRECTIONS.exists() else None)
        if path is None:
            from engine.errors import UserError

            raise UserError("--edit needs --directions FILE.npz (make one with: main.py directions --out FILE.npz)")
        edits = resolve_edits(args.edit, load_directions(path, G), G.num_ws, parse_locks(args.lock))
    return G, Inverter(G, E), edits
