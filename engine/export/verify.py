"""Numerical verification of exported files against PyTorch: run them in their own runtimes (onnxruntime, the LiteRT
interpreter) on fixed inputs and compare.

Tolerances: FP32 files must match PyTorch's raw output to 1e-3 (max abs); FP16 files are judged on the picture, by
PSNR ≥ 40 dB on 0..1 images (FP16 weights alone cost ~1e-3 relative error, which is invisible but far above 1e-3
absolute after a dozen layers). Networks whose output is a latent (mapping, encoder) are judged on the pictures
PyTorch's synthesis makes from their output. 8-bit files get bounds of their own (INT8_MIN_PSNR).
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
# 8-bit files, PSNR of the picture (worst reference sample). Measured on the bundled student and encoder (64 px):
# weights alone in 8 bits (TFLite's dynamic range, Core ML's linear int8) give 42–55 dB for synthesis and mapping,
# 32 dB for the encoder and 30.5 dB for the stylizer (the encoder's error goes through the generator). 28 dB, a little
# below JPEG at quality 50, is where a side-by-side shows softer detail but the same face, expression and colours; a
# broken quantisation (a wrong scale, a clipped layer) lands far below. Palettes: 6 bits (64 values per tensor) is
# close to 8-bit linear; 4 bits (16 values) visibly flattens shading, so its bound only guards against a broken face.
# Full integer also rounds every activation to 8 bits with one scale per tensor: 36 dB for the trained synthesis and
# mapping, 21 dB for the random-weight test student (heavier-tailed activations); two different faces at ψ 0.7 score
# 11–17 dB, so 20 dB still means the same face. (The encoder is not made full-integer: see FULL_INTEGER.)
INT8_MIN_PSNR = {"int8": 28.0, "palette6": 28.0, "palette4": 20.0, "int8-full": 20.0}
# The networks with a full-integer TFLite file, and why the others have none: the encoder's head concatenates
# features whose scales differ by orders of magnitude, which one int8 scale per tensor cannot hold; calibrated on
# rendered faces and the example photos it scored 16 dB on the photos (another face), 24 dB with the head in float.
FULL_INTEGER = ("synthesis", "mapping")
NO_FULL_INTEGER = ("full-integer int8 loses the face (16 dB on the bundled encoder: its head concatenates features "
                   "whose scales differ by orders of magnitude); use the dynamic-range int8 file")


def min_psnr(precision: str) -> float:
    return FP16_MIN_PSNR if precision == "fp16" else INT8_MIN_PSNR[precision]


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
        bound = min_psnr(precision)
        metrics["tolerance"] = f"PSNR ≥ {bound:g} dB"
        metrics["passed"] = bool(metrics[psnr_key] >= bound)
    return metrics


# ---------------------------------------------------------------------------------------------------------------------
# Runtimes: each returns a function (array, ...) → array, inputs in the order named (batch 1, the exported shapes).


def _names(input_names) -> list[str]:
    return [input_names] if isinstance(input_names, str) else list(input_names)


def onnx_runner(path: Path, input_names, output_name: str, threads: int = 1):
    import onnxruntime as ort

    names = _names(input_names)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(*xs):
        return sess.run([output_name], {n: np.ascontiguousarray(x, np.float32) for n, x in zip(names, xs)})[0]

    return run


def tflite_runner(path: Path, input_names, output_name: str, threads: int = 1, signature: str = "serving_default"):
    """Float arrays in and out, also for a full-integer file with int8 inputs or outputs (quantised and dequantised
    here with the file's own scale and zero point, as an app would)."""
    from ai_edge_litert.interpreter import Interpreter

    names = _names(input_names)
    it = Interpreter(model_path=str(path), num_threads=threads)
    runner = it.get_signature_runner(signature)
    ins, out = runner.get_input_details(), runner.get_output_details()[output_name]

    def to_input(name, x):
        d = ins[name]
        x = np.ascontiguousarray(x, np.float32)
        if d["dtype"] == np.float32:
            return x
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])

    def run(*xs):
        y = runner(**{n: to_input(n, x) for n, x in zip(names, xs)})[output_name]
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    return run


