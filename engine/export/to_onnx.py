"""ONNX export through torch's dynamo exporter (torch.export → onnxscript), opset 18."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.export.common import conversion_failed, quiet

OPSET = 18
# Weights above this go to a side file: protobuf cannot hold more than 2 GB, and one big file is awkward to diff and
# download. Our students are a few MB, so they stay in one file.
EXTERNAL_DATA_BYTES = 100 * 2**20


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def export_onnx(module: torch.nn.Module, example: dict[str, torch.Tensor], output_name: str, path: Path) -> dict:
    """Write `module` (one input, one output) to `path`; returns {"files", "opset", "ops", "external_data"}."""
    import onnx

    path = Path(path)
    external = tensor_bytes(module) > EXTERNAL_DATA_BYTES
    with quiet(), torch.no_grad():
        try:
            torch.onnx.export(
                module.eval(),
                tuple(example.values()),
                str(path),
                input_names=list(example),
                output_names=[output_name],
                opset_version=OPSET,
                dynamo=True,
                external_data=external,
                verbose=False,
            )
        except Exception as e:
            raise conversion_failed(f"ONNX export of {path.name}", e) from e
    try:
        onnx.checker.check_model(str(path))  # by path, so the checker also follows external data
    except Exception as e:
        raise conversion_failed(f"the ONNX checker on {path.name}", e) from e
    model = onnx.load(str(path), load_external_data=False)
    side_files = sorted(
        {
            entry.value
            for init in model.graph.initializer
            if init.data_location == onnx.TensorProto.EXTERNAL
            for entry in init.external_data
            if entry.key == "location"
        }
    )
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "files": [path, *(path.parent / f for f in side_files)],
        "opset": int(opset),
        "ops": sorted({n.op_type for n in model.graph.node}),
        "external_data": bool(side_files),
    }
