"""Paths of the models bundled in assets/ (see assets/MODEL_CARD.md) and of the example photos."""

from __future__ import annotations

from pathlib import Path

from engine.errors import CheckpointError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
STUDENT = ASSETS / "student.safetensors"
TEACHER = ASSETS / "teacher.safetensors"
ENCODER = ASSETS / "encoder.safetensors"
DIRECTIONS = ASSETS / "directions.npz"
# Public-domain portraits (assets/examples/README.md): for trying the editor, and the benchmark's stand-in webcam.
EXAMPLE_PHOTOS = (ASSETS / "examples" / "eileen_collins.jpg", ASSETS / "examples" / "grace_hopper.jpg")


def default_model_path(which: str = "student") -> Path:
    path = {"student": STUDENT, "teacher": TEACHER}[which]
    if not path.exists():
        raise CheckpointError(f"the bundled {which} model is missing ({path}); pass a model file explicitly")
    return path
