"""Inversion: an aligned face → W+ codes, by the encoder (engine.models.encoder) and an optional projector."""

from engine.invert.inverter import Inversion, Inverter, bundled_encoder_path, pick_encoder
from engine.invert.projector import ProjectionResult, project, reconstruction_metrics
from engine.models.encoder import Encoder, check_compatible, load_encoder, save_encoder

__all__ = [
    "Encoder",
    "Inversion",
    "Inverter",
    "ProjectionResult",
    "bundled_encoder_path",
    "check_compatible",
    "load_encoder",
    "pick_encoder",
    "project",
    "reconstruction_metrics",
    "save_encoder",
]
