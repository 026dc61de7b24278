"""What goes beside the exported files: the input/output contracts, the arrays a phone needs to build W+ itself
(w_avg, directions), and the human-readable verification report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from engine.errors import UserError

FORMAT = "blazestudio-export"
VERSION = 2  # 2: encoder and fused stylizer models, `pipeline`, 8-bit files, `sizes`

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


FACE = "x = pixel / 127.5 - 1: the aligned crop's 0..255 RGB values mapped to -1..1"


def _face_input(G, fmt: str) -> dict:
    r = G.resolution
    if fmt == "coreml":
        return {"name": "face", "type": "image", "color_layout": "RGB", "width": r, "height": r,
                "note": "the aligned face crop (CVPixelBuffer); Core ML applies " + FACE}
    return {"name": "face", "shape": [1, 3, r, r], "dtype": "float32", "layout": "NCHW, channels R, G, B",
            "range": [-1, 1], "note": "the aligned face crop (see pipeline.alignment), " + FACE}


def _image_output(G, fmt: str) -> dict:
    return synthesis_io(G, fmt)[1][0]


def encoder_io(G, fmt: str) -> tuple[list[dict], list[dict]]:
    outputs = [{"name": "ws", "shape": [1, G.num_ws, G.w_dim], "dtype": "float32",
                "note": "the face's W+; add slider edits (directions.apply), then run synthesis"}]
    return [_face_input(G, fmt)], outputs


def stylizer_io(G, fmt: str, num_sliders: int) -> tuple[list[dict], list[dict]]:
    alphas = {"name": "alphas", "shape": [1, num_sliders], "dtype": "float32",
              "note": "one value per slider, in pipeline.sliders order (0 = no edit; ranges there)"}
    return [_face_input(G, fmt), alphas], [_image_output(G, fmt)]


def pipeline(G, dir_doc: dict | None, models: list[str]) -> dict:
    """What a phone does around the models, from a camera frame or photo to the edited photo: the alignment (FFHQ's
    quad from the eyes and the mouth), the crop's normalisation, the sliders and the paste-back. Formulas in image
    pixels (x right, y down); `engine/faces` does the same on the desktop."""
    from engine.faces.landmarks import EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, MOUTH_IMAGE_LEFT, MOUTH_IMAGE_RIGHT
    from engine.faces.paste import DEFAULT_FEATHER, FACE_CENTER, FACE_RADII

    r = G.resolution
    doc = {
        "steps": [
            "landmarks: find the face's eyes and mouth corners (MediaPipe Face Landmarker, or Apple Vision)",
            "quad: the FFHQ crop square from those four points (alignment.quad)",
            f"crop: warp the quad to a {r}×{r} RGB image (alignment.crop)",
            "normalise: x = pixel / 127.5 - 1, NCHW float32 (Core ML: pass the crop as an image)",
            "model: stylizer (crop + sliders → image) or encoder → W+ + Σ alpha·d → synthesis",
            "image: pixel = round(clamp((x + 1) / 2, 0, 1) * 255)",
            "paste back: warp the image into the photo with the inverse of the crop's transform, blended by the "
            "feathered ellipse (paste_back)",
        ],
        "face_input": {"size": r, "layout": "NCHW, channels R, G, B", "normalisation": FACE},
        "alignment": {
            "recipe": "FFHQ (Karras et al. 2019, recreate_aligned_images), as engine/faces/align.py",
            "keypoints": {
                "eye_left": "centre of the eye with the smaller x in the image (MediaPipe face mesh: mean of points "
                            f"{list(EYE_IMAGE_LEFT)}; Vision: mean of VNFaceLandmarks2D's eye points)",
                "eye_right": f"centre of the other eye (MediaPipe: mean of points {list(EYE_IMAGE_RIGHT)})",
                "mouth_left": f"mouth corner with the smaller x (MediaPipe point {MOUTH_IMAGE_LEFT}; Vision: the "
                              "outer lips' leftmost point)",
                "mouth_right": f"the other mouth corner (MediaPipe point {MOUTH_IMAGE_RIGHT})",
            },
            "quad": [
                "eye_avg = (eye_left + eye_right) / 2; eye_to_eye = eye_right - eye_left",
                "mouth_avg = (mouth_left + mouth_right) / 2; eye_to_mouth = mouth_avg - eye_avg",
                "x = eye_to_eye - rot90(eye_to_mouth), where rot90((a, b)) = (-b, a); x /= |x|",
                "x *= max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|); y = (-x.y, x.x)",
                "c = eye_avg + 0.1 * eye_to_mouth",
                "quad = [c - x - y, c - x + y, c + x + y, c + x - y] (top-left, bottom-left, bottom-right, "
                "top-right of the crop)",
            ],
            "crop": f"the affine map sending quad[0] → (-0.5, -0.5), quad[1] → (-0.5, {r - 0.5}), quad[3] → "
                    f"({r - 0.5}, -0.5) in crop pixels (pixel centres at integers); bilinear resampling, mirrored "
                    "outside the photo; shrink the photo first (area filter) when the quad is more than twice "
                    f"{r} pixels wide",
        },
        "paste_back": {
            "mask": f"in crop units u, v in 0..1: ellipse centred at {list(FACE_CENTER)} with radii "
                    f"{list(FACE_RADII)}, weight 1 inside fading to 0 over {DEFAULT_FEATHER} (smoothstep) at its "
                    "edge",
            "how": "photo = photo + (warped image - photo) * mask, only inside the quad's bounding box",
        },
        "models": models,
    }
    if dir_doc:
        doc["sliders"] = [{"index": i, "name": d["name"], "range": d["slider"], "layers": d["layers"]}
                          for i, d in enumerate(dir_doc["items"])]
    return doc


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
    tol = v["tolerances"]
    int8 = ", ".join(f"{k} ≥ {b:g} dB" for k, b in tol.get("int8_min_psnr_db", {}).items())
    lines = [
        f"# Export verification: {m['source']['file'] or 'in-memory model'}",
        "",
        f"**Result: {'PASSED' if v['passed'] else 'FAILED'}**. {m['source']['arch']} at {m['resolution']}×"
        f"{m['resolution']}, {m['num_ws']} ws × {m['w_dim']}; noise baked as constants.",
        "",
        "Each file ran in its own runtime on the inputs stored in `reference.npz` (batch 1) and was compared with "
        "PyTorch (float32, eval mode, noise_mode='const'). Tolerances: FP32 — max abs error ≤ "
        f"{tol['fp32_max_abs']:g} on the raw output; FP16 — PSNR ≥ {tol['fp16_min_psnr_db']:g}"
        f" dB on the 0..1 picture; 8-bit — {int8 or 'n/a'}. Networks that output a latent (mapping, encoder) are "
        "judged on the pictures PyTorch's synthesis makes from the runtime's output.",
        "",
        "Samples: " + "; ".join(f"`{s['name']}` ({s['how']})" for s in v["samples"]) + "."
        + (" The encoder and the stylizer see `reference.npz`'s `crops`: two rendered faces and the aligned "
           "example photos, as a camera gives them (uint8)." if m.get("encoder") else ""),
        "",
        "| file | model | precision | runtime | max abs | mean abs | PSNR (dB) | tolerance | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in m["models"]:
        r = e["verification"]
        if e["format"] == "coreml" and "max_abs" not in r and "error" not in r:
            continue
        psnr = r.get("psnr_db", r.get("image_psnr_db"))
        result = "pass" if r["passed"] else "FAIL: " + r.get("error", "beyond tolerance")
        lines.append(
            f"| `{e['path']}` | {e['name']} | {e['precision']} | {e['runtime']} | {_fmt(r.get('max_abs'), '.2e')} | "
            f"{_fmt(r.get('mean_abs'), '.2e')} | {_fmt(psnr, '.1f')} | {r.get('tolerance', '')} | {result} |"
        )
    sizes = m.get("sizes")
    if sizes:
        cols = sorted({k for row in sizes.values() for k in row}, key=lambda k: (k.split()[0], _PREC_ORDER.get(
            k.split()[1], 9)))
        lines += ["", "## File sizes (MB)", "", "| model | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for name, row in sizes.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c) and row[c] / 1e6, ".2f") for c in cols) + " |")
    for sk in m.get("skipped") or ():
        lines.append(f"\nNot made: `{sk['model']}` {sk['format']} {sk['precision']} — {sk['why']}.")
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
        ]
        rows = (("synthesis_psnr_db", "synthesis"), ("mapping_image_psnr_db", "mapping (pictures from its w)"),
                ("encoder_image_psnr_db", "encoder (pictures from its W+)"), ("stylizer_psnr_db", "stylizer"))
        for key, what in rows:
            if key in half:
                ok = half[key] >= tol["half_compute_min_psnr_db"]
                lines.append(f"| {what} | {half[key]:.1f} | {half['tolerance']} | {'pass' if ok else 'FAIL'} |")
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
            for c in e["verification"].get("checks", ()):
                lines.append(f"  - {'✓' if c['passed'] else '✗'} {c['check']} — {c['detail']}")
            if "emulated" in e["verification"]:
                r = e["verification"]
                lines.append(f"  - {'✓' if r['pictures_passed'] else '✗'} pictures, emulated ({r['emulated']}): PSNR "
                             f"{r.get('psnr_db', r.get('image_psnr_db')):.1f} dB; needs {r['tolerance']}")
        lines += [
            "",
            "To check the numbers on a Mac, run the package on `reference.npz`'s `ws` and compare with its `pixels` "
            "(see docs/ios.md).",
        ]
    lines += ["", "Tool versions: " + ", ".join(f"{k} {v}" for k, v in m["tools"].items()), ""]
    return "\n".join(lines)


_PREC_ORDER = {"fp32": 0, "fp16": 1, "int8": 2, "int8-full": 3, "palette6": 4, "palette4": 5}
