"""How the engine runs models on this machine: preparing a generator for CPU inference, the editor's threads, and the
fastest verified way to run a student's synthesis at batch 1 (`fast_synthesis`).

    fs = fast_synthesis(G, threads=APP_THREADS)   # picks a runtime once (see FAST_SYNTHESIS)
    image = fs(ws)                                 # ws [1, num_ws, w_dim] → raw image [1, 3, R, R], like G.synthesis
    fs.runtime, fs.report                          # which runtime won, and every candidate's time or failure
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

# The editor renders with one intra-op thread (app.cli --threads): batch-1 renders of the student were faster on one
# thread than on two even on an idle 2-core CPU, and far steadier when the other core is busy (the UI, MediaPipe, the
# webcam's other stage, other programs).
APP_THREADS = 1

# Which runtimes `fast_synthesis` may choose among, from the environment (BLAZESTUDIO_FAST_SYNTHESIS):
#   "off"   : G.synthesis as it is (eager PyTorch);
#   "torch" : also the folded, traced PyTorch graph (in-process, built in about a second);
#   "all"   : also ONNX Runtime and LiteRT (the default), each from a file converted once per model into the cache
#             folder (BLAZESTUDIO_CACHE, default ~/.cache/blazestudio), which takes tens of seconds the first time.
#             Measured on the 256 student, 1 thread, busy 2-core machine (medians): eager 36.9 ms, folded PyTorch
#             27.6, ONNX Runtime 29.1, LiteRT 22.7 (bench --exported). Below EXPORTED_MIN_RESOLUTION "all" means
#             "torch": a render takes a few ms whichever runtime, and the conversion would cost more than it saves.
FAST_MODES = ("off", "torch", "all")
FAST_SYNTHESIS = os.environ.get("BLAZESTUDIO_FAST_SYNTHESIS", "all").strip().lower()
if FAST_SYNTHESIS not in FAST_MODES:
    FAST_SYNTHESIS = "all"
CANDIDATES = {"off": ("pytorch",), "torch": ("pytorch", "pytorch-folded"),
              "all": ("pytorch", "pytorch-folded", "onnxruntime", "litert")}
EXPORTED_MIN_RESOLUTION = 128


def candidates_for(G, mode: str | None = None) -> tuple[str, ...]:
    """The runtimes `fast_synthesis` tries for G in `mode` (default FAST_SYNTHESIS)."""
    mode = FAST_SYNTHESIS if mode is None else mode
    if mode == "all" and G.resolution < EXPORTED_MIN_RESOLUTION:
        mode = "torch"
    return CANDIDATES[mode]

_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel. By default a block of more than
    a few MB is an mmap of its own, unmapped on free, so every feature map of a render (5 MB each at 256 px) comes back
    as fresh pages that fault in one by one: measured on this VM, the 256 student's batch-1 render took 39 ms that way
    and 21 ms with the memory kept. Process-wide and idempotent; the process then keeps its peak heap. True when set.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _allocator_tuned = bool(ok)
    return _allocator_tuned


def prepare_for_cpu(G):
    """Inference mode in channels_last, which is 3–4× faster than NCHW for these convs on CPU (see DEVELOPERS.md), and
    an allocator that keeps freed memory (keep_freed_memory)."""
    keep_freed_memory()
    return G.eval().requires_grad_(False).to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------------------------------
# The fast synthesis path


def _fingerprint(G) -> tuple:
    """Version counters of the synthesis tensors: they move whenever a weight is changed in place, after which a
    traced or converted copy of the network would render the old weights."""
    return tuple(t._version for t in (*G.synthesis.parameters(), *G.synthesis.buffers()))


class FastSynthesis:
    """ws → raw image with the runtime `fast_synthesis` chose; G.synthesis for anything else (batch > 1), and for good
    after the chosen runtime fails once or G's weights change (the reason is kept in `report["failure"]`)."""

    def __init__(self, G, fn, runtime: str, report: dict):
        self.G, self._fn, self.runtime, self.report = G, fn, runtime, report
        self._lock = threading.Lock()  # a LiteRT interpreter is not thread-safe
        self._fingerprint = _fingerprint(G) if fn is not None else None

    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        if self._fn is None or ws.ndim != 3 or ws.shape[0] != 1:
            return self.G.synthesis(ws, noise_mode="const")
        if _fingerprint(self.G) != self._fingerprint:
            self.report["failure"] = f"{self.runtime}: the model's weights changed after it was built"
            self._fn, self.runtime = None, "pytorch"
            return self.G.synthesis(ws, noise_mode="const")
        try:
            with self._lock:
                return self._fn(ws)
        except Exception as e:  # noqa: BLE001 - the eager network always works; say why it is used from now on
            self.report["failure"] = f"{self.runtime}: {type(e).__name__}: {str(e)[:200]}"
            self._fn, self.runtime = None, "pytorch"
            return self.G.synthesis(ws, noise_mode="const")

    def __repr__(self) -> str:
        return f"FastSynthesis(runtime={self.runtime!r})"


def model_key(G) -> str:
    """A hash of the network's config and tensors: what a converted file in the cache was made from."""
    h = hashlib.sha256(G.cfg.to_json().encode())
    for name, t in sorted([*G.synthesis.state_dict().items()]):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def cache_folder(cache_dir=None) -> Path:
    base = cache_dir or os.environ.get("BLAZESTUDIO_CACHE") or Path.home() / ".cache" / "blazestudio"
    return Path(base) / "fast-synthesis"


