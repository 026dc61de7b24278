"""TFLite / LiteRT export through litert-torch, in FP32 and FP16 variants.

The FP16 file is the FP32 one with its weights stored as float16 (the standard TFLite "float16 quantization"):
half the size; the GPU delegate runs it in half precision, the CPU (XNNPACK) dequantizes the weights once at load
and computes in FP32. It is made from the FP32 flatbuffer with ai-edge-quantizer (the recipe litert-torch's
`full_fp16_recipe` applies), which saves a second trace and conversion.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.export.common import conversion_failed, quiet
from engine.export.wrappers import NamedOutput

SIGNATURE = "serving_default"  # litert-torch's default; with one signature, apps need not name it


def export_tflite(
    module: torch.nn.Module, example: dict[str, torch.Tensor], output_name: str, path_fp32: Path, path_fp16: Path
) -> dict[str, dict]:
    """Write both variants; returns {"fp32": info, "fp16": info}, info = {"files", "ops", "signature"}."""
    with quiet(), torch.no_grad():
        import litert_torch

        try:
            # Keyword inputs and a dict output give the signature its input and output names.
            edge = litert_torch.convert(NamedOutput(module, output_name).eval(), sample_kwargs=example)
            fp32 = bytes(edge.model_content())
        except Exception as e:
            raise conversion_failed(f"TFLite conversion of {Path(path_fp32).name}", e) from e
        try:
            fp16 = to_fp16(fp32)
        except Exception as e:
            raise conversion_failed(f"FP16 weight conversion of {Path(path_fp16).name}", e) from e
    out = {}
    for precision, path, content in (("fp32", path_fp32, fp32), ("fp16", path_fp16, fp16)):
        Path(path).write_bytes(content)
        out[precision] = {"files": [Path(path)], "ops": tflite_ops(content), "signature": SIGNATURE}
    return out


def to_fp16(content: bytes) -> bytes:
    from litert_torch.generative.quantize import quant_recipes
    from litert_torch.quantize import translate_recipe

    recipe = translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe)
    return bytes(translate_recipe.quantize_model(content, recipe))


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
