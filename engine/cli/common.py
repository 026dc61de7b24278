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
