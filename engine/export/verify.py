"""Numerical verification of exported files against PyTorch: run them in their own runtimes (onnxruntime, the LiteRT
interpreter) on fixed latents and compare.

Tolerances: FP32 files must match PyTorch's raw output to 1e-3 (max abs); FP16 files are judged on the picture, by
PSNR ≥ 40 dB on 0..1 images (FP16 weights alone cost ~1e-3 relative error, which is invisible but far above 1e-3
absolute after a dozen layers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.render import psnr

FP32_MAX_ABS = 1e-3
FP16_MIN_PSNR = 40.0
# Half-precision compute (what Core ML FP16 on an iPhone's GPU/Neural Engine and TFLite's GPU delegate do): float16
# rounding alone, over a network's ~20 layers, lands at 55–75 dB on a trained student; a washed-out picture from an
# overflowing layer scores 10–25 dB. 35 dB is about where a difference starts to show on a face (8-bit quantisation
# alone is 59 dB; JPEG at quality 90 is about 40), so below it the phone would show something else.
HALF_MIN_PSNR = 35.0


def compare(outputs: list[np.ndarray], references: list[np.ndarray], images: bool) -> dict:
    diffs = [np.abs(np.asarray(o, np.float64) - np.asarray(r, np.float64)) for o, r in zip(outputs, references)]
    out = {
        "max_abs": float(max(d.max() for d in diffs)),
        "mean_abs": float(np.mean([d.mean() for d in diffs])),
    }
    if images:
        out["psnr_db"] = float(min(psnr(o, r) for o, r in zip(outputs, references)))
    return out


def judge(metrics: dict, precision: str, psnr_key: str = "psnr_db") -> dict:
    """Adds `tolerance` and `passed` to the metrics of one file."""
    if precision == "fp32":
        metrics["tolerance"] = f"max abs ≤ {FP32_MAX_ABS:g}"
        metrics["passed"] = bool(metrics["max_abs"] <= FP32_MAX_ABS)
    else:
        metrics["tolerance"] = f"PSNR ≥ {FP16_MIN_PSNR:g} dB"
        metrics["passed"] = bool(metrics[psnr_key] >= FP16_MIN_PSNR)
    return metrics


# ---------------------------------------------------------------------------------------------------------------------
# Runtimes: each returns a function array → array (batch 1, the exported shapes).


def onnx_runner(path: Path, input_name: str, output_name: str, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run([output_name], {input_name: np.ascontiguousarray(x, np.float32)})[0]


def tflite_runner(path: Path, input_name: str, output_name: str, threads: int = 1, signature: str = "serving_default"):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    runner = it.get_signature_runner(signature)
    return lambda x: runner(**{input_name: np.ascontiguousarray(x, np.float32)})[output_name]


def half_precision(G, ref: dict) -> dict:
    """Emulate a phone's half-precision compute: a float16 copy of G (weights and every activation) runs on the CPU
    on the reference latents; its pictures are compared with float32's. The export's FP32 runtimes cannot show this
    (they compute in float32 whatever the file stores), and no Core ML runtime exists on Linux."""
    import copy

    H = copy.deepcopy(G).half()
    with torch.no_grad():
        ws = torch.from_numpy(np.asarray(ref["ws"], np.float32))
        img = H.synthesis(ws.half(), noise_mode="const").float().numpy()
        w16 = H.mapping(torch.from_numpy(np.asarray(ref["z"], np.float32)).half())[:, 0].float()
        w32 = torch.from_numpy(np.asarray(ref["w"], np.float32))
        map_img = G.synthesis(w16[:, None].repeat(1, G.num_ws, 1)).numpy()
        map_ref = G.synthesis(w32[:, None].repeat(1, G.num_ws, 1)).numpy()
    result = {
        "how": "float16 copy of the network run on the CPU on reference.npz's latents, vs float32",
        "synthesis_psnr_db": float(min(psnr(img[i], ref["image"][i]) for i in range(len(img)))),
        "synthesis_finite": bool(np.isfinite(img).all()),
        "mapping_max_abs": float((w16 - w32).abs().max()),
        "mapping_image_psnr_db": float(min(psnr(map_img[i], map_ref[i]) for i in range(len(map_img)))),
        "tolerance": f"PSNR ≥ {HALF_MIN_PSNR:g} dB",
    }
    result["passed"] = bool(result["synthesis_finite"] and result["synthesis_psnr_db"] >= HALF_MIN_PSNR
                            and result["mapping_image_psnr_db"] >= HALF_MIN_PSNR)
    return result


def half_precision_psnrs(G, seeds, psi: float = 1.0) -> list[float]:
    """Per-seed PSNR of G's float16 picture against its float32 one (for `main.py bench --half`)."""
    import copy

    from engine.models.generator import seeds_to_z

    H = copy.deepcopy(G).float().eval().half()
    out = []
    with torch.no_grad():
        for i in range(0, len(seeds), 8):
            ws = G.mapping(seeds_to_z(seeds[i : i + 8], G.z_dim), psi=psi)
            ref = G.synthesis(ws).numpy()
            got = H.synthesis(ws.half()).float().numpy()
            out += [psnr(got[j], ref[j]) for j in range(len(ref))]
    return out


def run_all(run, inputs: np.ndarray) -> list[np.ndarray]:
    return [np.array(run(inputs[i : i + 1])) for i in range(len(inputs))]


def verify_synthesis(run, ws: np.ndarray, images: np.ndarray, precision: str) -> dict:
    """`run` maps ws [1, num_ws, w_dim] → raw image; compared with PyTorch's `images` for every sample."""
    outs = run_all(run, ws)
    shapes = {tuple(o.shape) for o in outs}
    if shapes != {(1, *images.shape[1:])}:
        return {"passed": False, "error": f"output shape {sorted(shapes)} != {[1, *images.shape[1:]]}"}
    return judge(compare(outs, [images[i : i + 1] for i in range(len(images))], images=True), precision)


def verify_mapping(run, z: np.ndarray, w: np.ndarray, G, precision: str) -> dict:
    """`run` maps z [1, z_dim] → w [1, w_dim]. Besides the error in w, the pictures that PyTorch's synthesis makes
    from the runtime's w and from PyTorch's w are compared (PSNR), which is what an FP16 mapping is judged on."""
    outs = run_all(run, z)
    shapes = {tuple(o.shape) for o in outs}
    if shapes != {(1, w.shape[1])}:
        return {"passed": False, "error": f"output shape {sorted(shapes)} != [1, {w.shape[1]}]"}
    metrics = compare(outs, [w[i : i + 1] for i in range(len(w))], images=False)
    with torch.no_grad():
        def image(v):
            return G.synthesis(torch.from_numpy(np.asarray(v, np.float32))[:, None].repeat(1, G.num_ws, 1)).numpy()

        metrics["image_psnr_db"] = float(min(psnr(image(o), image(w[i : i + 1])) for i, o in enumerate(outs)))
    return judge(metrics, precision, psnr_key="image_psnr_db")
