"""Latent files (.npz): W+ codes plus what is needed to use them again.

A latent belongs to a W space, not to one network: a student shares its teacher's mapping network, so a latent made
with the teacher edits the student too. The file therefore records `w_space_id`, a hash of the mapping network's
weights and `w_avg`, and refuses to load against a model with another W space.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.io.checkpoints import write_npz
from engine.io.safety import MAX_NUM_WS, MAX_WIDTH, read_npz

FORMAT = "blazestudio-latent"


def w_space_id(G) -> str:
    """Identity of G's W space: hash of the mapping network (incl. w_avg) and the W+ layout."""
    h = hashlib.sha256()
    h.update(f"{G.num_ws}x{G.w_dim}".encode())
    for k, v in sorted(G.mapping.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def same_w_space(a, b) -> bool:
    """Whether two generators share one W space (a student and its teacher do): latents and directions of one
    work with the other."""
    return (a.num_ws, a.w_dim) == (b.num_ws, b.w_dim) and (a is b or w_space_id(a) == w_space_id(b))


def save_latent(path, ws: torch.Tensor, G, **meta) -> Path:
    """Write ws [N, num_ws, w_dim] (or [num_ws, w_dim]) with metadata: w_space_id, resolution, and anything passed
    in `meta` (seeds, psi, the alignment transform of an inverted photo, reconstruction metrics, ...)."""
    ws = ws.detach().float().cpu()
    if ws.ndim == 2:
        ws = ws[None]
    if ws.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f"ws must be [N, {G.num_ws}, {G.w_dim}], got {list(ws.shape)}")
    info = {
        "format": FORMAT,
        "version": 1,
        "w_space_id": w_space_id(G),
        "num_ws": G.num_ws,
        "w_dim": G.w_dim,
        "resolution": G.resolution,
        "model": Path(getattr(G, "source_path", "") or "").name,
        **meta,
    }
    arrays = {"ws": ws.numpy(), "meta": np.array(json.dumps(_jsonable(info)))}
    path = Path(path)
    if path.suffix != ".npz":
        raise UserError(f"latent files end in .npz, not {path.suffix or '(none)'}: {path}")
    return write_npz(path, arrays)


def load_latent(path, G=None) -> tuple[torch.Tensor, dict]:
    """(ws [N, num_ws, w_dim], metadata). With G given, refuses a latent from another W space."""
    path = Path(path)
    arrays = read_npz(path, "latent file", names=["ws", "meta"])
    if "ws" not in arrays:
        raise UserError(f"{path.name}: not a latent file (no 'ws' array)")
    ws = arrays["ws"]
    if ws.ndim == 2:
        ws = ws[None]
    if ws.ndim != 3 or not 1 <= ws.shape[1] <= MAX_NUM_WS or not 1 <= ws.shape[2] <= MAX_WIDTH or ws.shape[0] < 1:
        raise UserError(f"{path.name}: 'ws' has shape {list(arrays['ws'].shape)}; a latent is [N, num_ws, w_dim]")
    if not np.issubdtype(ws.dtype, np.floating):
        raise UserError(f"{path.name}: 'ws' holds {ws.dtype} values; a latent holds floats")
    ws = torch.from_numpy(np.ascontiguousarray(ws, dtype=np.float32))
    if not torch.isfinite(ws).all():
        raise UserError(f"{path.name}: 'ws' contains NaN or infinite values")
    try:
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except json.JSONDecodeError as e:
        raise UserError(f"{path.name}: damaged latent metadata ({e})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path.name}: damaged latent metadata (not a JSON object)")
    if G is not None:
        if ws.shape[1:] != (G.num_ws, G.w_dim):
            raise UserError(
                f"{path.name} holds W+ of shape {list(ws.shape[1:])}, but the model needs [{G.num_ws}, {G.w_dim}]"
            )
        want, have = w_space_id(G), meta.get("w_space_id")
        if have is not None and have != want:
            raise UserError(
                f"{path.name} was made for another model (W space {have}, this model's is {want}; "
                f"made with '{meta.get('model', '?')}')"
            )
    return ws, meta


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
