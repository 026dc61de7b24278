"""BlazeStudio engine: networks, checkpoints, alignment, inversion, editing, export. No Qt, no training code."""

import os

# PyTorch's CPU threads (libgomp) spin for about 300,000 rounds waiting for work. When another process holds one of the
# cores, every parallel op then waits for a descheduled spinner: a batch of 64 px samples took 1,578 ms instead of 82
# on this 2-core machine with one training job beside it. A short spin keeps the quiet speed (40-50 ms either way).
# Both are read when the libraries load, so they are set before the engine's first `import torch` or numpy; a
# user's own values win.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
# numpy's OpenBLAS threads do the same: with one busy core a 3×3 `np.linalg.solve` (every frame aligns a face) took
# 2.8 ms instead of 0.01. One thread costs little where it helps (a 2048² covariance 0.11 → 0.18 s quiet; torch has
# its own BLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

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
