"""BlazeStudio engine: networks, checkpoints, alignment, inversion, editing, export. No Qt, no training code."""

from engine.errors import CheckpointError, NoFaceError, UserError
from engine.io.checkpoints import load_generator, save_generator
from engine.models.config import ModelConfig
from engine.models.generator import Generator, seeds_to_z

__all__ = [
    "CheckpointError",
    "Generator",
    "ModelConfig",
    "NoFaceError",
    "UserError",
    "load_generator",
    "save_generator",
    "seeds_to_z",
]


def load_teacher():
    """The bundled StyleGAN2 teacher (engine.load_generator() with no argument returns the bundled student)."""
    from engine.assets import default_model_path

    return load_generator(default_model_path("teacher"))
