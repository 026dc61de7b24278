"""Paths of the models bundled in assets/ (see assets/MODEL_CARD.md)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import CheckpointError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
STUDENT = ASSETS / "student.safetensors"
TEACHER = ASSETS / "teacher.safetensors"
ENCODER = ASSETS / "encoder.safetensors"
DIRECTIONS = ASSETS / "directions.npz"


def default_model_path(which: str = "student") -> Path:
    path = {"student": STUDENT, "teacher": TEACHER}[which]
    if not path.exists():
        raise CheckpointError(f"the bundled {which} model is missing ({path}); pass a model file explicitly")
    return path
