"""Core ML export (.mlpackage, ML Program, iOS 16+) and its validation on a machine that cannot run it.

Core ML models only run on Apple platforms, so on Linux the saved package is checked structurally: it loads with
coremltools' spec API, its inputs and outputs have the names, shapes and types the manifest promises, and its
weights are stored in the requested precision.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from engine.export.common import ExportError, conversion_failed, files_under, quiet

MIN_IOS = 16
SPEC_VERSION_IOS16 = 7  # Core ML model specification version introduced with iOS 16


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
    description: str = "",
    input_descriptions: dict[str, str] | None = None,
    output_description: str = "",
    metadata: dict[str, str] | None = None,
) -> dict:
    """Convert `module` (one input, one output) to an ML Program package at `path` (a folder ending in .mlpackage).

    `image_output`: the output becomes an RGB image (CVPixelBuffer on the device); the module must then return
    [1, 3, H, W] values in 0..255."""
    with quiet():
        import coremltools as ct

        _register_missing_ops()
        name, x = next(iter(example.items()))
        try:
            with torch.no_grad():
                traced = torch.jit.trace(module.eval(), (x,))
            out = (
                ct.ImageType(name=output_name, color_layout=ct.colorlayout.RGB)
                if image_output
                else ct.TensorType(name=output_name, dtype=np.float32)
            )
            mlmodel = ct.convert(
                traced,
                inputs=[ct.TensorType(name=name, shape=tuple(x.shape), dtype=np.float32)],
                outputs=[out],
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                compute_units=ct.ComputeUnit.ALL,
            )
        except Exception as e:
            raise conversion_failed(f"Core ML conversion of {Path(path).name}", e) from e
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
    block = _main_block(spec) if spec.WhichOneof("Type") == "mlProgram" else None
    weights = Counter()
    for op in block.operations if block is not None else ():
        if op.type != "const":
            continue
        val = op.attributes.get("val")
        if val is None or val.WhichOneof("value") != "blobFileValue":
            continue
        tt = op.outputs[0].type.tensorType
        weights[MIL_pb2.DataType.Name(tt.dataType)] += _tensor_elements(tt)
    total = sum(weights.values())
    want_dtype = "FLOAT16" if precision == "fp16" else "FLOAT32"
    check(
        f"weights stored as {want_dtype}",
        total > 0 and weights[want_dtype] == total,
        ", ".join(f"{k}: {v:,} values" for k, v in sorted(weights.items())) or "no weight blobs",
    )
    weight_file = Path(path) / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    bytes_per = 2 if precision == "fp16" else 4
    check(
        "weight file holds them",
        weight_file.is_file() and weight_file.stat().st_size >= bytes_per * total,
        f"{weight_file.stat().st_size if weight_file.is_file() else 0:,} bytes",
    )
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
