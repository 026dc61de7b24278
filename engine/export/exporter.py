"""`export_model`: a BlazeStyleGAN student → Core ML, TFLite and ONNX files in one folder, each verified, with
manifest.json, verification.md and reference.npz beside them.

Up to four graphs per format:
- synthesis (W+ → image) and mapping (z → w), so a phone can sample new faces; truncation and slider edits are
  arithmetic on W+ that the app does itself with the arrays in the manifest;
- encoder (aligned face crop → W+), whenever an encoder is available, so the phone can take the user's own face in;
- stylizer (`fused`): crop and slider values → edited image in one file, the whole Face Stylizer chain.
The manifest's `pipeline` tells the phone what happens around them (landmarks → quad → crop → model → paste back).

Every graph is frozen first (engine.export.freeze: the work on weights done once) and converted from the one network
definition. Everything is built in a hidden folder next to the destination and moved in at the end, so a failed
conversion never leaves a half-written export, and --force never removes the old one before the new one exists.
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.export import manifest as mf
from engine.export.common import (
    BITS,
    FORMATS,
    MODELS,
    PRECISIONS,
    ExportError,
    VerificationError,
    files_under,
    require_tools,
    sha256_file,
)
from engine.export.verify import (
    FP16_MIN_PSNR,
    FP32_MAX_ABS,
    FULL_INTEGER,
    HALF_MIN_PSNR,
    INT8_MIN_PSNR,
    NO_FULL_INTEGER,
    half_precision,
    half_precision_failure,
)
from engine.models.generator import seeds_to_z


def file_name(model: str, fmt: str, precision: str = "fp32") -> str:
    """The file (or package folder) of one exported model. Core ML names become Swift class names in Xcode."""
    if fmt == "onnx":
        return f"{model}.onnx"
    if fmt == "tflite":
        return f"{model}_{precision.replace('-', '_')}.tflite"
    return f"Blaze{model.capitalize()}.mlpackage"


EXTRA_NAMES = ("manifest.json", "verification.md", "reference.npz")
DEFAULT_PSI = 0.7
REFERENCE_SEEDS = (0, 1, 2)
CALIBRATION_SAMPLES = 32  # inputs per network for full-integer TFLite (activation ranges)


def parse_formats(formats) -> list[str]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for f in (str(x).strip().lower() for x in items):
        if not f:
            continue
        if f not in FORMATS:
            raise ExportError(f"unknown export format '{f}'; choose from {', '.join(FORMATS)} (comma-separated)")
        if f not in out:
            out.append(f)
    if not out:
        raise ExportError(f"no export format given; choose from {', '.join(FORMATS)}")
    return out


def check_precision(precision: str, bits: int = 8) -> str:
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ExportError(
            f"unsupported precision '{precision}'; choose fp16, fp32 or int8 (Core ML's precision; TFLite is always "
            "written in FP32 and FP16, plus two 8-bit files with int8; ONNX is FP32)"
        )
    try:
        bits = int(bits)
    except (TypeError, ValueError):
        bits = -1
    if bits not in BITS:
        raise ExportError(f"unsupported --bits {bits}; choose 8 (linear), 6 or 4 (palettised)")
    if bits != 8 and p != "int8":
        raise ExportError(f"--bits {bits} compresses Core ML weights; it needs --precision int8")
    return p


def _check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --out needs a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty; choose another folder, or pass --force to replace the export in it")


# The teacher's FIR resampling (upfirdn2d: 6-D reshapes and pads, a flipped kernel) converts only to ONNX: litert
# rejects its 6-D pad, coremltools its negative-stride flip (measured with litert-torch 0.10, coremltools 9).
TEACHER_FORMATS = ("onnx",)


def _check_architecture(G, allow_teacher: bool, fmts: list[str]) -> None:
    if G.is_student:
        return
    name = Path(getattr(G, "source_path", "") or "the model").name
    if not allow_teacher:
        raise ExportError(
            f"{name} is a StyleGAN2 teacher; exports are for BlazeStyleGAN students, which are many times smaller "
            "and faster. Distil one first (`python main.py distill`, see its --help), or pass --allow-teacher to "
            "export the teacher to ONNX anyway"
        )
    unsupported = [f for f in fmts if f not in TEACHER_FORMATS]
    if unsupported:
        raise ExportError(
            f"the StyleGAN2 teacher cannot be exported to {', '.join(unsupported)} (its FIR upsampling does not "
            "convert); use --format onnx, or export a distilled student"
        )
    print(f"warning: exporting the StyleGAN2 teacher {name}: expect large files and slow phones", file=sys.stderr)


def _is_bundled(G) -> bool:
    from engine.assets import STUDENT

    src = getattr(G, "source_path", "") or ""
    return bool(src) and STUDENT.exists() and Path(src).resolve() == STUDENT.resolve()


def _resolve_encoder(encoder, G):
    """The Encoder to export: an Encoder, a file, False (none) or None (the bundled one for the bundled student)."""
    from engine.models.encoder import Encoder, check_compatible, load_encoder

    if encoder is False:
        return None
    if encoder is None:
        from engine.assets import ENCODER

        if not (_is_bundled(G) and ENCODER.exists()):
            return None
        encoder = ENCODER
    E = copy.deepcopy(encoder) if isinstance(encoder, Encoder) else load_encoder(encoder)
    check_compatible(E, G)
    return E.float().eval().requires_grad_(False)


def _tool_versions(formats) -> dict[str, str]:
    names = ["torch", "numpy"]
    if "onnx" in formats:
        names += ["onnx", "onnxscript", "onnxruntime"]
    if "tflite" in formats:
        names += ["litert-torch", "ai-edge-litert", "ai-edge-quantizer"]
    if "coreml" in formats:
        names += ["coremltools"]
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def reference_samples(G) -> dict:
    """The fixed latents every file is verified on (and that ship as reference.npz for checks on a device)."""
    z = seeds_to_z(REFERENCE_SEEDS, G.z_dim)
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
        full = w[:, None].repeat(1, G.num_ws, 1)
        t = G.mapping.truncate(full, DEFAULT_PSI)
        mid = G.num_ws // 2
        mix = torch.cat([t[0:1, :mid], t[1:2, mid:]], dim=1)
        ws = torch.cat([t[0:1], full[1:2], G.mapping.truncate(full[2:3], 0.5), mix])
        images = G.synthesis(ws, noise_mode="const")
        # The range of w that the mapping's outputs are documented with (1000 fixed random z).
        zs = torch.from_numpy(np.random.RandomState(1234).randn(1000, G.z_dim)).float()
        w_many = G.mapping(zs)[:, 0]
    from engine.render import to_uint8

    s = REFERENCE_SEEDS
    return {
        "names": np.array([f"seed{s[0]}_psi{DEFAULT_PSI}", f"seed{s[1]}_psi1", f"seed{s[2]}_psi0.5",
                           f"mix_seed{s[0]}_seed{s[1]}_at{mid}"]),
        "how": [
            f"z of seed {s[0]} → w → W+, truncated ψ={DEFAULT_PSI}",
            f"seed {s[1]}, no truncation",
            f"seed {s[2]}, ψ=0.5",
            f"style mix: ws[0:{mid}] of the first, ws[{mid}:] of seed {s[1]} at ψ={DEFAULT_PSI}",
        ],
        "seeds": np.array(s),
        "z": z.numpy(),
        "w": w.numpy(),
        "ws": ws.numpy(),
        "image": images.numpy(),
        "pixels": to_uint8(images),
        "w_range": (float(w_many.min()), float(w_many.max())),
    }


def _as_crops(pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] → what the app feeds the encoder: float32 [N, 3, H, W] in -1..1."""
    return (np.asarray(pixels, np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0).astype(np.float32)


def _photo_crops(size: int) -> list[np.ndarray]:
    """The example portraits (assets/examples) aligned as the phone would: real faces for the encoder's checks and
    calibration. Skipped when MediaPipe finds no face or the photos are missing."""
    from engine.assets import EXAMPLE_PHOTOS

    out = []
    try:
        from engine.faces import align_face

        for path in EXAMPLE_PHOTOS:
            if Path(path).is_file():
                out.append(align_face(path, size=size).image)
    except Exception:  # noqa: BLE001 - real photos are a bonus; rendered faces are always there
        return []
    return out


def face_samples(G, E, ref: dict, dir_doc, D: torch.Tensor | None) -> dict:
    """Reference inputs and PyTorch outputs of the encoder and the stylizer: the rendered reference faces and the
    aligned example photos, as uint8 crops (what a camera gives), and slider settings (0 for the first sample)."""
    from engine.export.wrappers import Stylizer

    pixels = [ref["pixels"][i] for i in range(min(2, len(ref["pixels"])))] + _photo_crops(G.resolution)
    crops = _as_crops(np.stack(pixels))
    with torch.no_grad():
        enc_ws = E(torch.from_numpy(crops)).numpy()
    out = {"crops": crops, "crop_pixels": np.stack(pixels), "encoder_ws": enc_ws}
    if D is not None:
        rng = np.random.RandomState(7)
        lo = np.array([d["slider"][0] for d in dir_doc["items"]], np.float32)
        hi = np.array([d["slider"][1] for d in dir_doc["items"]], np.float32)
        alphas = (rng.uniform(lo, hi, size=(len(crops), len(lo))) * 0.5).astype(np.float32)
        alphas[0] = 0.0
        with torch.no_grad():
            stylized = Stylizer(E, G, D)(torch.from_numpy(crops), torch.from_numpy(alphas)).numpy()
        out.update(alphas=alphas, stylized=stylized)
    return out


class _Spec:
    """One network to export: its graph (frozen lazily), example inputs, manifest contract and checks."""

    def __init__(self, name, module, pixels_module, example, io, verify, calibrate, coreml):
        self.name, self.example = name, example
        self._modules = {"raw": module, "pixels": pixels_module}
        self._frozen = {}
        self.io, self.verify, self.calibrate, self.coreml = io, verify, calibrate, coreml

    def graph(self, kind: str = "raw"):
        """The frozen graph: "raw" (what ONNX/TFLite ship and verification runs) or "pixels" (0..255, for a Core ML
        image output)."""
        from engine.export.freeze import freeze

        module = self._modules[kind] or self._modules["raw"]
        key = id(module)
        if key not in self._frozen:
            self._frozen[key] = freeze(module, self.example)
        return self._frozen[key]


class _Job:
    """One export run: the networks, the staging folder, the references and the manifest entries."""

    def __init__(self, G, E, dir_doc, fused: bool, staging: Path, precision: str, bits: int):
        from engine.export.wrappers import EncoderW, MappingW, Stylizer, SynthesisPixels, SynthesisRaw, direction_matrix

        self.G, self.E, self.dir_doc, self.staging = G, E, dir_doc, staging
        self.precision, self.bits = precision, bits
        self.ref = reference_samples(G)
        self.D = direction_matrix(dir_doc, G.num_ws, G.w_dim) if (fused and dir_doc) else None
        if E is not None:
            self.ref.update(face_samples(G, E, self.ref, dir_doc, self.D))
        self.entries: list[dict] = []
        self.skipped: list[dict] = []  # variants deliberately not made, with the reason
        ref = self.ref
        from engine.export import verify as v

        self.specs = {
            "synthesis": _Spec(
                "synthesis", SynthesisRaw(G), SynthesisPixels(G), {"ws": torch.from_numpy(ref["ws"][:1])},
                lambda fmt: mf.synthesis_io(G, fmt),
                lambda run, p: v.verify_synthesis(run, ref["ws"], ref["image"], p),
                self._calibrate_synthesis,
                {"description": f"BlazeStyleGAN synthesis: W+ [1, {G.num_ws}, {G.w_dim}] → {G.resolution}² RGB face",
                 "inputs": {"ws": "W+ latent: w repeated num_ws times, truncated and edited"},
                 "output": "RGB image", "image_output": True},
            ),
            "mapping": _Spec(
                "mapping", MappingW(G), None, {"z": torch.from_numpy(ref["z"][:1])},
                lambda fmt: mf.mapping_io(G, ref["w_range"]),
                lambda run, p: v.verify_mapping(run, ref["z"], ref["w"], G, p),
                self._calibrate_mapping,
                {"description": f"StyleGAN2 mapping network: z [1, {G.z_dim}] ~ N(0, 1) → w [1, {G.w_dim}]",
                 "inputs": {"z": "standard normal noise"},
                 "output": "untruncated w; repeat num_ws times for W+", "image_output": False},
            ),
        }
        if E is not None:
            self.specs["encoder"] = _Spec(
                "encoder", EncoderW(E), None, {"face": torch.from_numpy(ref["crops"][:1])},
                lambda fmt: mf.encoder_io(G, fmt),
                lambda run, p: v.verify_encoder(run, ref["crops"], ref["encoder_ws"], G, p),
                None,  # no full-integer encoder (FULL_INTEGER)
                {"description": f"Inversion encoder: aligned face {G.resolution}² → W+ [1, {G.num_ws}, {G.w_dim}]",
                 "inputs": {"face": "aligned face crop (see manifest.json pipeline.alignment)"},
                 "output": "W+ of the face: add slider edits, then run BlazeSynthesis", "image_output": False,
                 "image_inputs": ["face"]},
            )
        if self.D is not None:
            K = self.D.shape[0]
            self.specs["stylizer"] = _Spec(
                "stylizer", Stylizer(E, G, self.D), Stylizer(E, G, self.D, pixels=True),
                {"face": torch.from_numpy(ref["crops"][:1]), "alphas": torch.from_numpy(ref["alphas"][:1])},
                lambda fmt: mf.stylizer_io(G, fmt, K),
                lambda run, p: v.verify_stylizer(run, ref["crops"], ref["alphas"], ref["stylized"], p),
                None,
                {"description": f"Face stylizer: aligned face {G.resolution}² + {K} slider values → edited face",
                 "inputs": {"face": "aligned face crop (see manifest.json pipeline.alignment)",
                            "alphas": "slider values, in manifest.json pipeline.sliders order"},
                 "output": "RGB image, paste it back into the photo", "image_output": True, "image_inputs": ["face"]},
            )

    # -- calibration inputs for full-integer TFLite: rendered latents edited by the sliders, aligned crops' W+ -------
    def _calibration_ws(self) -> np.ndarray:
        G = self.G
        n = CALIBRATION_SAMPLES
        z = seeds_to_z(range(1000, 1000 + n), G.z_dim)
        psi = torch.tensor([(0.5, 0.7, 1.0)[i % 3] for i in range(n)])[:, None, None]
        with torch.no_grad():
            ws = G.mapping(z)
            ws = G.w_avg + psi * (ws - G.w_avg)
            if self.dir_doc:
                from engine.export.wrappers import direction_matrix

                D = direction_matrix(self.dir_doc, G.num_ws, G.w_dim).reshape(len(self.dir_doc["items"]), -1)
                a = torch.from_numpy(self._slider_values(n, 3))
                ws = ws + (a @ D).reshape(ws.shape)
        if "encoder_ws" in self.ref:
            return np.concatenate([ws.numpy(), self.ref["encoder_ws"]])
        return ws.numpy()

    def _slider_values(self, n: int, seed: int) -> np.ndarray:
        """n random settings of every slider within its range: the activations int8 must cover."""
        lo = np.array([d["slider"][0] for d in self.dir_doc["items"]], np.float32)
        hi = np.array([d["slider"][1] for d in self.dir_doc["items"]], np.float32)
        return np.random.RandomState(seed).uniform(lo, hi, (n, len(lo))).astype(np.float32)

    def _calibrate_synthesis(self):
        return [{"ws": w[None]} for w in self._calibration_ws()]

    def _calibrate_mapping(self):
        z = seeds_to_z(range(2000, 2000 + CALIBRATION_SAMPLES), self.G.z_dim).numpy()
        return [{"z": x[None]} for x in z]

    # -- entries ------------------------------------------------------------------------------------------------------
    def add(self, name, fmt, precision, info, inputs, outputs, runtime, verification, seconds):
        self.entries.append({
            "name": name,
            "format": fmt,
            "precision": precision,
            "path": file_name(name, fmt, precision),
            "runtime": runtime,
            "inputs": inputs,
            "outputs": outputs,
            **{k: v for k, v in info.items() if k != "files"},
            "files": [str(p.relative_to(self.staging)) for p in info["files"]],
            "verification": verification,
            "convert_seconds": round(seconds, 1),
        })

    # -- formats -----------------------------------------------------------------------------------------------------
    def onnx(self, name: str) -> None:
        from engine.export.to_onnx import export_onnx
        from engine.export.verify import onnx_runner

        spec = self.specs[name]
        t = time.perf_counter()
        path = self.staging / file_name(name, "onnx")
        inputs, outputs = spec.io("onnx")
        info = export_onnx(spec.graph(), spec.example, outputs[0]["name"], path)
        seconds = time.perf_counter() - t
        io_error = _onnx_io_mismatch(path, inputs, outputs)
        if io_error:
            result = {"passed": False, "error": io_error}
        else:
            result = spec.verify(onnx_runner(path, [i["name"] for i in inputs], outputs[0]["name"]), "fp32")
        self.add(name, "onnx", "fp32", info, inputs, outputs, _runtime("onnxruntime"), result, seconds)

    def tflite_precisions(self, name: str) -> tuple[str, ...]:
        if self.precision != "int8":
            return ("fp32", "fp16")
        if name in FULL_INTEGER:
            return ("fp32", "fp16", "int8", "int8-full")
        self.skipped.append({"model": name, "format": "tflite", "precision": "int8-full", "why": NO_FULL_INTEGER})
        return ("fp32", "fp16", "int8")

    def tflite(self, name: str) -> None:
        from engine.export.to_tflite import export_tflite, tflite_io
        from engine.export.verify import tflite_runner

        spec = self.specs[name]
        t = time.perf_counter()
        precisions = self.tflite_precisions(name)
        paths = {p: self.staging / file_name(name, "tflite", p) for p in precisions}
        inputs, outputs = spec.io("tflite")
        calibration = spec.calibrate() if "int8-full" in precisions else None
        infos = export_tflite(spec.graph(), spec.example, outputs[0]["name"], paths, calibration)
        seconds = time.perf_counter() - t
        want_in = {i["name"]: {"shape": i["shape"], "dtype": i["dtype"]} for i in inputs}
        want_out = {o["name"]: {"shape": o["shape"], "dtype": o["dtype"]} for o in outputs}
        for precision in precisions:
            io = tflite_io(paths[precision])
            if (io["inputs"], io["outputs"]) != (want_in, want_out):
                result = {"passed": False, "error": f"signature {io['inputs']} → {io['outputs']} is not the manifest's"}
            else:
                run = tflite_runner(paths[precision], [i["name"] for i in inputs], outputs[0]["name"])
                result = spec.verify(run, precision)
            self.add(name, "tflite", precision, infos[precision], inputs, outputs, _runtime("ai-edge-litert"),
                     result, seconds)  # one conversion makes every variant

    def coreml(self, name: str) -> None:
        from engine.export.to_coreml import coreml_precision, emulate_compression, export_coreml, validate_coreml

        G, spec = self.G, self.specs[name]
        precision = coreml_precision(self.precision, self.bits)
        t = time.perf_counter()
        path = self.staging / file_name(name, "coreml")
        meta = {"num_ws": G.num_ws, "w_dim": G.w_dim, "z_dim": G.z_dim, "resolution": G.resolution,
                "noise_mode": "const", "source": Path(getattr(G, "source_path", "") or "").name}
        inputs, outputs = spec.io("coreml")
        c = spec.coreml
        info = export_coreml(
            spec.graph("pixels" if c["image_output"] else "raw"), spec.example, outputs[0]["name"], path, precision,
            image_output=c["image_output"], image_inputs=c.get("image_inputs", ()), description=c["description"],
            input_descriptions=c["inputs"], output_description=c["output"], metadata=meta,
        )
        seconds = time.perf_counter() - t
        result = validate_coreml(path, inputs, outputs, precision)
        runtime = "none (structural checks)"
        if precision not in ("fp16", "fp32"):
            # No Core ML runtime here: the pictures of PyTorch with the package's weight compression stand in.
            emulated = emulate_compression(spec.graph(), precision)

            def run(*xs):
                with torch.no_grad():
                    return emulated(*(torch.from_numpy(np.asarray(x, np.float32)) for x in xs)).numpy()

            numbers = spec.verify(run, precision)
            numbers["emulated"] = "PyTorch with the package's weight compression applied to its weights"
            numbers["pictures_passed"] = numbers["passed"]
            result = {**numbers, **result, "passed": bool(result["passed"] and numbers["passed"])}
            runtime = "none (structural checks; numbers emulated in PyTorch)"
        self.add(name, "coreml", precision, info, inputs, outputs, runtime, result, seconds)


def _runtime(package: str) -> str:
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def _onnx_io_mismatch(path: Path, inputs, outputs) -> str | None:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph

    def dims(v):
        return [d.dim_value for d in v.type.tensor_type.shape.dim]

    have = ([(v.name, dims(v)) for v in g.input], [(v.name, dims(v)) for v in g.output])
    want = ([(i["name"], i["shape"]) for i in inputs], [(o["name"], o["shape"]) for o in outputs])
    return None if have == want else f"graph inputs/outputs {have} are not the manifest's {want}"


def export_model(
    model=None,
    out=None,
    formats=FORMATS,
    precision: str = "fp16",
    directions=None,
    force: bool = False,
    allow_teacher: bool = False,
    progress: bool = True,
    callback=None,
    encoder=None,
    fused: bool = False,
    bits: int = 8,
) -> dict:
    """Export `model` (a Generator, a model file, or None for the bundled student) into the folder `out`.

    formats: any of "coreml", "tflite", "onnx" (list or comma-separated string). precision: Core ML's, "fp16"
    (default), "fp32" or "int8" (8-bit weights; `bits` 6 or 4 palettises them instead); TFLite is always written in
    FP32 and FP16 and with int8 also as dynamic-range and full-integer 8-bit files; ONNX in FP32. directions: a
    direction-set .npz copied into the manifest (default for the bundled student: its bundled set). encoder: an
    Encoder or encoder file to export too; None = the bundled encoder for the bundled student; False = none. fused:
    also one stylizer graph, crop + slider values → image (needs an encoder and directions). progress: a tqdm bar on
    stderr. callback: called as callback(done, total, text) before each conversion and once at the end (for a GUI's
    progress bar). Returns the manifest (also written to out/manifest.json).

    Raises ExportError (a UserError) for bad options, an existing non-empty `out` without `force`, a teacher without
    `allow_teacher`, or a failed conversion; VerificationError when a file is beyond tolerance (the export is then
    still written, with the failure in manifest.json and verification.md, for inspection)."""
    from engine.models.generator import Generator

    if out is None:
        raise ExportError("give an output folder (--out DIR)")
    out = Path(out)
    fmts = parse_formats(formats)
    precision = check_precision(precision, bits)
    bits = int(bits)
    _check_destination(out, force)
    if isinstance(model, Generator):
        G = copy.deepcopy(model)  # the caller's model keeps its mode, grads and memory format
    else:
        from engine.io.checkpoints import load_generator

        G = load_generator(model)
    G = G.float().eval().requires_grad_(False).to(memory_format=torch.contiguous_format)
    _check_architecture(G, allow_teacher, fmts)
    if directions is None and _is_bundled(G):
        from engine.assets import DIRECTIONS

        directions = DIRECTIONS if DIRECTIONS.exists() else None
    dir_doc = mf.read_directions(directions, G) if directions else None
    E = _resolve_encoder(encoder, G)
    if fused and (E is None or not dir_doc or not dir_doc["items"]):
        missing = " and ".join(w for w, ok in (("an encoder (--encoder FILE)", E is not None),
                                                ("directions (--directions FILE)", bool(dir_doc and dir_doc["items"])))
                               if not ok)
        raise ExportError(f"--fused bakes the encoder and the sliders into one model; it needs {missing}")
    require_tools(fmts)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        manifest = _run(G, E, staging, fmts, precision, bits, dir_doc, fused, progress, callback)
        _install(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not manifest["verification"]["passed"]:
        bad = [f"{e['path']} ({_failure(e['verification'])})" for e in manifest["models"]
               if not e["verification"]["passed"]]
        half = manifest["verification"]["half_precision"]
        if not half["passed"]:
            bad.append(f"half-precision compute ({half_precision_failure(half)}; needs {half['tolerance']})")
        raise VerificationError(f"verification failed for {', '.join(bad)}; see {out / 'verification.md'}")
    return manifest


def _failure(r: dict) -> str:
    if "error" in r:
        return r["error"]
    failed = [c["check"] for c in r.get("checks", ()) if not c["passed"]]
    psnr = r.get("psnr_db", r.get("image_psnr_db"))
    if psnr is not None and not (r.get("checks") and failed):
        return f"max abs {r['max_abs']:.2e}, PSNR {psnr:.1f} dB; needs {r['tolerance']}"
    if failed:
        return "; ".join(failed)
    return f"max abs {r['max_abs']:.2e}; needs {r['tolerance']}"


def _run(G, E, staging: Path, fmts, precision, bits, dir_doc, fused, progress: bool, callback=None) -> dict:
    from engine.export.to_coreml import coreml_precision

    int8 = " + INT8" if precision == "int8" else ""
    labels = {"onnx": "ONNX", "tflite": f"TFLite FP32+FP16{int8}",
              "coreml": f"Core ML {coreml_precision(precision, bits).upper()}"}
    names = [n for n in MODELS if n in ("synthesis", "mapping") or (n == "encoder" and E is not None)
             or (n == "stylizer" and fused)]
    steps = [(fmt, name) for fmt in ("onnx", "tflite", "coreml") if fmt in fmts for name in names]
    total = len(steps) + 1
    bar = tqdm(total=total, desc="export: reference images", unit="step", disable=not progress, file=sys.stderr)

    def report(done: int, text: str) -> None:
        bar.set_description(f"export: {text}")
        if callback is not None:
            callback(done, total, text)

    try:
        report(0, "reference images, half-precision check")
        job = _Job(G, E, dir_doc, fused, staging, precision, bits)
        job.half = half_precision(G, job.ref, encoder=E, directions=job.D)
        bar.update(1)
        for i, (fmt, name) in enumerate(steps, start=1):
            report(i, f"{labels[fmt]} {name} (convert + verify)")
            getattr(job, fmt)(name)
            bar.update(1)
        report(total, "manifest")
    finally:
        bar.close()
    return _write_extras(job, fmts, dir_doc, names)


REFERENCE_KEYS = ("names", "seeds", "z", "w", "ws", "image", "pixels", "crops", "crop_pixels", "encoder_ws", "alphas",
                  "stylized")


def _sizes(entries: list[dict]) -> dict:
    """{model: {"format precision": bytes}}: what each variant costs on the phone."""
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        out.setdefault(e["name"], {})[f"{e['format']} {e['precision']}"] = e["bytes"]
    return out


def _write_extras(job: _Job, fmts, dir_doc, names) -> dict:
    G, ref, staging = job.G, job.ref, job.staging
    np.savez(staging / "reference.npz", **{k: ref[k] for k in REFERENCE_KEYS if k in ref})
    from engine.io.latents import w_space_id

    src = getattr(G, "source_path", None)
    src_path = Path(src).resolve() if src else None
    E = job.E
    enc_src = Path(getattr(E, "source_path", "") or "") if E is not None else None
    manifest = {
        "format": mf.FORMAT,
        "version": mf.VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "path": str(src_path) if src_path else None,
            "file": src_path.name if src_path else None,
            "sha256": sha256_file(src_path) if src_path and src_path.is_file() else None,
            "arch": G.cfg.arch,
            "config": G.cfg.to_dict(),
        },
        "encoder": None if E is None else {
            "path": str(enc_src.resolve()) if enc_src and enc_src.name else None,
            "file": enc_src.name if enc_src and enc_src.name else None,
            "sha256": sha256_file(enc_src) if enc_src and enc_src.is_file() else None,
            "config": {k: v for k, v in E.cfg.to_dict().items() if k != "info"},
        },
        "resolution": G.resolution,
        "num_ws": G.num_ws,
        "w_dim": G.w_dim,
        "z_dim": G.z_dim,
        "w_space_id": w_space_id(G),
        "noise_mode": "const",
        "w_avg": np.round(G.w_avg.detach().double().numpy(), 7).tolist(),
        "truncation": {"formula": mf.TRUNCATION, "default_psi": DEFAULT_PSI},
        "directions": dir_doc,
        "pipeline": mf.pipeline(G, dir_doc, names),
        "models": job.entries,
        "skipped": job.skipped,
        "verification": {
            "passed": all(e["verification"]["passed"] for e in job.entries) and job.half["passed"],
            "tolerances": {"fp32_max_abs": FP32_MAX_ABS, "fp16_min_psnr_db": FP16_MIN_PSNR,
                           "int8_min_psnr_db": dict(INT8_MIN_PSNR), "half_compute_min_psnr_db": HALF_MIN_PSNR},
            "half_precision": job.half,
            "samples": [{"name": str(n), "how": h} for n, h in zip(ref["names"], ref["how"])],
            "reference": "reference.npz",
            "report": "verification.md",
        },
        "tools": _tool_versions(fmts),
    }
    # Every file in the folder but the manifest itself, with its hash; model entries list theirs too.
    (staging / "verification.md").write_text("")  # placeholder: listed now, written once the sizes are known
    hashes = {str(p.relative_to(staging)): p for p in files_under(staging)}
    files = {rel: {"bytes": p.stat().st_size} for rel, p in sorted(hashes.items())}
    for e in job.entries:
        e["bytes"] = sum(files[rel]["bytes"] for rel in e["files"])
    manifest["sizes"] = _sizes(job.entries)
    (staging / "verification.md").write_text(mf.render_report(manifest))
    manifest["files"] = {
        rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for rel, p in sorted(hashes.items())
    }
    for e in job.entries:
        e["files"] = [{"path": rel, **manifest["files"][rel]} for rel in e["files"]]
    mf.write_json(staging / "manifest.json", manifest)
    return manifest


def _install(staging: Path, out: Path) -> None:
    """Move the finished export into `out`, replacing only what an export writes (other files stay)."""
    from engine.export.to_tflite import PRECISIONS as TFLITE_PRECISIONS

    out.mkdir(parents=True, exist_ok=True)
    ours = {file_name(m, f, p) for m in MODELS for f in FORMATS for p in TFLITE_PRECISIONS}
    ours |= set(EXTRA_NAMES)
    for item in list(out.iterdir()):
        if item.name in ours or item.name.endswith(".onnx.data"):
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    for item in staging.iterdir():
        os.replace(item, out / item.name)


def summary(manifest: dict, out: Path) -> str:
    """A few lines for the terminal: each file, its size and its verification."""
    lines = []
    for e in manifest["models"]:
        r = e["verification"]
        psnr = r.get("psnr_db", r.get("image_psnr_db"))
        if "error" in r:
            check = r["error"]
        elif e["format"] == "coreml":
            n = sum(c["passed"] for c in r["checks"])
            check = f"{n}/{len(r['checks'])} package checks passed"
            if psnr is not None:
                check += f", emulated PSNR {psnr:.1f} dB"
        else:
            check = f"max abs {r['max_abs']:.1e}, PSNR {psnr:.1f} dB"
        status = "ok" if r["passed"] else "FAILED"
        lines.append(f"  {e['path']:30s} {e['bytes'] / 1e6:7.2f} MB  {status:6s} {check}")
    half = manifest["verification"].get("half_precision")
    if half:
        lines.append(f"  half-precision compute (phone GPUs)       {'ok' if half['passed'] else 'FAILED':6s} "
                     f"{half_precision_failure(half)}")
    return f"wrote {out}:\n" + "\n".join(lines)
