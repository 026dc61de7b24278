"""TFLite / LiteRT export through litert-torch, in FP32 and FP16 variants, and with --precision int8 two 8-bit ones.

The FP16 file is the FP32 one with its weights stored as float16 (the standard TFLite "float16 quantization"):
half the size; the GPU delegate runs it in half precision, the CPU (XNNPACK) dequantizes the weights once at load
and computes in FP32. It is made from the FP32 flatbuffer with ai-edge-quantizer (the recipe litert-torch's
`full_fp16_recipe` applies), which saves a second trace and conversion.

The 8-bit files come from the same flatbuffer through ai-edge-quantizer too:
- `int8`: dynamic range (`dynamic_wi8_afp32`): weights int8 per output channel; activations stay float32 and are
  quantised on the fly inside each conv and fully connected op. A quarter of the size, no calibration.
- `int8-full`: full integer (`static_wi8_ai8`): weights and every activation int8, with activation ranges measured
  on calibration inputs (rendered latents, aligned crops). Inputs and outputs stay float32 (a QUANTIZE and a
  DEQUANTIZE op at the edges), so the app code is the same for every file; for integer-only accelerators.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from engine.export.common import conversion_failed, quiet
from engine.export.wrappers import NamedOutput

SIGNATURE = "serving_default"  # litert-torch's default; with one signature, apps need not name it
PRECISIONS = ("fp32", "fp16", "int8", "int8-full")


def export_tflite(
    module: torch.nn.Module,
    example: dict[str, torch.Tensor],
    output_name: str,
    paths: dict[str, Path],
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, dict]:
    """Convert once and write each variant in `paths` ({precision: path}, precisions from PRECISIONS; `int8-full`
    needs `calibration`, a list of input dicts). Returns {precision: {"files", "ops", "signature"}}."""
    with quiet(), torch.no_grad():
        import litert_torch

        first = next(iter(paths.values()))
        try:
            # Keyword inputs and a dict output give the signature its input and output names.
            edge = litert_torch.convert(NamedOutput(module, output_name).eval(), sample_kwargs=example)
            fp32 = bytes(edge.model_content())
        except Exception as e:
            raise conversion_failed(f"TFLite conversion of {Path(first).name}", e) from e
        contents = {}
        for precision, path in paths.items():
            try:
                if precision == "fp32":
                    contents[precision] = fp32
                elif precision == "fp16":
                    contents[precision] = to_fp16(fp32)
                elif precision == "int8":
                    contents[precision] = to_int8_dynamic(fp32)
                else:
                    contents[precision] = to_int8_full(fp32, calibration or [])
            except Exception as e:
                raise conversion_failed(f"{precision.upper()} quantisation of {Path(path).name}", e) from e
    out = {}
    for precision, content in contents.items():
        Path(paths[precision]).write_bytes(content)
        out[precision] = {"files": [Path(paths[precision])], "ops": tflite_ops(content), "signature": SIGNATURE}
    return out


def to_fp16(content: bytes) -> bytes:
    from litert_torch.generative.quantize import quant_recipes
    from litert_torch.quantize import translate_recipe

    recipe = translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe)
    return bytes(translate_recipe.quantize_model(content, recipe))


def _quantize(content: bytes, recipe, calibration=None) -> bytes:
    from ai_edge_quantizer import quantizer

    qt = quantizer.Quantizer(bytearray(content), recipe)
    result = None
    if qt.need_calibration:
        if not calibration:
            raise ValueError("full-integer quantisation needs calibration inputs")
        threads = max(1, min(2, os.cpu_count() or 1))
        result = qt.calibrate({SIGNATURE: calibration}, num_threads=threads)
    return bytes(qt.quantize(result, enable_progress_report=False).quantized_model)


def to_int8_dynamic(content: bytes) -> bytes:
    from ai_edge_quantizer import recipe

    return _quantize(content, recipe.dynamic_wi8_afp32())


def to_int8_full(content: bytes, calibration: list[dict[str, np.ndarray]]) -> bytes:
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    op = qtyping.TFLOperationName
    rm = recipe_manager.RecipeManager()
    rm.add_static_config(".*", op.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8)
    # A second scope (same match, other key) overrides the graph's inputs and outputs: float32 at the edges.
    for edge in (op.INPUT, op.OUTPUT):
        rm.add_quantization_config(".*$", edge, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    data = [{k: np.ascontiguousarray(v, np.float32) for k, v in sample.items()} for sample in calibration]
    return _quantize(content, rm.get_quantization_recipe(), data)


def tflite_ops(content: bytes) -> list[str]:
    """Builtin (and custom) operator names used by a .tflite flatbuffer, e.g. to check GPU-delegate support."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        ops.add(custom.decode() if custom else names.get(builtin, str(builtin)))
    return sorted(ops)


def tflite_io(path: Path) -> dict:
    """The signature's input and output names, shapes and dtypes as the LiteRT interpreter sees them."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    sigs = it.get_signature_list()
    runner = it.get_signature_runner(SIGNATURE)

    def describe(details):
        return {k: {"shape": [int(s) for s in v["shape"]], "dtype": v["dtype"].__name__} for k, v in details.items()}

    return {
        "signatures": list(sigs),
        "inputs": describe(runner.get_input_details()),
        "outputs": describe(runner.get_output_details()),
    }
