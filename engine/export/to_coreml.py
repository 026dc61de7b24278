"""Core ML export (.mlpackage, ML Program, iOS 16+) and its validation on a machine that cannot run it.

Core ML models only run on Apple platforms, so on Linux the saved package is checked structurally: it loads with
coremltools' spec API, its inputs and outputs have the names, shapes and types the manifest promises, and its
weights are stored in the requested precision. Compressed packages (`int8`: 8-bit linear weights; `palette6` /
`palette4`: a 64- or 16-entry k-means table per tensor) are also judged numerically by `emulate_compression`, which
applies the same compression to the PyTorch graph's weights.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from engine.export.common import ExportError, conversion_failed, files_under, quiet

MIN_IOS = 16
SPEC_VERSION_IOS16 = 7  # Core ML model specification version introduced with iOS 16
# Constants with more values than this are compressed (coremltools' default threshold); small ones (biases, the
# style affines' offsets) stay FP16, where they cost nothing and matter most.
WEIGHT_THRESHOLD = 2048
PRECISIONS = ("fp16", "fp32", "int8", "palette6", "palette4")


def coreml_precision(precision: str, bits: int = 8) -> str:
    """The package's precision for the export's --precision and --bits."""
    if precision != "int8":
        return precision
    return "int8" if int(bits) == 8 else f"palette{int(bits)}"


def kmeans_lut(bits: int):
    """A coremltools `lut_function`: 1-D k-means (Lloyd, started at the quantiles, so deterministic) over one
    tensor's values → (table of 2^bits values, uint8 index per value). coremltools' own k-means needs scikit-learn or
    kmeans1d, which the export tools do not bring."""
    k = 1 << int(bits)

    def lut(weight: np.ndarray):
        w = np.asarray(weight)
        flat = w.reshape(-1).astype(np.float64)
        centers = np.quantile(flat, (np.arange(k) + 0.5) / k)
        for _ in range(50):
            idx = _nearest(flat, centers)
            sums = np.bincount(idx, weights=flat, minlength=k)
            counts = np.bincount(idx, minlength=k)
            new = np.where(counts > 0, sums / np.maximum(counts, 1), centers)
            if np.allclose(new, centers, rtol=0, atol=1e-9):
                break
            centers = np.sort(new)
        return centers.astype(w.dtype), _nearest(flat, centers).astype(np.uint8)

    return lut


def _nearest(values: np.ndarray, sorted_centers: np.ndarray) -> np.ndarray:
    return np.searchsorted((sorted_centers[1:] + sorted_centers[:-1]) / 2, values)


def _linear_int8(w: np.ndarray) -> np.ndarray:
    """Symmetric per-channel (axis 0) int8 rounding, as coremltools' linear_symmetric quantiser."""
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return (np.clip(np.round(flat / scale), -127, 127) * scale).reshape(w.shape)