def _check_ws(G) -> torch.Tensor:
    """The latents every candidate is verified on: two seeds at ψ 0.7 and 1, and w_avg."""
    from engine.models.generator import seeds_to_z

    with torch.no_grad():
        ws = G.mapping(seeds_to_z([11, 12], G.z_dim))
        ws[0] = G.mapping.truncate(ws[:1], 0.7)[0]
        return torch.cat([ws, G.w_avg[None, None].repeat(1, G.num_ws, 1)]).float()


def _pytorch(G, example, folder):
    return lambda ws: G.synthesis(ws, noise_mode="const")


def folded_trace(G, example: torch.Tensor):
    """G's synthesis with modulation folded into the weights (engine.export.folded), traced and frozen at batch 1:
    ws [1, num_ws, w_dim] → raw image."""
    import warnings

    from engine.export.folded import fold_synthesis

    class Run(torch.nn.Module):
        def __init__(self, syn):
            super().__init__()
            self.syn = syn

        def forward(self, ws):
            return self.syn(ws, noise_mode="const")

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings: the batch-1 check is a constant in the trace, as intended
        traced = torch.jit.trace(Run(fold_synthesis(G.synthesis)).eval(), (example,), check_trace=False)
        return torch.jit.freeze(traced)


def _pytorch_folded(G, example, folder):
    return folded_trace(G, example)


def _converted(G, folder: Path, fmt: str) -> Path:
    """The frozen synthesis graph as an .onnx or fp32 .tflite file in the cache folder, converted on first use."""
    from engine.export.exporter import file_name
    from engine.export.freeze import freeze
    from engine.export.wrappers import SynthesisRaw

    path = folder / file_name("synthesis", fmt)
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
    import copy

    C = copy.deepcopy(G).float().eval().requires_grad_(False).to(memory_format=torch.contiguous_format)
    example = {"ws": _check_ws(G)[:1]}
    graph = freeze(SynthesisRaw(C), example)
    try:
        if fmt == "onnx":
            from engine.export.to_onnx import export_onnx

            export_onnx(graph, example, "image", tmp)
        else:
            from engine.export.to_tflite import export_tflite

            export_tflite(graph, example, "image", {"fp32": tmp})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _runner(make, fmt: str, threads: int):
    def build(G, example, folder):
        run = make(_converted(G, folder, fmt), "ws", "image", threads=threads)
        return lambda ws: torch.from_numpy(np.asarray(run(ws.detach().numpy())))

    return build


def _builders(threads: int) -> dict:
    from engine.export.verify import onnx_runner, tflite_runner

    return {"pytorch": _pytorch, "pytorch-folded": _pytorch_folded,
            "onnxruntime": _runner(onnx_runner, "onnx", threads), "litert": _runner(tflite_runner, "tflite", threads)}


def fast_synthesis(G, threads: int = APP_THREADS, runtimes=None, cache_dir=None, repeats: int = 7,
                   builders: dict | None = None) -> FastSynthesis:
    """The fastest way to run G.synthesis(ws, noise_mode="const") at batch 1 that gives G's pictures.

    Each candidate runtime (runtimes, default candidates_for(G)) is built, run on three latents and compared
    with G.synthesis (max abs error ≤ 1e-3, the export's FP32 bound); those that pass are timed round-robin on
    `threads` threads, and the fastest median wins. A candidate that fails to build or verify is left out (the reason
    is in `.report`); the eager network is the fallback. Only students are sped up: a teacher gets G.synthesis.
    ONNX Runtime and LiteRT run the export's frozen graph, converted once per model into `cache_dir` (tens of
    seconds the first time for a 256 px model: call this off the UI thread; later calls take a second or two). G is
    put in channels_last (prepare_for_cpu). `builders`
    replaces candidates' builders ({name: fn(G, example ws, folder) -> fn(ws) -> image}), for tests."""
    from engine.export.bench import interleaved_latency
    from engine.export.verify import FP32_MAX_ABS

    if runtimes is None:
        runtimes = candidates_for(G)
    G = prepare_for_cpu(G)
    report: dict = {"threads": threads, "candidates": {}}
    if not G.is_student or list(runtimes) == ["pytorch"]:
        return FastSynthesis(G, None, "pytorch", report)
    make = {**_builders(threads), **(builders or {})}
    check = _check_ws(G)
    folder = cache_folder(cache_dir) / model_key(G)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            want = G.synthesis(check, noise_mode="const")
            fns = {}
            for name in runtimes:
                t = time.perf_counter()
                try:
                    fn = make[name](G, check[:1], folder)
                    got = torch.cat([fn(check[i : i + 1]) for i in range(len(check))])
                    err = float((got.float() - want).abs().max())
                except Exception as e:  # noqa: BLE001 - a runtime that cannot run this model is simply not used
                    report["candidates"][name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                    continue
                entry = {"max_abs": err, "build_seconds": round(time.perf_counter() - t, 2)}
                entry["verified"] = bool(np.isfinite(err) and err <= FP32_MAX_ABS)
                report["candidates"][name] = entry
                if entry["verified"]:
                    fns[name] = fn
            if len(fns) > 1:
                example = check[:1]
                times = interleaved_latency([lambda f=f: f(example) for f in fns.values()], repeats, warmup=2)
                for name, lat in zip(fns, times):
                    report["candidates"][name].update(lat)
                best = min(fns, key=lambda n: report["candidates"][n]["median_ms"])
            else:
                best = next(iter(fns), "pytorch")
    finally:
        torch.set_num_threads(old_threads)
    report["chosen"] = best
    fn = fns.get(best)
    return FastSynthesis(G, None if best == "pytorch" or fn is None else fn, best, report)
