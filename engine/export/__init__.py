"""Export of the student for phones: Core ML (iOS), TFLite/LiteRT (Android) and ONNX, each file verified against
PyTorch in its own runtime where one exists here, with a manifest an app can read.

    export_model(model, out, formats="coreml,tflite,onnx", precision="fp16", directions=None, force=False,
                 allow_teacher=False, encoder=None, fused=False, bits=8) -> manifest dict
    engine.export.bench.bench_exported(folder, repeats=20, out="bench.json", threads=(1, 2)) -> 0

Synthesis, mapping, the encoder (when there is one) and with `fused` one stylizer graph (face crop + slider values →
edited face); `precision="int8"` adds 8-bit files. engine.runtime.fast_synthesis runs the same frozen graphs on the
desktop when they are faster.

See docs/ios.md and docs/android.md for using the files.
"""

from engine.export.common import ExportError, VerificationError
from engine.export.exporter import export_model

__all__ = ["ExportError", "VerificationError", "export_model"]
