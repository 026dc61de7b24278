"""Reading and writing generator checkpoints without ever executing code from them.

Formats:
- NVIDIA snapshot pickles (stylegan2-ada-pytorch / stylegan3 repos, StyleGAN2 configs). The reference loader runs the
  Python source embedded in the pickle; we unpickle with an allow-list of a few globals, turn every persisted network
  object into a plain record of its state, and rebuild our own network from the stored tensors.
- rosinality/stylegan2-pytorch `torch.save` checkpoints, read with `torch.load(weights_only=True)` plus
  `argparse.Namespace` (training checkpoints store their args), then renamed into NVIDIA's layout.
- Our own format: one `.safetensors` file, the JSON ModelConfig in its header metadata.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import CheckpointError
from engine.io.safety import build_checked, file_sha256, read_header_config  # noqa: F401 - file_sha256 re-exported
from engine.models.config import ModelConfig
from engine.models.generator import Generator

NATIVE_KEY = "blazestudio"
NATIVE_VERSION = 1

# ---------------------------------------------------------------------------------------------------------------------
# Safe unpickling of NVIDIA snapshots


class PersistentRecord:
    """What `torch_utils.persistence._reconstruct_persistent_obj(meta)` stands for, minus the code execution: the
    class name and the object's `__dict__` (parameters, buffers, child modules, init kwargs, attributes)."""

    def __init__(self, meta):
        if not isinstance(meta, dict) or "state" not in meta:
            raise CheckpointError("malformed persistent object in the pickle (no 'state')")
        self.class_name = meta.get("class_name", "?")
        self.state = meta["state"] or {}
        # meta["module_src"] is the source the reference loader would exec; we keep only a hint of which repo made it.
        src = meta.get("module_src") or ""
        self.module_hint = "stylegan3" if "SynthesisInput" in src or "filtered_lrelu" in src else ""

    @property
    def modules(self) -> dict:
        return self.state.get("_modules") or {}

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        out = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if isinstance(v, torch.Tensor):
                    out[prefix + k] = v.detach()
        for name, child in self.modules.items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access); only its items matter to us."""


def _load_from_bytes(b: bytes):
    # NVIDIA pickles embed each storage as a nested torch.save blob; read it with torch's restricted loader.
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _np_scalar():
    from numpy.core import multiarray

    return multiarray.scalar


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): lambda: PersistentRecord,
    ("dnnlib.util", "EasyDict"): lambda: EasyDict,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): lambda: torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): lambda: _load_from_bytes,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,  # written by numpy 2
    ("numpy", "dtype"): lambda: np.dtype,
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise CheckpointError(
                f"refusing to load: the pickle asks for '{module}.{name}', which no StyleGAN2 checkpoint needs "
                "(it may run code on load)"
            )
        return factory()

    def persistent_load(self, pid):
        raise CheckpointError("unsupported pickle: it uses persistent ids (is it a torch.save file?)")


def _unpickle_nvidia(path: Path):
    with open(path, "rb") as f:
        try:
            return _SafeUnpickler(f).load()
        except CheckpointError:
            raise
        except Exception as e:  # truncated, corrupt or not a pickle at all: all end up here
            raise CheckpointError(f"{path.name}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def _attr(record: PersistentRecord, name: str, default=None):
    v = record.state.get(name, default)
    if v is None:
        v = (record.state.get("_init_kwargs") or {}).get(name, default)
    return v.item() if isinstance(v, np.generic) else v


def _generator_from_nvidia(record: PersistentRecord, path: Path) -> tuple[ModelConfig, dict]:
    mods = record.modules
    if "mapping" not in mods or "synthesis" not in mods:
        raise CheckpointError(f"{path.name}: G_ema has no mapping/synthesis networks; not a StyleGAN generator")
    mapping, synthesis = mods["mapping"], mods["synthesis"]
    if not isinstance(mapping, PersistentRecord) or not isinstance(synthesis, PersistentRecord):
        raise CheckpointError(f"{path.name}: G_ema's mapping/synthesis are not network objects")
    if record.module_hint == "stylegan3" or "input" in synthesis.modules or any(
        k.startswith("L") and "_" in k for k in synthesis.modules
    ):
        raise CheckpointError(
            f"{path.name}: a StyleGAN3 (alias-free) generator is not supported; use a StyleGAN2 checkpoint "
            "(stylegan3 repo configs 'stylegan2', or stylegan2-ada-pytorch)"
        )
    if int(_attr(mapping, "c_dim", 0) or 0) > 0:
        raise CheckpointError(f"{path.name}: conditional (class-label) generators are not supported")
    tensors = record.tensors()
    # Every size comes from the stored tensors; the pickle's attributes (init kwargs) are only cross-checked, since a
    # file can claim anything there.
    blocks = sorted(int(k[1:]) for k in synthesis.modules if k.startswith("b") and k[1:].isdigit())
    if not blocks:
        raise CheckpointError(f"{path.name}: the synthesis network has no blocks")
    missing = [f"synthesis.b{r}.conv1.weight" for r in blocks if f"synthesis.b{r}.conv1.weight" not in tensors]
    if missing or "mapping.fc0.weight" not in tensors:
        gone = missing or ["mapping.fc0.weight"]
        raise CheckpointError(f"{path.name}: tensors missing from the generator: {gone[:3]}")
    channels = {r: int(tensors[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in blocks}
    res = blocks[-1]
    claimed = _attr(synthesis, "img_resolution") or _attr(record, "img_resolution")
    if claimed is not None and _as_int(claimed) != res:
        raise CheckpointError(f"{path.name}: claims img_resolution {claimed!r} but its blocks end at {res}")
    for r in blocks:
        arch = _attr(synthesis.modules[f"b{r}"], "architecture", "skip")
        if arch != "skip":
            raise CheckpointError(f"{path.name}: synthesis architecture '{str(arch)[:40]}' is not supported "
                                  "(only 'skip')")
    n_fc = sum(1 for k in mapping.modules if k.startswith("fc"))
    fc0 = mapping.modules["fc0"]
    w_dim, z_dim = (int(n) for n in tensors["mapping.fc0.weight"].shape)
    for name, value in (("z_dim", z_dim), ("w_dim", w_dim)):
        claimed = _attr(mapping, name)
        if claimed is not None and _as_int(claimed) != value:
            raise CheckpointError(f"{path.name}: claims {name} {claimed!r} but its mapping weights have {value}")
    clamp = _attr(synthesis.modules[f"b{blocks[-1]}"].modules["conv1"], "conv_clamp")
    lr_mul = _attr(fc0, "lr_multiplier", 0.01)
    img_channels = int(tensors.get(f"synthesis.b{res}.torgb.weight", torch.empty(3)).shape[0])
    try:
        cfg = ModelConfig(
            arch="stylegan2",
            resolution=res,
            z_dim=z_dim,
            w_dim=w_dim,
            mapping_layers=n_fc,
            mapping_lr_multiplier=float(lr_mul),
            img_channels=img_channels,
            channels=channels,
            conv_clamp=None if clamp is None else float(clamp),
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path.name}: not a generator this program can rebuild ({e})") from None
    state = {k: v.float() for k, v in tensors.items() if not k.endswith("resample_filter")}
    return cfg, state


def _as_int(v):
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _read_nvidia(path: Path) -> tuple[ModelConfig, dict, dict]:
    try:
        return _read_nvidia_unchecked(path)
    except (KeyError, AttributeError, TypeError, ValueError, IndexError) as e:  # a pickle shaped unlike any snapshot
        raise CheckpointError(f"{path.name}: not a StyleGAN2 snapshot this program can read "
                              f"({type(e).__name__}: {str(e)[:120]})") from None


def _read_nvidia_unchecked(path: Path) -> tuple[ModelConfig, dict, dict]:
    data = _unpickle_nvidia(path)
    if isinstance(data, dict) and "G_ema" in data:
        g = data["G_ema"]
    elif isinstance(data, PersistentRecord):
        g = data
    else:
        raise CheckpointError(f"{path.name}: a pickle, but not an NVIDIA snapshot (no 'G_ema')")
    if not isinstance(g, PersistentRecord):
        raise CheckpointError(f"{path.name}: 'G_ema' is not a network object")
    cfg, state = _generator_from_nvidia(g, path)
    extras = {}
    d = data.get("D") if isinstance(data, dict) else None
    if isinstance(d, PersistentRecord):
        extras["D"] = {"state": d.tensors(), "init_kwargs": dict(d.state.get("_init_kwargs") or {})}
    return cfg, state, extras


# ---------------------------------------------------------------------------------------------------------------------
# rosinality


def _torch_load(path: Path):
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path.name}: refusing to load: {msg}") from None
    except Exception as e:
        raise CheckpointError(f"{path.name}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def _rosinality_to_nvidia(sd: dict, latent_avg, path: Path) -> tuple[ModelConfig, dict]:
    """Rename rosinality's g_ema keys into NVIDIA's layout. The 3×3 conv weights absorb rosinality's fixed
    1/sqrt(fan_in) scale (which demodulation would cancel anyway); ToRGB and mapping weights copy unchanged."""
    n_mlp = sum(1 for k in sd if k.startswith("style.") and k.endswith(".weight"))
    n_rgb = sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    if n_mlp == 0 or "input.input" not in sd:
        raise CheckpointError(f"{path.name}: not a rosinality StyleGAN2 generator (no 'style.*' / 'input.input')")
    res = 2 ** (n_rgb + 2)
    w_dim = sd["style.1.weight"].shape[0]
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    lr_mul = 0.01  # rosinality's default; weights are stored /lr_mul exactly as NVIDIA's

    def styled(src: str, dst: str, noise_idx: int):
        w = sd[f"{src}.conv.weight"][0]  # [out, in, k, k]
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        out[f"{dst}.weight"] = w / fan_in**0.5
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.activate.bias"].flatten()
        out[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"].reshape([])
        noise = sd.get(f"noises.noise_{noise_idx}")
        r = int(dst.split(".")[1][1:])
        out[f"{dst}.noise_const"] = noise.reshape(r, r) if noise is not None else torch.randn(r, r)

    def torgb(src: str, dst: str):
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].flatten()

    out["synthesis.b4.const"] = sd["input.input"][0]
    styled("conv1", "synthesis.b4.conv1", 0)
    torgb("to_rgb1", "synthesis.b4.torgb")
    channels = {4: sd["conv1.conv.weight"].shape[1]}
    for j in range(n_rgb):
        r = 2 ** (j + 3)
        styled(f"convs.{2 * j}", f"synthesis.b{r}.conv0", 2 * j + 1)
        styled(f"convs.{2 * j + 1}", f"synthesis.b{r}.conv1", 2 * j + 2)
        torgb(f"to_rgbs.{j}", f"synthesis.b{r}.torgb")
        channels[r] = sd[f"convs.{2 * j}.conv.weight"].shape[1]
    if latent_avg is None:
        latent_avg = torch.zeros(w_dim)
        needs_avg = True
    else:
        needs_avg = False
    out["mapping.w_avg"] = torch.as_tensor(latent_avg).flatten().float()
    cfg = ModelConfig(
        arch="stylegan2",
        resolution=res,
        z_dim=sd["style.1.weight"].shape[1],
        w_dim=w_dim,
        mapping_layers=n_mlp,
        mapping_lr_multiplier=lr_mul,
        channels=channels,
        conv_clamp=None,
        info={"w_avg_estimated": needs_avg},
    )
    return cfg, {k: v.float() for k, v in out.items()}


def _read_rosinality(path: Path, data) -> tuple[ModelConfig, dict, dict]:
    if isinstance(data, dict) and "g_ema" in data:
        sd, latent_avg = data["g_ema"], data.get("latent_avg")
    elif isinstance(data, dict) and "style.1.weight" in data:
        sd, latent_avg = data, None  # a bare g_ema state dict
    else:
        keys = list(data)[:6] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path.name}: a torch file, but not a rosinality StyleGAN2 checkpoint (found {keys})")
    try:
        cfg, state = _rosinality_to_nvidia(sd, latent_avg, path)
    except CheckpointError:
        raise
    except (KeyError, AttributeError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path.name}: not a rosinality generator this program can read "
                              f"({type(e).__name__}: {str(e)[:120]})") from None
    extras = {}
    if isinstance(data.get("d"), dict):
        extras["D_rosinality"] = data["d"]
    return cfg, state, extras


# ---------------------------------------------------------------------------------------------------------------------
# Native safetensors


def save_generator(G: Generator, path, info: dict | None = None) -> Path:
    """Write G as one `.safetensors` file (config JSON in the header), atomically."""
    path = Path(path)
    cfg = G.cfg
    if info:
        cfg.info = {**cfg.info, **info}
    meta = {NATIVE_KEY: json.dumps({"version": NATIVE_VERSION, "config": cfg.to_dict()})}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in G.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once at import, before any worker thread exists
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: Path, writer) -> None:
    """Write through a temp file in the same folder and rename, so a crash never leaves half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        writer(Path(tmp))
        # mkstemp makes the file private (0600); give it the permissions a normal write would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except Exception:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_npz(path, arrays: dict) -> Path:
    """Write arrays to an .npz (no pickled objects) atomically; a failure is one clear UserError."""
    path = Path(path)

    def write(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(path, write)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def read_native_config(path) -> ModelConfig:
    """The ModelConfig in a `.safetensors` header, validated and bounded; one CheckpointError line otherwise."""
    return read_header_config(path, NATIVE_KEY, NATIVE_VERSION, ModelConfig.from_dict)


def _read_native(path: Path) -> tuple[ModelConfig, dict, dict]:
    cfg = read_native_config(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name}: damaged or foreign safetensors file ({str(e)[:200]})") from None
    return cfg, state, {}


# ---------------------------------------------------------------------------------------------------------------------
# Entry points


def sniff_format(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) == 0:
        raise CheckpointError(f"{path.name}: the file is empty")
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        # torch's legacy (pre-1.6) format is also a pickle stream; it starts with a magic number, not a dict.
        return "torch" if head[2:3] == b"\x8a" else "pickle"
    raise CheckpointError(
        f"{path.name}: unknown file type; expected an NVIDIA .pkl, a rosinality .pt or a .safetensors model"
    )


def read_checkpoint(path) -> tuple[ModelConfig, dict, dict]:
    """(config, state dict in our layout, extras such as a discriminator) for any supported file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    kind = sniff_format(path)
    if kind == "safetensors":
        cfg, state, extras = _read_native(path)
    elif kind == "pickle":
        cfg, state, extras = _read_nvidia(path)
        cfg.info.update({"source_format": "nvidia-pkl"})
    else:
        cfg, state, extras = _read_rosinality(path, _torch_load(path))
        cfg.info.update({"source_format": "rosinality-pt"})
    if kind != "safetensors":
        cfg.info.update({"source": path.name, "source_sha256": file_sha256(path)})
    return cfg, state, extras


def build_generator(cfg: ModelConfig, state: dict, name: str = "checkpoint") -> Generator:
    """The network `cfg` describes with `state` loaded, built only once the stored tensors are checked to be exactly
    what the config implies (see engine.io.safety): a config that lies about sizes allocates nothing."""
    G = build_checked(lambda: Generator(cfg), state, name, what="generator")
    G.eval().requires_grad_(False)
    if cfg.info.get("w_avg_estimated"):
        with torch.no_grad():
            z = torch.from_numpy(np.random.RandomState(0).randn(10000, cfg.z_dim)).float()
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    return G


def load_generator(path=None) -> Generator:
    """Load a generator (teacher or student) from any supported file; None loads the bundled student."""
    if path is None:
        from engine.assets import default_model_path

        path = default_model_path()
    cfg, state, _ = read_checkpoint(path)
    G = build_generator(cfg, state, Path(path).name)
    G.source_path = str(path)
    return G

