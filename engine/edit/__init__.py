"""Editing in W+: directions (SeFa, GANSpace, fitted from labels, imported), the edit arithmetic, the edit session
(base latent, edit stack with undo/redo, cached and coalesced rendering of teacher and student, events for observers)
and slider sweeps."""

from engine.edit.layers import layer_groups, layer_resolutions, modulated_affines, parse_layers
from engine.edit.ops import apply_edits, parse_edit, resolve_edits, style_mix
from engine.edit.renderer import Frame, Renderer
from engine.edit.session import EditSession, EditState, Mix
from engine.edit.supervised import fit_direction
from engine.edit.unsupervised import ganspace, sample_w, sefa
from engine.io.directions import Direction, DirectionSet, import_direction_file, load_directions, save_directions

__all__ = [
    "Direction",
    "DirectionSet",
    "EditSession",
    "EditState",
    "Frame",
    "Mix",
    "Renderer",
    "apply_edits",
    "fit_direction",
    "ganspace",
    "import_direction_file",
    "layer_groups",
    "layer_resolutions",
    "load_directions",
    "modulated_affines",
    "parse_edit",
    "parse_layers",
    "resolve_edits",
    "sample_w",
    "save_directions",
    "sefa",
    "style_mix",
]
