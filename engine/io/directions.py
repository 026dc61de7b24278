"""Edit directions and direction-set files (.npz, read without pickle).

A direction is a step in W (one `w_dim` vector used on every layer of its range) or in W+ (one vector per layer,
`[num_ws, w_dim]`, as InterFaceGAN's per-layer boundaries are). It carries the W+ layer range `[a, b]` (inclusive)
that an edit touches and the slider range the app offers. Computed directions (SeFa, GANSpace, fitted) are unit
vectors, so an edit amount α is a distance in W; their slider range is ±3 standard deviations of the mapped W along
the direction.

Like a latent, a direction set belongs to a W space (`w_space_id`): a teacher and the students distilled from it
share it, any other model refuses the file.

File layout: `meta` (a JSON string: format, version, w_space_id, num_ws, w_dim, model, and one record per direction:
name, layers, slider, method, info) and `v0`, `v1`, … (float32 vectors, in the records' order).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.io.checkpoints import write_npz
from engine.io.latents import _jsonable, w_space_id
from engine.io.safety import MAX_NUM_WS, MAX_WIDTH, check_range, read_npy, read_npz

FORMAT = "blazestudio-directions"
VERSION = 1


@dataclass
class Direction:
    name: str
    vector: torch.Tensor  # [w_dim] (the same step on every layer of the range) or [num_ws, w_dim] (per layer)
    layers: tuple[int, int]  # inclusive W+ range [a, b] the edit touches
    slider: tuple[float, float] = (-3.0, 3.0)  # the range the app's slider spans (α, in the vector's units)
    method: str = ""  # "sefa", "ganspace", "fit", "import", ...
    info: dict = field(default_factory=dict)  # provenance: eigenvalue, std, accuracy, source file, ...

    def __post_init__(self):
        self.name = str(self.name).strip()
        if not self.name:
            raise UserError("a direction needs a non-empty name")
        self.vector = torch.as_tensor(self.vector).detach().float().cpu().contiguous()
        if self.vector.ndim not in (1, 2):
            raise UserError(f"direction '{self.name}': expected a [w_dim] or [num_ws, w_dim] vector, "
                            f"got shape {list(self.vector.shape)}")
        if not torch.isfinite(self.vector).all():
            raise UserError(f"direction '{self.name}' contains NaN or infinite values")
        a, b = (int(v) for v in self.layers)
        if not 0 <= a <= b:
            raise UserError(f"direction '{self.name}': bad layer range {a}-{b}")
        self.layers = (a, b)
        lo, hi = (float(v) for v in self.slider)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise UserError(f"direction '{self.name}': bad slider range {lo}:{hi}")
        self.slider = (lo, hi)

    @property
    def per_layer(self) -> bool:
        return self.vector.ndim == 2

    @property
    def w_dim(self) -> int:
        return self.vector.shape[-1]


class DirectionSet:
    """An ordered, named collection of directions for one W space."""

    def __init__(self, directions=(), *, num_ws: int, w_dim: int, w_space_id: str | None = None, model: str = ""):
        self.num_ws, self.w_dim = int(num_ws), int(w_dim)
        self.w_space_id = w_space_id
        self.model = model
        self._dirs: dict[str, Direction] = {}
        for d in directions:
            self.add(d)

    @classmethod
    def for_model(cls, G, directions=()) -> DirectionSet:
        return cls(directions, num_ws=G.num_ws, w_dim=G.w_dim, w_space_id=w_space_id(G),
                   model=Path(getattr(G, "source_path", "") or "").name)

    # -- collection --------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._dirs)

    def __iter__(self):
        return iter(list(self._dirs.values()))

    def __contains__(self, name) -> bool:
        return name in self._dirs

    def __getitem__(self, key) -> Direction:
        if isinstance(key, int):
            return list(self._dirs.values())[key]
        try:
            return self._dirs[key]
        except KeyError:
            known = ", ".join(self._dirs) or "none"
            raise UserError(f"no direction named '{key}' (known: {known})") from None

    @property
    def names(self) -> list[str]:
        return list(self._dirs)

    def add(self, d: Direction, replace: bool = False) -> Direction:
        self._validate(d)
        if d.name in self._dirs and not replace:
            raise UserError(f"a direction named '{d.name}' already exists; rename one of them")
        self._dirs[d.name] = d
        return d

    def extend(self, other: DirectionSet, replace: bool = False) -> None:
        if other.w_space_id and self.w_space_id and other.w_space_id != self.w_space_id:
            raise UserError(f"these directions belong to another model (W space {other.w_space_id}, "
                            f"this set's is {self.w_space_id})")
        for d in other:
            self.add(d, replace=replace)

    def remove(self, name: str) -> Direction:
        d = self[name]
        del self._dirs[name]
        return d

    def rename(self, old: str, new: str) -> None:
        new = str(new).strip()
        d = self[old]
        if not new:
            raise UserError("a direction needs a non-empty name")
        if new != old and new in self._dirs:
            raise UserError(f"a direction named '{new}' already exists")
        # A renamed copy (the Direction may be shared with other sets), in the same place of the order.
        renamed = dataclasses.replace(d, name=new)
        self._dirs = {(new if k == old else k): (renamed if k == old else v) for k, v in self._dirs.items()}

    def _validate(self, d: Direction) -> None:
        if d.w_dim != self.w_dim:
            raise UserError(f"direction '{d.name}' has w_dim {d.w_dim}, but this model's W has {self.w_dim}")
        if d.per_layer and d.vector.shape[0] != self.num_ws:
            raise UserError(f"direction '{d.name}' has {d.vector.shape[0]} layers, but this model has "
                            f"{self.num_ws} ws")
        if d.layers[1] >= self.num_ws:
            raise UserError(f"direction '{d.name}': layer range {d.layers[0]}-{d.layers[1]} is outside "
                            f"0-{self.num_ws - 1}")

    def check(self, G, source: str = "this direction set") -> None:
        """Refuse to edit G with directions of another W space."""
        if (G.num_ws, G.w_dim) != (self.num_ws, self.w_dim):
            raise UserError(f"{source} is for W+ [{self.num_ws}, {self.w_dim}], but the model needs "
                            f"[{G.num_ws}, {G.w_dim}]")
        want = w_space_id(G)
        if self.w_space_id is not None and self.w_space_id != want:
            raise UserError(f"{source} was made for another model (W space {self.w_space_id}, this model's is "
                            f"{want}; made with '{self.model or '?'}')")

    def save(self, path) -> Path:
        return save_directions(path, self)


def save_directions(path, dset: DirectionSet) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        raise UserError(f"direction files end in .npz, not {path.suffix or '(none)'}: {path}")
    records = [
        {"name": d.name, "layers": list(d.layers), "slider": list(d.slider), "method": d.method,
         "info": _jsonable(d.info)}
        for d in dset
    ]
    meta = {"format": FORMAT, "version": VERSION, "w_space_id": dset.w_space_id, "num_ws": dset.num_ws,
            "w_dim": dset.w_dim, "model": dset.model, "directions": records}
    arrays = {f"v{i}": d.vector.numpy() for i, d in enumerate(dset)}
    arrays["meta"] = np.array(json.dumps(meta))
    return write_npz(path, arrays)


def is_direction_file(path) -> bool:
    """Whether an .npz holds a direction set (else treat it as a latent); never raises, reads only the header."""
    try:
        meta = json.loads(str(read_npz(path, "direction file", max_bytes=16 << 20, names=["meta"])["meta"]))
    except (UserError, KeyError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def load_directions(path, G=None) -> DirectionSet:
    """Read a direction set; with G given, refuse one made for another W space."""
    path = Path(path)
    arrays = read_npz(path, "direction file")
    try:
        meta = json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format') if isinstance(meta, dict) else None!r}")
        if not isinstance(meta["directions"], list):
            raise ValueError("'directions' is not a list")
        # The header's sizes are claims: bounded here, and each vector must then match them (DirectionSet.add).
        num_ws = check_range("num_ws", meta["num_ws"], 1, MAX_NUM_WS)
        w_dim = check_range("w_dim", meta["w_dim"], 1, MAX_WIDTH)
        vectors = [np.asarray(arrays[f"v{i}"], dtype=np.float32) for i in range(len(meta["directions"]))]
        dset = DirectionSet(num_ws=num_ws, w_dim=w_dim, w_space_id=meta.get("w_space_id"),
                            model=str(meta.get("model", "")))
    except (ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise UserError(f"{path.name}: not a direction file ({str(e)[:200]})") from None
    if int(meta.get("version", 0)) > VERSION:
        raise UserError(f"{path.name} was written by a newer BlazeStudio (version {meta['version']}); update")
    try:
        for rec, vec in zip(meta["directions"], vectors):
            dset.add(Direction(rec["name"], torch.from_numpy(vec), tuple(rec["layers"]), tuple(rec["slider"]),
                               rec.get("method", ""), rec.get("info") or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path.name}: a damaged direction record ({str(e)[:200]})") from None
    if G is not None:
        dset.check(G, path.name)
    return dset


def import_direction_file(path, G, name: str | None = None, layers: tuple[int, int] | None = None,
                          slider: tuple[float, float] = (-3.0, 3.0)) -> list[Direction]:
    """Directions from an InterFaceGAN-style file: a `.npy` array or a `.pt` tensor (or a dict of named tensors,
    loaded with `torch.load(weights_only=True)`), each of shape [w_dim], [1, w_dim], [num_ws, w_dim] or
    [1, num_ws, w_dim]. Vectors are kept as stored (InterFaceGAN boundaries are already unit normals)."""
    path = Path(path)
    stem = name or path.stem
    try:
        if path.suffix == ".npy":
            items = {stem: torch.from_numpy(read_npy(path, "direction vector file").astype(np.float32))}
        elif path.suffix in (".pt", ".pth"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(data, torch.Tensor):
                items = {stem: data}
            elif isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
                items = {(f"{stem}_{k}" if name else str(k)): v for k, v in data.items()}
            else:
                raise ValueError("expected a tensor or a dict of tensors")
        else:
            raise UserError(f"{path.name}: import .npy or .pt direction vectors")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UserError:
        raise
    except Exception as e:  # torch.load's restricted unpickler raises various types for code it refuses to run
        raise UserError(f"{path.name}: not a direction vector file ({str(e).splitlines()[0][:200]})") from None
    out = []
    for key, v in items.items():
        v = v.detach().float()
        if v.ndim == 3 and v.shape[0] == 1:
            v = v[0]
        if v.ndim == 2 and v.shape[0] == 1:
            v = v[0]
        if v.shape not in ((G.w_dim,), (G.num_ws, G.w_dim)):
            raise UserError(f"{path.name}: '{key}' has shape {list(v.shape)}; expected [{G.w_dim}] or "
                            f"[{G.num_ws}, {G.w_dim}] for this model")
        rng = layers or (0, G.num_ws - 1)
        out.append(Direction(key, v, rng, slider, "import", {"source": path.name}))
    return out
