"""Opening files that came from elsewhere without trusting what they claim.

A model, encoder, latent or direction file describes itself: a JSON config in a `.safetensors` header, init kwargs
in a pickle, a `meta` record or `.npy` headers in an `.npz`. Any of these can lie, and a lie about a size is enough to
take a desktop down (a header claiming millions of channels makes the network allocate terabytes before a single
weight is read). So:

- networks are first built on the `meta` device (shapes only, no memory), every parameter and buffer shape is checked
  against the tensors actually stored, and only then is the network made for real: what it allocates is then what
  the file holds;
- `.npz` members are sized from their `.npy` headers, before any data is read or decompressed;
- every failure is one `CheckpointError` line that names the file and the offending entry.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.errors import CheckpointError

# Sizes beyond anything a StyleGAN2 / BlazeStyleGAN (or its encoder) uses; a file that claims more is refused.
MAX_RESOLUTION = 2048
MAX_WIDTH = 4096  # z_dim, w_dim, channel widths, hidden widths
MAX_MAPPING_LAYERS = 16
MAX_NUM_WS = 2 * 11 - 2  # num_ws of a 2048 model
MAX_NPZ_BYTES = 1 << 29  # per array (512 MB): a long video's W+ fits, a decompression bomb does not


def check_range(name: str, value, lo: int, hi: int) -> int:
    """`value` as an int in [lo, hi], else ValueError naming the field (configs turn it into a one-line error)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
        isinstance(value, float) and value.is_integer()
    ):
        raise ValueError(f"{name} must be an integer, not {value!r}"[:200])
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} = {v} is outside {lo}..{hi}")
    return v


def expected_shapes(factory: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of the network `factory` builds, without allocating it (meta device)."""
    with torch.device("meta"):
        net = factory()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def shape_mismatch(expected: dict[str, tuple], state: dict[str, torch.Tensor]) -> str | None:
    """One line naming the first missing, extra or mis-shaped tensors, or None when `state` fits exactly."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if extra:
        parts.append(f"unexpected {_few(extra)}")
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        parts.append(f"'{k}' is {list(state[k].shape)} where the config needs {list(expected[k])}{more}")
    return "; ".join(parts) or None


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def build_checked(factory: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], name: str,
                  what: str = "network") -> torch.nn.Module:
    """Build `factory()` and load `state` into it, but only after checking on the meta device that the stored tensors
    are exactly what the config implies: the real build then allocates no more than the file holds."""
    try:
        expected = expected_shapes(factory)
    except (ValueError, KeyError, TypeError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{name}: its config does not describe a valid {what} ({_line(e)})") from None
    problem = shape_mismatch(expected, state)
    if problem:
        raise CheckpointError(f"{name}: the stored weights do not fit the {what} its config describes: {problem}")
    net = factory()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # dtype trouble (e.g. complex or bool tensors)
        raise CheckpointError(f"{name}: weights that cannot be loaded ({_line(e)})") from None
    return net


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ---------------------------------------------------------------------------------------------------------------------
# .safetensors headers

# The header keys our file kinds store their JSON config under, and what each kind is called in messages.
HEADER_KINDS = {"blazestudio": ("a generator model", "--model", "model"),
                "blazestudio-encoder": ("an encoder", "--encoder", "encoder")}


def read_header_config(path, key: str, version: int, parse):
    """`parse(doc["config"])` for the JSON document under `key` in a `.safetensors` header, refusing a file of
    another kind, of a newer format version, or with an invalid config, each in one CheckpointError line."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    a_what, _, what = HEADER_KINDS[key]
    if not path.exists():
        raise CheckpointError(f"{path}: no such {what} file")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass {a_what} .safetensors file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name}: not {a_what} file (damaged or foreign safetensors: {_line(e)})") from None
    if key not in meta:
        other = next((k for k in HEADER_KINDS if k in meta), None)
        if other is not None:
            kind, option, _ = HEADER_KINDS[other]
            raise CheckpointError(f"{path.name} is {kind}, not {a_what}; pass it as {option}")
        raise CheckpointError(f"{path.name}: a safetensors file without a BlazeStudio {what} config")
    try:
        doc = json.loads(meta[key])
        if int(doc.get("version", 0)) > version:
            raise CheckpointError(f"{path.name}: {what} format {doc['version']} is newer than this program's; update")
        return parse(doc["config"])
    except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path.name}: its {what} config is invalid ({_line(e)})") from None


# ---------------------------------------------------------------------------------------------------------------------
# .npz files


def npz_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} read from each member's `.npy` header; no data is read or decompressed."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10000)
                elif version in ((2, 0), (3, 0)):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10000)
                else:
                    raise ValueError(f"unknown .npy version {version}")
            out[info.filename[:-4]] = (tuple(int(s) for s in shape), dtype)
    return out


def read_npy(path, what: str) -> np.ndarray:
    """One `.npy` array, after checking from its header that the file really holds the values it claims."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f, max_header_size=10000)
            header_end = f.tell()
        size = float(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if dtype.hasobject or size > path.stat().st_size - header_end:
            raise ValueError(f"its header claims {list(shape)} of {dtype}, which the file does not hold")
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such {what}") from None
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise CheckpointError(f"{path.name}: not a {what} ({_line(e)})") from None


def read_npz(path, what: str, max_bytes: int = MAX_NPZ_BYTES, names=None) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` (all, or `names`), after checking from their headers that none holds objects or more
    than `max_bytes`. Any problem is one CheckpointError line."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such {what}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a {what}")
    try:
        shapes = npz_shapes(path)
    except (zipfile.BadZipFile, ValueError, OSError, SyntaxError, EOFError) as e:
        raise CheckpointError(f"{path.name}: not a {what} (not a readable .npz: {_line(e)})") from None
    wanted = list(shapes) if names is None else [n for n in names if n in shapes]
    for name in wanted:
        shape, dtype = shapes[name]
        if dtype.hasobject:
            raise CheckpointError(f"{path.name}: array '{name}' holds Python objects, which are never loaded")
        size = float(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if size > max_bytes:
            raise CheckpointError(f"{path.name}: array '{name}' claims shape {list(shape)} of {dtype} "
                                  f"({size / 1e6:,.0f} MB), more than any {what} holds")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: np.array(f[name]) for name in wanted}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path.name}: damaged {what} ({_line(e)})") from None


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks (weights files are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()
