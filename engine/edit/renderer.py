"""Turning edited W+ into frames, for an edit session: one or more models (a student and its teacher) render the same
latent, now or on a worker thread.

`render()` renders on the caller's thread. `request()` returns at once; one worker thread renders the newest request
only (requests made while it is busy are merged into one), keeps it as `latest_frame()` and hands it to the
requests' callbacks and to `on_frame`, on the worker thread. The last image of each model is cached with the W+ it
came from, so a W+ seen last (undo, redo, a slider back where it was) costs no network pass.

The switch `fast` (default engine.runtime.FAST_SYNTHESIS, from BLAZESTUDIO_FAST_SYNTHESIS) renders students with
engine.runtime.fast_synthesis: the fastest runtime that reproduces G.synthesis, chosen on the model's first render
("torch": in-process, about a second; "all", the default: ONNX Runtime and LiteRT too for models of 128 px and up,
converted on a background thread while PyTorch renders, then switched to); "off" renders with G.synthesis.
`set_model(name, G)` swaps the generator behind a name (a stylized stand-in); one swapped in gets "torch" at most.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine import runtime as rt
from engine.errors import UserError
from engine.render import side_by_side, to_uint8

TEACHER = "teacher"  # the name a session gives a StyleGAN2 model in a list, and the one Frame.teacher reads


@dataclass
class Frame:
    """A rendered state: uint8 [H, W, 3] images per model name (read-only: the cache shares them; copy before
    drawing on one), the ws they came from, per-model render time (0 when the image came from the cache), and what the
    post-process made of it (`extra`, e.g. the editor's face pasted back into its photo)."""

    version: int
    ws: torch.Tensor  # [1, num_ws, w_dim]
    images: dict = field(default_factory=dict)
    ms: dict = field(default_factory=dict)
    error: str | None = None
    extra: dict = field(default_factory=dict)
    main_name: str = ""  # the session's first model (the one the sliders edit)
    generators: dict = field(default_factory=dict)  # name → the generator that rendered it (a style may stand in)

    @property
    def main(self) -> np.ndarray | None:
        return self.images.get(self.main_name)

    @property
    def main_ms(self) -> float:
        return self.ms.get(self.main_name, 0.0)

    @property
    def teacher(self) -> np.ndarray | None:
        return self.images.get(TEACHER)

    def side_by_side(self, pad: int = 4, bg: int = 255) -> np.ndarray:
        if not self.images:
            raise UserError("nothing was rendered in this frame")
        return side_by_side(list(self.images.values()), pad, bg)


class Renderer:
    """Renders W+ with {name: Generator} (the first is the main model) into Frames; see the module's docstring."""

    def __init__(self, models: dict, noise_mode: str = "const", on_frame: Callable[[Frame], None] | None = None,
                 fast: str | None = None):
        self.models = models
        self.main_name = next(iter(models))
        self._initial = dict(models)  # the models it started with (set_model may replace them)
        self._stashed: dict[str, object] = {}  # their fast paths while a stand-in renders (set_model)
        self.noise_mode = noise_mode
        self.on_frame = on_frame
        self.render_counts = {name: 0 for name in models}  # network passes actually run, per model
        self._cond = threading.Condition()
        self._render_lock = threading.Lock()
        self._image_cache: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self._postprocess: Callable[[Frame], dict] | None = None
        self._latest: Frame | None = None
        self._pending = None
        self._pending_callbacks: list = []
        self._worker: threading.Thread | None = None
        self._busy = False
        self.closed = False
        self._fast: dict[str, object] = {}  # name → engine.runtime.FastSynthesis, or None while one is being built
        self._fast_mode = rt.FAST_SYNTHESIS
        self.set_fast(rt.FAST_SYNTHESIS if fast is None else fast)

    # -- the synthesis call ----------------------------------------------------------------------------------------
    def set_fast(self, mode: str) -> None:
        """"off", "torch" or "all" (see the module's docstring); models already sped up are chosen again."""
        if mode not in rt.FAST_MODES:
            raise UserError(f"fast synthesis mode must be one of {', '.join(rt.FAST_MODES)}, not {mode!r}")
        with self._render_lock:
            self._fast_mode, self._fast, self._stashed = mode, {}, {}

    @property
    def runtimes(self) -> dict[str, str]:
        """The runtime each model renders with now: 'pytorch', 'pytorch-folded', 'onnxruntime' or 'litert'."""
        return {n: getattr(self._fast.get(n), "runtime", None) or "pytorch" for n in self.models}

    def _synthesis(self, name: str):
        G = self.models[name]
        mode = self._fast_mode
        if mode == "all" and G is not self._initial.get(name):
            # A model swapped in (a style blend) changes with every strength: no file conversions for each one.
            mode = "torch"
        if mode == "off" or self.noise_mode != "const" or not G.is_student:
            return lambda ws: G.synthesis(ws, noise_mode=self.noise_mode)
        if name not in self._fast:
            runtimes = rt.candidates_for(G, mode)
            if "litert" in runtimes:  # conversions take tens of seconds: PyTorch renders meanwhile
                self._fast[name] = None
                threading.Thread(target=self._build_fast, args=(name, G, runtimes), daemon=True,
                                 name=f"blazestudio-fast-{name}").start()
            else:
                self._fast[name] = rt.fast_synthesis(G, threads=torch.get_num_threads(), runtimes=runtimes)
        return self._fast[name] or (lambda ws: G.synthesis(ws, noise_mode="const"))

    def wait_fast(self, timeout: float | None = None) -> bool:
        """Block until no fast path is being built (mode "all" builds on a background thread); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(v is None for v in list(self._fast.values())):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _build_fast(self, name: str, G, runtimes) -> None:
        import os

        try:  # the conversion must not take the CPU from the renders and the UI (Linux: per-thread nice)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        mode = self._fast_mode
        threads = torch.get_num_threads()
        try:
            fs = rt.fast_synthesis(G, threads=threads, runtimes=runtimes)
        except Exception:  # an optimisation, never a reason to stop rendering
            traceback.print_exc()
            fs = rt.FastSynthesis(G, None, "pytorch", {"failure": "building the fast path failed"})
        with self._render_lock:
            if self._fast_mode == mode and not self.closed:
                if self.models.get(name) is G:
                    self._fast[name] = fs
                elif self._initial.get(name) is G:  # swapped out meanwhile (a style on): kept for its return
                    self._stashed[name] = fs

    def set_model(self, name: str, G) -> None:
        """Render `name` with G from the next frame on (its cached image and fast path belong to the old model)."""
        if name not in self.models:
            raise UserError(f"no model named {name!r} in this session (have {', '.join(self.models)})")
        with self._render_lock:  # never in the middle of a frame
            old = self.models[name]
            self.models[name] = G
            self._image_cache.pop(name, None)
            fast = self._fast.pop(name, None)
            # The loaded model's fast path (a conversion of seconds) waits for it while a style stands in.
            if fast is not None and old is self._initial.get(name):
                self._stashed[name] = fast
            if G is self._initial.get(name) and name in self._stashed:
                self._fast[name] = self._stashed.pop(name)

    def set_postprocess(self, fn: Callable[[Frame], dict] | None) -> None:
        with self._cond:
            self._postprocess = fn

    @property
    def postprocess(self) -> Callable[[Frame], dict] | None:
        return self._postprocess

    def _render(self, ws: torch.Tensor, version: int, which) -> Frame:
        names = list(self.models) if which is None else [which] if isinstance(which, str) else list(which)
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise UserError(f"no model named {unknown[0]!r} in this session (have {', '.join(self.models)})")
        frame = Frame(version=version, ws=ws, main_name=self.main_name)
        with self._render_lock, torch.inference_mode():
            for name in names:
                frame.generators[name] = self.models[name]
                hit = self._image_cache.get(name)
                if hit is not None and torch.equal(hit[0], ws):
                    frame.images[name], frame.ms[name] = hit[1], 0.0
                    continue
                synthesis = self._synthesis(name)  # a first call builds the fast path: not part of the render time
                t = time.perf_counter()
                img = to_uint8(synthesis(ws))[0]
                img.setflags(write=False)  # shared by the cache and every frame that reuses it
                frame.ms[name] = (time.perf_counter() - t) * 1000
                frame.images[name] = img
                self._image_cache[name] = (ws, img)
                self.render_counts[name] += 1
        post = self._postprocess
        if post is not None:
            frame.extra = dict(post(frame) or {})
        return frame

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self._latest is None or frame.version >= self._latest.version:
                self._latest = frame
            self._cond.notify_all()

    def render(self, ws: torch.Tensor, version: int, which=None) -> Frame:
        """Render now, on this thread; `which` limits it to some model names."""
        frame = self._render(ws, version, which)
        self._publish(frame)
        return frame

    def request(self, ws: torch.Tensor, version: int, which=None, callback=None) -> None:
        """Render on the worker, merged with the requests it has not started yet (the newest W+ wins; the models
        asked for add up)."""
        with self._cond:
            if self.closed:
                raise UserError("this edit session is closed")
            prev_which = self._pending[2] if self._pending is not None else ()
            if which is None or prev_which is None:
                merged = None
            else:
                merged = tuple(dict.fromkeys([*prev_which, *([which] if isinstance(which, str) else which)]))
            self._pending = (version, ws, merged)
            if callback is not None:
                self._pending_callbacks.append(callback)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="blazestudio-render", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self.closed:
                    self._cond.wait()
                if self.closed:
                    return
                (version, ws, which), self._pending = self._pending, None
                callbacks, self._pending_callbacks = self._pending_callbacks, []
                self._busy = True
            try:
                frame = self._render(ws, version, which)
            except Exception as e:  # reported to the caller through the frame; the worker keeps serving
                frame = Frame(version=version, ws=ws, error=f"{type(e).__name__}: {e}", main_name=self.main_name)
            self._publish(frame)
            for cb in [*callbacks, self.on_frame]:
                if cb is None:
                    continue
                try:
                    cb(frame)
                except Exception:  # a broken callback must not stop rendering
                    traceback.print_exc()
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def latest_frame(self) -> Frame | None:
        with self._cond:
            return self._latest

    def wait_for(self, version: int, timeout: float | None = None) -> Frame | None:
        """Block until a frame of at least `version` exists; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest.version < version:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._latest

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is pending or rendering."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=30)
