"""Choosing the torch device from a user's `--device` option."""

from __future__ import annotations

import torch

from engine.errors import UserError


def pick_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """"auto" (or None) → this process's GPU when CUDA is available, else the CPU; otherwise a torch device name,
    checked, with a bare "cuda" meaning this process's GPU (`local_rank` under torchrun)."""
    if name in (None, "", "auto"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