def half_precision(G, ref: dict, encoder=None, directions: torch.Tensor | None = None) -> dict:
    """Emulate a phone's half-precision compute: a float16 copy of each network (weights and every activation) runs
    on the CPU on the reference inputs; its pictures are compared with float32's. The export's FP32 runtimes cannot
    show this (they compute in float32 whatever the file stores), and no Core ML runtime exists on Linux.

    encoder: the Encoder, judged (like the mapping) on the pictures synthesis makes from its W+; `ref` then holds
    `crops` and `encoder_ws`. directions [K, num_ws, w_dim]: the fused stylizer's, whose chain (encoder → + Σ α·d →
    synthesis, all in float16) is judged on its pictures against `ref`'s `stylized` for `alphas`."""
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
        "how": "float16 copy of the network run on the CPU on reference.npz's inputs, vs float32",
        "synthesis_psnr_db": float(min(psnr(img[i], ref["image"][i]) for i in range(len(img)))),
        "synthesis_finite": bool(np.isfinite(img).all()),
        "mapping_max_abs": float((w16 - w32).abs().max()),
        "mapping_image_psnr_db": float(min(psnr(map_img[i], map_ref[i]) for i in range(len(map_img)))),
        "tolerance": f"PSNR ≥ {HALF_MIN_PSNR:g} dB",
    }
    scores = [result["synthesis_psnr_db"], result["mapping_image_psnr_db"]]
    if encoder is not None:
        crops = torch.from_numpy(np.asarray(ref["crops"], np.float32))
        with torch.no_grad():
            # float16 convolutions are slow on a CPU (no native kernels): the encoder runs once for both checks.
            ws16 = copy.deepcopy(encoder).half()(crops.half())
            got = G.synthesis(ws16.float()).numpy()
            want = G.synthesis(torch.from_numpy(np.asarray(ref["encoder_ws"], np.float32))).numpy()
        result["encoder_image_psnr_db"] = float(min(psnr(got[i], want[i]) for i in range(len(got))))
        result["encoder_finite"] = bool(torch.isfinite(ws16).all())
        scores.append(result["encoder_image_psnr_db"])
        if directions is not None:
            alphas = torch.from_numpy(np.asarray(ref["alphas"], np.float32)).half()
            with torch.no_grad():
                edit = (alphas @ directions.reshape(directions.shape[0], -1).half()).reshape(ws16.shape)
                got = H.synthesis(ws16 + edit, noise_mode="const").float().numpy()
            result["stylizer_psnr_db"] = float(min(psnr(got[i], ref["stylized"][i]) for i in range(len(got))))
            result["stylizer_finite"] = bool(np.isfinite(got).all())
            scores.append(result["stylizer_psnr_db"])
    finite = all(v for k, v in result.items() if k.endswith("_finite"))
    result["passed"] = bool(finite and min(scores) >= HALF_MIN_PSNR)
    return result


def half_precision_failure(half: dict) -> str:
    """'synthesis 52.1 dB, mapping 60.3 dB, …' for messages."""
    parts = [(k.removesuffix("_psnr_db").removesuffix("_image"), v) for k, v in half.items() if k.endswith("_psnr_db")]
    return ", ".join(f"{k} {v:.1f} dB" for k, v in parts)


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


def run_all(run, *inputs: np.ndarray) -> list[np.ndarray]:
    """run(...) on each sample (batch 1) of the inputs (arrays with the same number of samples)."""
    return [np.array(run(*(x[i : i + 1] for x in inputs))) for i in range(len(inputs[0]))]


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


def _latent_images(G, ws: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return G.synthesis(torch.from_numpy(np.asarray(ws, np.float32))).numpy()


def verify_encoder(run, crops: np.ndarray, ws: np.ndarray, G, precision: str) -> dict:
    """`run` maps an aligned crop [1, 3, R, R] → W+ [1, num_ws, w_dim]; judged like the mapping: the error in W+
    (FP32) and the pictures synthesis makes from the runtime's W+ and from PyTorch's."""
    outs = run_all(run, crops)
    shapes = {tuple(o.shape) for o in outs}
    if shapes != {(1, *ws.shape[1:])}:
        return {"passed": False, "error": f"output shape {sorted(shapes)} != {[1, *ws.shape[1:]]}"}
    metrics = compare(outs, [ws[i : i + 1] for i in range(len(ws))], images=False)
    want = _latent_images(G, ws)
    metrics["image_psnr_db"] = float(min(psnr(_latent_images(G, o)[0], want[i]) for i, o in enumerate(outs)))
    return judge(metrics, precision, psnr_key="image_psnr_db")


def verify_stylizer(run, crops: np.ndarray, alphas: np.ndarray, images: np.ndarray, precision: str) -> dict:
    """`run` maps (crop, alphas) → raw image; compared with PyTorch's encoder → edit → synthesis."""
    outs = run_all(run, crops, alphas)
    shapes = {tuple(o.shape) for o in outs}
    if shapes != {(1, *images.shape[1:])}:
        return {"passed": False, "error": f"output shape {sorted(shapes)} != {[1, *images.shape[1:]]}"}
    return judge(compare(outs, [images[i : i + 1] for i in range(len(images))], images=True), precision)
