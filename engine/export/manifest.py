"""What goes beside the exported files: the input/output contracts, the arrays a phone needs to build W+ itself
(w_avg, directions), and the human-readable verification report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from engine.errors import UserError

FORMAT = "blazestudio-export"
VERSION = 1

TRUNCATION = "ws[i] = w_avg + psi * (w - w_avg) for i < cutoff (all i when no cutoff); psi = 1: no truncation"
EDIT = (
    "for each direction with slider value alpha and layers [a, b] (inclusive): ws[i] += alpha * vector "
    "(alpha * vector[i] when per_layer) for a <= i <= b"
)
PIXELS = "pixel = round(clamp((x + 1) / 2, 0, 1) * 255)"


# ---------------------------------------------------------------------------------------------------------------------
# Input / output contracts


def synthesis_io(G, fmt: str) -> tuple[list[dict], list[dict]]:
    inputs = [
        {
            "name": "ws",
            "shape": [1, G.num_ws, G.w_dim],
            "dtype": "float32",
            "range": "W+ latents: the mapping output repeated num_ws times, then truncation and edits (see manifest)",
        }
    ]
    r = G.resolution
    if fmt == "coreml":
        outputs = [
            {
                "name": "image",
                "type": "image",
                "color_layout": "RGB",
                "width": r,
                "height": r,
                "range": [0, 255],
                "note": "an RGB image (CVPixelBuffer); values were " + PIXELS,
            }
        ]
    else:
        outputs = [
            {
                "name": "image",
                "shape": [1, 3, r, r],
                "dtype": "float32",
                "layout": "NCHW, channels R, G, B",
                "range": [-1, 1],
                "note": "raw generator output, may slightly overshoot; " + PIXELS,
            }
        ]
    return inputs, outputs


def mapping_io(G, w_range: tuple[float, float]) -> tuple[list[dict], list[dict]]:
    inputs = [{"name": "z", "shape": [1, G.z_dim], "dtype": "float32", "range": "standard normal N(0, 1) samples"}]
    outputs = [
        {
            "name": "w",
            "shape": [1, G.w_dim],
            "dtype": "float32",
            "range": [round(w_range[0], 4), round(w_range[1], 4)],
            "note": "untruncated w (range: min and max over 1000 random z); W+ = w repeated num_ws times",
        }
    ]
    return inputs, outputs


# ---------------------------------------------------------------------------------------------------------------------
# Directions


def read_directions(path, G) -> dict:
    """A direction set as plain arrays for the manifest.

    Reads engine.io.directions files (a `meta` JSON record plus `v0`, `v1`, …; refused if made for another W
    space) and, for sets made by other tools, a plain .npz with `names` [K], `vectors` [K, w_dim] or
    [K, num_ws, w_dim] and optional `layers` [K, 2] (inclusive W+ ranges; default: all layers)."""
    from engine.io.safety import read_npz

    path = Path(path)
    arrays = read_npz(path, "direction file", names=["meta", "names", "vectors", "layers"])
    plain = None if "meta" in arrays else arrays
    if plain is None:
        from engine.io.directions import load_directions

        dset = load_directions(path, G)
        items = [
            {
                "name": d.name,
                "layers": list(d.layers),
                "slider": list(d.slider),
                "method": d.method,
                "per_layer": d.per_layer,
                "vector": d.vector.numpy(),
            }
            for d in dset
        ]
    else:
        items = _plain_directions(plain, path, G)
    for d in items:
        d["vector"] = np.round(np.asarray(d["vector"], np.float64), 7).tolist()
    return {"source": path.name, "apply": EDIT, "items": items}


def _plain_directions(arrays: dict, path: Path, G) -> list[dict]:
    try:
        return _plain_directions_unchecked(arrays, path, G)
    except (ValueError, TypeError) as e:  # arrays of the wrong kind (strings for vectors, ragged layers, ...)
        raise UserError(f"{path.name}: not a usable direction file ({str(e)[:200]})") from None


def _plain_directions_unchecked(arrays: dict, path: Path, G) -> list[dict]:
    if "names" not in arrays or "vectors" not in arrays:
        raise UserError(f"{path.name}: a direction file needs arrays 'names' and 'vectors' (or a 'meta' record)")
    names = [str(n) for n in arrays["names"].reshape(-1)]
    vectors = arrays["vectors"].astype(np.float32)
    k = len(names)
    if vectors.shape not in ((k, G.w_dim), (k, G.num_ws, G.w_dim)):
        raise UserError(
            f"{path.name}: 'vectors' has shape {list(vectors.shape)}; expected [{k}, {G.w_dim}] or "
            f"[{k}, {G.num_ws}, {G.w_dim}] for this model"
        )
    if not np.isfinite(vectors).all():
        raise UserError(f"{path.name}: 'vectors' contains NaN or infinite values")
    layers = arrays.get("layers")
    if layers is None:
        layers = np.tile([0, G.num_ws - 1], (k, 1))
    layers = np.asarray(layers).astype(np.int64).reshape(k, -1)
    if layers.shape[1] != 2 or (layers < 0).any() or (layers[:, 0] > layers[:, 1]).any() or (
        layers >= G.num_ws
    ).any():
        raise UserError(f"{path.name}: 'layers' must be [{k}, 2] inclusive ranges within 0-{G.num_ws - 1}")
    return [
        {"name": n, "layers": [int(a), int(b)], "slider": [-3.0, 3.0], "method": "", "per_layer": v.ndim == 2,
         "vector": v}
        for n, v, (a, b) in zip(names, vectors, layers)
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Files


def read_manifest(folder) -> dict:
    """An export folder's manifest.json, checked before anything is built or opened from it: the sizes it claims are
    bounded and every model path stays inside the folder. One UserError line otherwise."""
    from engine.io.safety import MAX_NUM_WS, MAX_RESOLUTION, MAX_WIDTH, check_range

    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise UserError(f"{folder} has no manifest.json; export into it first (`python main.py export --out {folder}`)")
    if path.stat().st_size > 64 << 20:
        raise UserError(f"{path}: {path.stat().st_size / 1e6:.0f} MB is far more than any export manifest")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: unreadable manifest ({str(e)[:200]})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise UserError(f"{path}: not a BlazeStudio export manifest")
    try:
        check_range("resolution", m["resolution"], 8, MAX_RESOLUTION)
        check_range("num_ws", m["num_ws"], 1, MAX_NUM_WS)
        check_range("w_dim", m["w_dim"], 1, MAX_WIDTH)
        check_range("z_dim", m["z_dim"], 1, MAX_WIDTH)
        if not isinstance(m["models"], list):
            raise ValueError("'models' is not a list")
        root = folder.resolve()
        for e in m["models"]:
            rel = Path(str(e["path"]))
            if rel.is_absolute() or ".." in rel.parts or not (root / rel).resolve().is_relative_to(root):
                raise ValueError(f"model path {str(e['path'])[:80]!r} points outside the export folder")
            if not (isinstance(e["inputs"], list) and isinstance(e["outputs"], list) and e["inputs"] and e["outputs"]):
                raise ValueError(f"{rel}: inputs and outputs must be non-empty lists")
            for io_ in (*e["inputs"], *e["outputs"]):
                if not isinstance(io_["name"], str):
                    raise ValueError(f"{rel}: an input or output without a name")
            str(e["format"]), str(e["name"]), str(e["precision"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: damaged manifest ({str(e)[:200]})") from None
    return m


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")


def write_json(path: Path, doc: dict) -> None:
    """Indented JSON with lists of numbers (shapes, w_avg, vectors) kept on one line each."""
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    Path(path).write_text(text + "\n")


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def render_report(m: dict) -> str:
    """verification.md: what was checked, how, and the numbers."""
    v = m["verification"]
    lines = [
        f"# Export verification: {m['source']['file'] or 'in-memory model'}",
        "",
        f"**Result: {'PASSED' if v['passed'] else 'FAILED'}**. {m['source']['arch']} at {m['resolution']}×"
        f"{m['resolution']}, {m['num_ws']} ws × {m['w_dim']}; noise baked as constants.",
        "",
        "Each file ran in its own runtime on the latents stored in `reference.npz` (batch 1) and was compared with "
        "PyTorch (float32, eval mode, noise_mode='const'). Tolerances: FP32 — max abs error ≤ "
        f"{v['tolerances']['fp32_max_abs']:g} on the raw output; FP16 — PSNR ≥ {v['tolerances']['fp16_min_psnr_db']:g}"
        " dB on the 0..1 picture (for the mapping network: of the images PyTorch's synthesis makes from the "
        "runtime's w).",
        "",
        "Samples: " + "; ".join(f"`{s['name']}` ({s['how']})" for s in v["samples"]) + ".",
        "",
        "| file | model | precision | runtime | max abs | mean abs | PSNR (dB) | tolerance | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in m["models"]:
        r = e["verification"]
        if e["format"] == "coreml":
            continue
        psnr = r.get("psnr_db", r.get("image_psnr_db"))
        lines.append(
            f"| `{e['path']}` | {e['name']} | {e['precision']} | {e['runtime']} | {_fmt(r.get('max_abs'), '.2e')} | "
            f"{_fmt(r.get('mean_abs'), '.2e')} | {_fmt(psnr, '.1f')} | {r.get('tolerance', '')} | "
            f"{'pass' if r['passed'] else 'FAIL: ' + r.get('error', 'beyond tolerance')} |"
        )
    half = v.get("half_precision")
    if half:
        lines += [
            "",
            "## Half-precision compute (phones)",
            "",
            "Core ML FP16 on an iPhone's GPU or Neural Engine, and TFLite on Android's GPU delegate, compute in "
            "float16, which the runtimes above (float32 on a CPU) cannot show. Emulated here: "
            f"{half['how']}.",
            "",
            "| network | PSNR (dB), worst sample | tolerance | result |",
            "|---|---|---|---|",
            f"| synthesis | {half['synthesis_psnr_db']:.1f} | {half['tolerance']} | "
            f"{'pass' if half['passed'] else 'FAIL'} |",
            f"| mapping (pictures from its w) | {half['mapping_image_psnr_db']:.1f} | {half['tolerance']} | "
            f"{'pass' if half['passed'] else 'FAIL'} |",
        ]
    coreml = [e for e in m["models"] if e["format"] == "coreml"]
    if coreml:
        lines += [
            "",
            "## Core ML",
            "",
            "Core ML cannot run on Linux. Each package was loaded with coremltools' spec API and checked:",
            "",
        ]
        for e in coreml:
            lines.append(f"- `{e['path']}` ({e['name']}, {e['precision']}):")
            for c in e["verification"]["checks"]:
                lines.append(f"  - {'✓' if c['passed'] else '✗'} {c['check']} — {c['detail']}")
        lines += [
            "",
            "To check the numbers on a Mac, run the package on `reference.npz`'s `ws` and compare with its `pixels` "
            "(see docs/ios.md).",
        ]
    lines += ["", "Tool versions: " + ", ".join(f"{k} {v}" for k, v in m["tools"].items()), ""]
    return "\n".join(lines)
