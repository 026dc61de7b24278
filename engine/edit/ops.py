"""The edit arithmetic in W+, shared by the edit session, the CLI and export checks.

ws' = ws + Σ αᵢ·dᵢ, each term only on its direction's layers [a, b]; style mixing copies layers [a, b] from another
latent. Terms with α = 0 are skipped rather than added, so returning a slider to 0 gives back the exact input.
Truncation is the mapping network's own (`G.mapping.truncate`).
"""

from __future__ import annotations

import torch

from engine.errors import UserError
from engine.io.directions import Direction


def apply_edits(ws: torch.Tensor, edits) -> torch.Tensor:
    """ws [N, num_ws, w_dim] or [num_ws, w_dim]; edits: iterable of (Direction, α) or (Direction, α, (a, b)) where
    (a, b) overrides the direction's own layer range. Returns a new tensor; the input is left untouched."""
    out = ws.detach().clone()
    num_ws = ws.shape[-2]
    for e in edits:
        d, alpha = e[0], float(e[1])
        a, b = e[2] if len(e) > 2 and e[2] is not None else d.layers
        if alpha == 0.0:
            continue
        if not 0 <= a <= b < num_ws:
            raise UserError(f"direction '{d.name}': layer range {a}-{b} is outside 0-{num_ws - 1}")
        v = d.vector.to(out.device, out.dtype)
        if v.shape[-1] != out.shape[-1]:
            raise UserError(f"direction '{d.name}' has w_dim {v.shape[-1]}, the latent {out.shape[-1]}")
        step = v[a : b + 1] if v.ndim == 2 else v
        out[..., a : b + 1, :] += alpha * step
    return out


def style_mix(ws: torch.Tensor, source: torch.Tensor, layers: tuple[int, int]) -> torch.Tensor:
    """ws with layers [a, b] taken from `source` (same shape, or [num_ws, w_dim] broadcast over the batch)."""
    a, b = layers
    if not 0 <= a <= b < ws.shape[-2]:
        raise UserError(f"mixing layer range {a}-{b} is outside 0-{ws.shape[-2] - 1}")
    if source.shape[-2:] != ws.shape[-2:]:
        raise UserError(f"the mixing source has W+ shape {list(source.shape[-2:])}, expected {list(ws.shape[-2:])}")
    out = ws.detach().clone()
    out[..., a : b + 1, :] = source.detach().to(out.dtype)[..., a : b + 1, :]
    return out


def parse_edit(text: str) -> tuple[str, float, str | None]:
    """'smile=+2.0' or 'smile=-1.5@4-7' → (name, α, layer text or None)."""
    name, sep, rest = str(text).rpartition("=")
    value, at, layers = rest.partition("@")
    try:
        if not sep or not name.strip():
            raise ValueError
        alpha = float(value)
    except ValueError:
        raise UserError(f"bad edit {text!r}; use NAME=AMOUNT, e.g. smile=+2.0 (optionally @a-b for layers)") from None
    return name.strip(), alpha, (layers.strip() if at else None)


def resolve_edits(texts, directions, num_ws: int, locks=()) -> list[tuple[Direction, float, tuple[int, int]]]:
    """Parse `--edit` strings against a DirectionSet into apply_edits' (Direction, α, layers) terms; `locks`
    (attribute names, e.g. from `--lock yaw,pitch`) are held still by every edit (engine.edit.labelled.lock)."""
    from engine.edit.layers import parse_layers

    held = []
    if locks:
        from engine.edit.labelled import boundaries_for

        held = boundaries_for(directions, locks)
    out = []
    for t in texts or ():
        name, alpha, layer_text = parse_edit(t)
        d = directions[name]
        if held:
            from engine.edit.labelled import lock

            d = lock(d, held)
        out.append((d, alpha, parse_layers(layer_text, num_ws, default=d.layers)))
    return out


def parse_locks(text) -> list[str]:
    """'yaw,pitch' (or repeated options) → ['yaw', 'pitch']."""
    items = text if isinstance(text, (list, tuple)) else [text or ""]
    return [a.strip() for t in items for a in str(t).split(",") if a.strip()]