def emulate_compression(module: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A copy of a frozen graph (engine.export.freeze) whose large constants went through what `compress` does to
    the package's: FP16 storage, then 8-bit linear quantisation or the k-means palette. It runs in PyTorch, so the
    compressed package's pictures can be estimated where Core ML cannot run. An estimate: the converter may fuse or
    transpose a constant before it is compressed, which moves the per-channel axis."""
    import copy

    out = copy.deepcopy(module)
    with torch.no_grad():
        for buf in [*out.buffers(), *out.parameters()]:
            if not buf.is_floating_point() or buf.numel() <= WEIGHT_THRESHOLD:
                continue
            w = buf.detach().half().float().numpy()
            if precision == "int8":
                w = _linear_int8(w)
            elif precision.startswith("palette"):
                table, idx = kmeans_lut(int(precision.removeprefix("palette")))(w.astype(np.float16))
                w = table.astype(np.float32)[idx].reshape(w.shape)
            buf.copy_(torch.from_numpy(np.ascontiguousarray(w, np.float32)))
    return out


def compress(mlmodel, precision: str):
    """8-bit linear weights (iOS 16's constexpr_affine_dequantize) or a per-tensor palette (constexpr_lut_to_dense),
    on every constant above WEIGHT_THRESHOLD values."""
    import coremltools.optimize.coreml as cto

    if precision == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=WEIGHT_THRESHOLD)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    bits = int(precision.removeprefix("palette"))
    op = cto.OpPalettizerConfig(mode="custom", lut_function=kmeans_lut(bits), granularity="per_tensor",
                                weight_threshold=WEIGHT_THRESHOLD)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


def _register_missing_ops() -> None:
    """coremltools 9 has no converter for `addcmul`, which the student's layers use to fuse noise, scale and add
    in one pass on CPU (engine/nn/layers.py). It is input + value·t1·t2: three MIL ops."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if _TORCH_OPS_REGISTRY.get_func("addcmul") is not None:
        return

    def addcmul(context, node):
        inputs = _get_inputs(context, node)
        x, t1, t2 = inputs[:3]
        value = inputs[3].val if len(inputs) > 3 and inputs[3] is not None else 1
        prod = mb.mul(x=t1, y=t2)
        if value != 1:
            prod = mb.mul(x=prod, y=np.float32(value))
        context.add(mb.add(x=x, y=prod, name=node.name))

    register_torch_op(addcmul)


def export_coreml(
    module: torch.nn.Module,
    example: dict[str, torch.Tensor],
    output_name: str,
    path: Path,
    precision: str = "fp16",
    image_output: bool = False,
    image_inputs=(),
    description: str = "",
    input_descriptions: dict[str, str] | None = None,
    output_description: str = "",
    metadata: dict[str, str] | None = None,
) -> dict:
    """Convert `module` (one input, one output) to an ML Program package at `path` (a folder ending in .mlpackage).

    `image_output`: the output becomes an RGB image (CVPixelBuffer on the device); the module must then return
    [1, 3, H, W] values in 0..255. `image_inputs`: inputs the app passes as RGB images (CVPixelBuffer), which Core
    ML maps to -1..1 (pixel / 127.5 - 1) before the module sees them. precision: one of PRECISIONS; compressed
    packages compute in FP16."""
    with quiet():
        import coremltools as ct

        _register_missing_ops()
        try:
            with torch.no_grad():
                traced = torch.jit.trace(module.eval(), tuple(example.values()))
            out = (
                ct.ImageType(name=output_name, color_layout=ct.colorlayout.RGB)
                if image_output
                else ct.TensorType(name=output_name, dtype=np.float32)
            )
            mlmodel = ct.convert(
                traced,
                inputs=[
                    ct.ImageType(name=n, shape=tuple(x.shape), scale=1 / 127.5, bias=[-1.0, -1.0, -1.0],
                                 color_layout=ct.colorlayout.RGB)
                    if n in image_inputs else ct.TensorType(name=n, shape=tuple(x.shape), dtype=np.float32)
                    for n, x in example.items()
                ],
                outputs=[out],
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
                compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                compute_units=ct.ComputeUnit.ALL,
            )
        except Exception as e:
            raise conversion_failed(f"Core ML conversion of {Path(path).name}", e) from e
        if precision not in ("fp16", "fp32"):
            try:
                mlmodel = compress(mlmodel, precision)
            except Exception as e:
                raise conversion_failed(f"Core ML weight compression ({precision}) of {Path(path).name}", e) from e
        mlmodel.author = "BlazeStudio"
        mlmodel.short_description = description
        for k, v in (input_descriptions or {}).items():
            mlmodel.input_description[k] = v
        if output_description:
            mlmodel.output_description[output_name] = output_description
        mlmodel.user_defined_metadata.update({k: str(v) for k, v in (metadata or {}).items()})
        mlmodel.save(str(path))
    ops = sorted(_op_counts(_main_block(_load_spec(path))))
    return {"files": files_under(path), "ops": ops, "compute_units": "ALL"}


def _load_spec(path: Path):
    import coremltools as ct

    try:
        # skip_model_load: compiling needs macOS; the spec (protobuf) and weights load anywhere.
        return ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as e:
        raise conversion_failed(f"loading {Path(path).name} with coremltools", e) from e


def _main_block(spec):
    fn = spec.mlProgram.functions["main"]
    return fn.block_specializations[fn.opset]


def _op_counts(block) -> Counter:
    return Counter(op.type for op in block.operations)


def _tensor_elements(tensor_type) -> int:
    n = 1
    for d in tensor_type.dimensions:
        n *= int(d.constant.size)
    return n


def validate_coreml(path: Path, inputs: list[dict], outputs: list[dict], precision: str) -> dict:
    """Check a saved package against the manifest's promises; returns the checks and their outcome.

    `inputs` / `outputs`: manifest entries ({"name", "shape"} for arrays; {"name", "type": "image", "width",
    "height"} for an image output)."""
    from coremltools.proto import MIL_pb2

    spec = _load_spec(path)
    checks: list[tuple[str, bool, str]] = []

    def check(what: str, ok: bool, detail: str = "") -> None:
        checks.append((what, bool(ok), detail))

    check("ML Program", spec.WhichOneof("Type") == "mlProgram", spec.WhichOneof("Type") or "")
    check(
        f"deployment target iOS {MIN_IOS} (spec version {SPEC_VERSION_IOS16})",
        spec.specificationVersion == SPEC_VERSION_IOS16,
        f"spec version {spec.specificationVersion}",
    )
    for want, have, kind in ((inputs, spec.description.input, "input"), (outputs, spec.description.output, "output")):
        names = [f.name for f in have]
        check(f"{kind} names {[w['name'] for w in want]}", names == [w["name"] for w in want], f"found {names}")
        for w, f in zip(want, have):
            t = f.type.WhichOneof("Type")
            if w.get("type") == "image":
                img = f.type.imageType
                ok = t == "imageType" and (img.width, img.height) == (w["width"], w["height"])
                ok = ok and img.colorSpace == img.RGB
                check(f"{kind} '{w['name']}' is an RGB image {w['width']}×{w['height']}", ok,
                      f"{t} {img.width}×{img.height}")
            else:
                arr = f.type.multiArrayType
                shape = [int(s) for s in arr.shape]
                ok = t == "multiArrayType" and shape == list(w["shape"]) and arr.dataType == arr.FLOAT32
                check(f"{kind} '{w['name']}' is float32 {list(w['shape'])}", ok,
                      f"{t} {shape} {type(arr).ArrayDataType.Name(arr.dataType)}")
    # Weights: constants stored in the package's weight file (blobFileValue); tiny ones are inlined in the spec.
    # Compressed ones are constexpr ops: int8 data with scales, or a palette (LUT) with packed indices.
    block = _main_block(spec) if spec.WhichOneof("Type") == "mlProgram" else None
    weights = Counter()
    large_plain = 0  # values in uncompressed constants big enough that compression should have taken them
    lut_sizes = set()
    for op in block.operations if block is not None else ():
        blobs = {k: v for k, v in op.attributes.items() if v.WhichOneof("value") == "blobFileValue"}
        if op.type == "const" and "val" in blobs:
            tt = op.outputs[0].type.tensorType
            n = _tensor_elements(tt)
            weights[MIL_pb2.DataType.Name(tt.dataType)] += n
            large_plain += n if n > WEIGHT_THRESHOLD else 0
        elif op.type == "constexpr_affine_dequantize" and "quantized_data" in blobs:
            tt = blobs["quantized_data"].type.tensorType
            weights[MIL_pb2.DataType.Name(tt.dataType)] += _tensor_elements(tt)
        elif op.type == "constexpr_lut_to_dense" and "lut" in blobs:
            n_lut = _tensor_elements(blobs["lut"].type.tensorType)
            lut_sizes.add(n_lut)
            weights[f"PALETTE{n_lut.bit_length() - 1}"] += _tensor_elements(op.outputs[0].type.tensorType)
    total = sum(weights.values())
    detail = ", ".join(f"{k}: {v:,} values" for k, v in sorted(weights.items())) or "no weight blobs"
    if precision in ("fp16", "fp32"):
        want_dtype = "FLOAT16" if precision == "fp16" else "FLOAT32"
        check(f"weights stored as {want_dtype}", total > 0 and weights[want_dtype] == total, detail)
        weight_file = Path(path) / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
        bytes_per = 2 if precision == "fp16" else 4
        check(
            "weight file holds them",
            weight_file.is_file() and weight_file.stat().st_size >= bytes_per * total,
            f"{weight_file.stat().st_size if weight_file.is_file() else 0:,} bytes",
        )
    else:
        kind = "INT8" if precision == "int8" else f"PALETTE{precision.removeprefix('palette')}"
        # coremltools leaves the odd constant alone (one it cannot find a channel axis for); the bulk must be packed.
        ok = weights[kind] > 0 and weights[kind] >= 0.9 * (weights[kind] + large_plain)
        if large_plain:
            detail += f"; {large_plain:,} values left in uncompressed constants over {WEIGHT_THRESHOLD}"
        check(f"large weights stored as {kind} (≥ 90%)", ok, detail)
        plain = {k for k in weights if k.startswith("FLOAT")}
        check("the rest stored as FLOAT16", plain <= {"FLOAT16"}, ", ".join(sorted(plain)) or "none")
        if kind.startswith("PALETTE"):
            want = 1 << int(precision.removeprefix("palette"))
            check(f"palettes of {want} values", lut_sizes == {want}, f"LUT sizes {sorted(lut_sizes)}")
    return {
        "runtime": "none on Linux: structural checks with coremltools' spec API",
        "checks": [{"check": c, "passed": ok, "detail": d} for c, ok, d in checks],
        "weight_values": dict(weights),
        "passed": all(ok for _, ok, _ in checks),
    }


def require_ok(result: dict, name: str) -> None:
    if not result["passed"]:
        failed = "; ".join(f"{c['check']} ({c['detail']})" for c in result["checks"] if not c["passed"])
        raise ExportError(f"{name}: Core ML package check failed: {failed}")
