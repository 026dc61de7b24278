"""`export_model`: a BlazeStyleGAN student → Core ML, TFLite and ONNX files in one folder, each verified, with
manifest.json, verification.md and reference.npz beside them.

Two graphs per format: the synthesis network (W+ → image) and the mapping network (z → w), so a phone can sample new
faces. Truncation and slider edits are arithmetic on W+ that the app does itself with the arrays in the manifest.
Everything is built in a hidden folder next to the destination and moved in at the end, so a failed conversion
never leaves a half-written export, and --force never removes the old one before the new one exists.
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
    FORMATS,
    PRECISIONS,
    ExportError,
    VerificationError,
    files_under,
    require_tools,
    sha256_file,
)
from engine.export.verify import FP16_MIN_PSNR, FP32_MAX_ABS, HALF_MIN_PSNR, half_precision
from engine.export.wrappers import MappingW, SynthesisPixels, SynthesisRaw


def file_name(model: str, fmt: str, precision: str = "fp32") -> str:
    """The file (or package folder) of one exported model. Core ML names become Swift class names in Xcode."""
    if fmt == "onnx":
        return f"{model}.onnx"
    if fmt == "tflite":
        return f"{model}_{precision}.tflite"
    return f"Blaze{model.capitalize()}.mlpackage"


EXTRA_NAMES = ("manifest.json", "verification.md", "reference.npz")
DEFAULT_PSI = 0.7
REFERENCE_SEEDS = (0, 1, 2)


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


def check_precision(precision: str) -> str:
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ExportError(
            f"unsupported precision '{precision}'; choose fp16 or fp32 (the Core ML precision; TFLite always gets "
            "both, ONNX is fp32)"
        )
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
    from engine.models.generator import seeds_to_z

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


class _Job:
    """One export run: holds the generator, the staging folder, the references and the manifest entries."""

    def __init__(self, G, staging: Path, precision: str):
        self.G, self.staging, self.precision = G, staging, precision
        self.ref = reference_samples(G)
        self.entries: list[dict] = []
        self.syn_example = {"ws": torch.from_numpy(self.ref["ws"][:1])}
        self.map_example = {"z": torch.from_numpy(self.ref["z"][:1])}

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
        from engine.export.verify import onnx_runner, verify_mapping, verify_synthesis

        G, ref = self.G, self.ref
        t = time.perf_counter()
        path = self.staging / file_name(name, "onnx")
        if name == "synthesis":
            inputs, outputs = mf.synthesis_io(G, "onnx")
            info = export_onnx(SynthesisRaw(G), self.syn_example, "image", path)
        else:
            inputs, outputs = mf.mapping_io(G, ref["w_range"])
            info = export_onnx(MappingW(G), self.map_example, "w", path)
        seconds = time.perf_counter() - t
        io_error = _onnx_io_mismatch(path, inputs, outputs)
        if io_error:
            result = {"passed": False, "error": io_error}
        else:
            run = onnx_runner(path, inputs[0]["name"], outputs[0]["name"])
            if name == "synthesis":
                result = verify_synthesis(run, ref["ws"], ref["image"], "fp32")
            else:
                result = verify_mapping(run, ref["z"], ref["w"], G, "fp32")
        self.add(name, "onnx", "fp32", info, inputs, outputs, _runtime("onnxruntime"), result, seconds)

    def tflite(self, name: str) -> None:
        from engine.export.to_tflite import export_tflite, tflite_io
        from engine.export.verify import tflite_runner, verify_mapping, verify_synthesis

        G, ref = self.G, self.ref
        t = time.perf_counter()
        paths = {p: self.staging / file_name(name, "tflite", p) for p in ("fp32", "fp16")}
        if name == "synthesis":
            inputs, outputs = mf.synthesis_io(G, "tflite")
            infos = export_tflite(SynthesisRaw(G), self.syn_example, "image", paths["fp32"], paths["fp16"])
        else:
            inputs, outputs = mf.mapping_io(G, ref["w_range"])
            infos = export_tflite(MappingW(G), self.map_example, "w", paths["fp32"], paths["fp16"])
        seconds = time.perf_counter() - t
        for precision in ("fp32", "fp16"):
            io = tflite_io(paths[precision])
            want_in = {i["name"]: {"shape": i["shape"], "dtype": i["dtype"]} for i in inputs}
            want_out = {o["name"]: {"shape": o["shape"], "dtype": o["dtype"]} for o in outputs}
            if (io["inputs"], io["outputs"]) != (want_in, want_out):
                result = {"passed": False, "error": f"signature {io['inputs']} → {io['outputs']} is not the manifest's"}
            else:
                run = tflite_runner(paths[precision], inputs[0]["name"], outputs[0]["name"])
                if name == "synthesis":
                    result = verify_synthesis(run, ref["ws"], ref["image"], precision)
                else:
                    result = verify_mapping(run, ref["z"], ref["w"], G, precision)
            self.add(name, "tflite", precision, infos[precision], inputs, outputs, _runtime("ai-edge-litert"),
                     result, seconds)  # one conversion makes both variants

    def coreml(self, name: str) -> None:
        from engine.export.to_coreml import export_coreml, validate_coreml

        G, ref = self.G, self.ref
        t = time.perf_counter()
        path = self.staging / file_name(name, "coreml")
        meta = {"num_ws": G.num_ws, "w_dim": G.w_dim, "z_dim": G.z_dim, "resolution": G.resolution,
                "noise_mode": "const", "source": Path(getattr(G, "source_path", "") or "").name}
        if name == "synthesis":
            inputs, outputs = mf.synthesis_io(G, "coreml")
            info = export_coreml(
                SynthesisPixels(G), self.syn_example, "image", path, self.precision, image_output=True,
                description=f"BlazeStyleGAN synthesis: W+ [1, {G.num_ws}, {G.w_dim}] → {G.resolution}² RGB face",
                input_descriptions={"ws": "W+ latent: w repeated num_ws times, truncated and edited"},
                output_description="RGB image", metadata=meta,
            )
        else:
            inputs, outputs = mf.mapping_io(G, ref["w_range"])
            info = export_coreml(
                MappingW(G), self.map_example, "w", path, self.precision,
                description=f"StyleGAN2 mapping network: z [1, {G.z_dim}] ~ N(0, 1) → w [1, {G.w_dim}]",
                input_descriptions={"z": "standard normal noise"},
                output_description="untruncated w; repeat num_ws times for W+", metadata=meta,
            )
        seconds = time.perf_counter() - t
        result = validate_coreml(path, inputs, outputs, self.precision)
        self.add(name, "coreml", self.precision, info, inputs, outputs, "none (structural checks)", result, seconds)


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
) -> dict:
    """Export `model` (a Generator, a model file, or None for the bundled student) into the folder `out`.

    formats: any of "coreml", "tflite", "onnx" (list or comma-separated string). precision: Core ML's, "fp16"
    (default) or "fp32"; TFLite is always written in both, ONNX in fp32. directions: an optional direction-set .npz
    copied into the manifest. progress: a tqdm bar on stderr. callback: called as callback(done, total, text) before
    each conversion and once at the end (for a GUI's progress bar). Returns the manifest (also written to
    out/manifest.json).

    Raises ExportError (a UserError) for bad options, an existing non-empty `out` without `force`, a teacher without
    `allow_teacher`, or a failed conversion; VerificationError when a file is beyond tolerance (the export is then
    still written, with the failure in manifest.json and verification.md, for inspection)."""
    from engine.models.generator import Generator

    if out is None:
        raise ExportError("give an output folder (--out DIR)")
    out = Path(out)
    fmts = parse_formats(formats)
    precision = check_precision(precision)
    _check_destination(out, force)
    if isinstance(model, Generator):
        G = copy.deepcopy(model)  # the caller's model keeps its mode, grads and memory format
    else:
        from engine.io.checkpoints import load_generator

        G = load_generator(model)
    G = G.float().eval().requires_grad_(False).to(memory_format=torch.contiguous_format)
    _check_architecture(G, allow_teacher, fmts)
    dir_doc = mf.read_directions(directions, G) if directions else None
    require_tools(fmts)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        manifest = _run(G, staging, fmts, precision, dir_doc, progress, callback)
        _install(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not manifest["verification"]["passed"]:
        bad = [f"{e['path']} ({_failure(e['verification'])})" for e in manifest["models"]
               if not e["verification"]["passed"]]
        half = manifest["verification"]["half_precision"]
        if not half["passed"]:
            bad.append(f"half-precision compute (synthesis {half['synthesis_psnr_db']:.1f} dB, mapping "
                       f"{half['mapping_image_psnr_db']:.1f} dB; needs {half['tolerance']})")
        raise VerificationError(f"verification failed for {', '.join(bad)}; see {out / 'verification.md'}")
    return manifest


def _failure(r: dict) -> str:
    if "error" in r:
        return r["error"]
    if "checks" in r:
        return "; ".join(c["check"] for c in r["checks"] if not c["passed"])
    psnr = r.get("psnr_db", r.get("image_psnr_db"))
    return f"max abs {r['max_abs']:.2e}, PSNR {psnr:.1f} dB; needs {r['tolerance']}" if psnr is not None else (
        f"max abs {r['max_abs']:.2e}; needs {r['tolerance']}")


def _run(G, staging: Path, fmts: list[str], precision: str, dir_doc, progress: bool, callback=None) -> dict:
    labels = {"onnx": "ONNX", "tflite": "TFLite FP32+FP16", "coreml": f"Core ML {precision.upper()}"}
    steps = [(fmt, name) for fmt in ("onnx", "tflite", "coreml") if fmt in fmts for name in ("synthesis", "mapping")]
    total = len(steps) + 1
    bar = tqdm(total=total, desc="export: reference images", unit="step", disable=not progress, file=sys.stderr)

    def report(done: int, text: str) -> None:
        bar.set_description(f"export: {text}")
        if callback is not None:
            callback(done, total, text)

    try:
        report(0, "reference images, half-precision check")
        job = _Job(G, staging, precision)
        job.half = half_precision(G, job.ref)
        bar.update(1)
        for i, (fmt, name) in enumerate(steps, start=1):
            report(i, f"{labels[fmt]} {name} (convert + verify)")
            getattr(job, fmt)(name)
            bar.update(1)
        report(total, "manifest")
    finally:
        bar.close()
    return _write_extras(job, fmts, dir_doc)


def _write_extras(job: _Job, fmts, dir_doc) -> dict:
    G, ref, staging = job.G, job.ref, job.staging
    np.savez(staging / "reference.npz", **{k: ref[k] for k in ("names", "seeds", "z", "w", "ws", "image", "pixels")})
    from engine.io.latents import w_space_id

    src = getattr(G, "source_path", None)
    src_path = Path(src).resolve() if src else None
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
        "resolution": G.resolution,
        "num_ws": G.num_ws,
        "w_dim": G.w_dim,
        "z_dim": G.z_dim,
        "w_space_id": w_space_id(G),
        "noise_mode": "const",
        "w_avg": np.round(G.w_avg.detach().double().numpy(), 7).tolist(),
        "truncation": {"formula": mf.TRUNCATION, "default_psi": DEFAULT_PSI},
        "directions": dir_doc,
        "models": job.entries,
        "verification": {
            "passed": all(e["verification"]["passed"] for e in job.entries) and job.half["passed"],
            "tolerances": {"fp32_max_abs": FP32_MAX_ABS, "fp16_min_psnr_db": FP16_MIN_PSNR,
                           "half_compute_min_psnr_db": HALF_MIN_PSNR},
            "half_precision": job.half,
            "samples": [{"name": str(n), "how": h} for n, h in zip(ref["names"], ref["how"])],
            "reference": "reference.npz",
            "report": "verification.md",
        },
        "tools": _tool_versions(fmts),
    }
    (staging / "verification.md").write_text(mf.render_report(manifest))
    # Every file in the folder but the manifest itself, with its hash; model entries list theirs too.
    hashes = {str(p.relative_to(staging)): p for p in files_under(staging)}
    manifest["files"] = {
        rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for rel, p in sorted(hashes.items())
    }
    for e in job.entries:
        e["files"] = [{"path": rel, **manifest["files"][rel]} for rel in e["files"]]
        e["bytes"] = sum(f["bytes"] for f in e["files"])
    mf.write_json(staging / "manifest.json", manifest)
    return manifest


def _install(staging: Path, out: Path) -> None:
    """Move the finished export into `out`, replacing only what an export writes (other files stay)."""
    out.mkdir(parents=True, exist_ok=True)
    ours = {file_name(m, f, p) for m in ("synthesis", "mapping") for f in FORMATS for p in PRECISIONS}
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
        if e["format"] == "coreml":
            n = sum(c["passed"] for c in r["checks"])
            check = f"{n}/{len(r['checks'])} package checks passed"
        elif "error" in r:
            check = r["error"]
        else:
            psnr = r.get("psnr_db", r.get("image_psnr_db"))
            check = f"max abs {r['max_abs']:.1e}, PSNR {psnr:.1f} dB"
        status = "ok" if r["passed"] else "FAILED"
        lines.append(f"  {e['path']:26s} {e['bytes'] / 1e6:7.2f} MB  {status:6s} {check}")
    half = manifest["verification"].get("half_precision")
    if half:
        lines.append(f"  half-precision compute (phone GPUs)   {'ok' if half['passed'] else 'FAILED':6s} synthesis "
                     f"{half['synthesis_psnr_db']:.1f} dB, mapping {half['mapping_image_psnr_db']:.1f} dB")
    return f"wrote {out}:\n" + "\n".join(lines)

