"""What the exporters share: errors, file hashing, the check that the export tools are installed, and silencing the
converters' own console output (the export shows one progress bar of its own)."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import warnings
from pathlib import Path

from engine.errors import UserError
from engine.io.checkpoints import file_sha256

FORMATS = ("coreml", "tflite", "onnx")
PRECISIONS = ("fp16", "fp32", "int8")  # --precision: Core ML's (int8: compressed weights), and TFLite's int8 files
BITS = (8, 6, 4)  # Core ML weight bits with int8: 8 = linear quantisation, 6 and 4 = palettisation (a k-means LUT)
# The networks an export can hold, in the order they are converted.
MODELS = ("synthesis", "mapping", "encoder", "stylizer")

# What each format needs at export time (pip names in pyproject.toml's [export] extra).
_REQUIRES = {
    "coreml": ("coremltools",),
    "tflite": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
}


class ExportError(UserError):
    """An export that could not be made (converter failure, unsupported model or option)."""


class VerificationError(ExportError):
    """An exported file whose outputs differ from PyTorch's by more than the tolerance."""


def require_tools(formats) -> None:
    """Import what the formats need (quietly: these packages greet you with warnings about optional parts), or
    say how to install it."""
    for fmt in formats:
        for name in _REQUIRES[fmt]:
            try:
                with quiet():
                    importlib.import_module(name)
            except ImportError as e:
                raise ExportError(
                    f"{fmt} export needs the '{name}' package ({e}); install the export tools with "
                    "`pip install -e '.[export]'`"
                ) from None


sha256_file = file_sha256  # one implementation, shared with the checkpoint readers


def files_under(path: Path) -> list[Path]:
    """The regular files of a model: the file itself, or every file inside a package folder (.mlpackage)."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def quiet():
    """Swallow the converters' progress bars, notes and warnings; yields the captured text for error messages.

    Only Python-level output is captured: native libraries (TFLite, XNNPACK) may still print a line or two."""
    buf = io.StringIO()
    previous = logging.root.manager.disable
    env = {k: os.environ.get(k) for k in ("LITERT_TORCH_SHOW_PROGRESS", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        logging.disable(previous)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def conversion_failed(what: str, exc: BaseException) -> ExportError:
    """One line a user can act on, from whatever a converter raised (their messages run to many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = lines[0] if lines else ""
    detail = f"{type(exc).__name__}: {detail}"[:300]
    return ExportError(f"{what} failed ({detail})")
