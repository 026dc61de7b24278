"""The live (webcam) path: camera frame → align (video mode) → encode → edit → render → paste back.

No Qt here: the desktop editor runs `LiveRunner` on its own threads and `engine.bench_app` measures the same code.

Throughput on a 2-core CPU comes from overlapping three stages on three threads: the reader grabs and aligns
frame n+2 (MediaPipe, native code), the encoder encodes frame n+1 and the renderer edits, renders and pastes frame n
(PyTorch kernels, which release the GIL). At most one frame waits between two stages and the reader aligns only when
the encoder is ready for it: a slow stage makes the reader let camera frames go (grabbed, never converted or
aligned, so they cost almost nothing) instead of building a backlog, and the picture stays live. Without a spare
core the stages would only take turns, so the runner then does all of them on one worker (see LiveRunner).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.errors import UserError
from engine.render import to_uint8

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")


class CameraLost(UserError):
    """The camera stopped delivering frames (unplugged, taken by another program)."""


def _quiet_opencv(level: int = 2):
    """Probing absent cameras makes OpenCV's backends log an error per index; users get our message instead.
    Levels: 0 silent, 2 errors (OpenCV's own numbering)."""
    set_level = getattr(cv2, "setLogLevel", None)
    if set_level is not None:
        set_level(level)


def probe_cameras(max_index: int = 4) -> list[int]:
    """Indices 0 … max_index-1 at which cv2.VideoCapture opens a device that delivers a frame."""
    _quiet_opencv(0)
    found = []
    try:
        for i in range(max_index):
            cap = cv2.VideoCapture(i)
            try:
                if cap.isOpened():
                    ok, _ = cap.read()
                    if ok:
                        found.append(i)
            finally:
                cap.release()
    finally:
        _quiet_opencv()
    return found


class FrameSource:
    """A camera (an int index) or a video file standing in for one (a path; it loops and, with `pace`, plays at
    its own frame rate as a camera would)."""

    def __init__(self, source, pace: bool = True, loop: bool = True, max_failures: int = 10):
        _quiet_opencv()
        self.source = source
        self.is_file = not isinstance(source, int)
        self.pace, self.loop = pace, loop
        self.max_failures = max_failures
        if self.is_file:
            path = Path(source)
            if not path.is_file():
                raise UserError(f"video file not found: {path}")
            self.cap = cv2.VideoCapture(str(path))
            if not self.cap.isOpened():
                raise UserError(f"cannot play {path.name}; use an MP4, AVI or MOV video")
            fps = self.cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if 1 <= fps <= 240 else 30.0
            self.name = path.name
        else:
            self.cap = cv2.VideoCapture(int(source))
            if not self.cap.isOpened():
                self.cap.release()
                raise UserError(f"no camera at index {source}; connect one, close programs using it, "
                                "or open a video file as the camera")
            self.fps = 30.0
            self.name = f"camera {source}"
        self._next_due = None
        self._frames = 0

    def read(self) -> np.ndarray | None:
        """The next frame as RGB uint8; None at the end of a non-looping file. CameraLost if a camera stops."""
        return self.retrieve() if self.grab() else None

    def grab(self) -> bool:
        """Take the next frame without converting it (False at the end of a non-looping file). A paced file waits
        for the frame's time first, as a camera's grab waits for the frame, so that whoever calls this decides
        what to do with the frame (retrieve it, or let it go) only once it exists."""
        if self.is_file and self.pace:
            now = time.monotonic()
            if self._next_due is None or now - self._next_due > 0.5:
                self._next_due = now
            elif self._next_due > now:
                time.sleep(self._next_due - now)
            self._next_due += 1.0 / self.fps
        failures = 0
        while not self.cap.grab():
            if self.is_file:
                if self._frames and self.loop:
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    self._frames = 0
                    continue
                if not self._frames:
                    raise UserError(f"{self.name}: no frames could be read from this video")
                return False
            failures += 1
            if failures >= self.max_failures:
                raise CameraLost(f"{self.name} stopped sending frames (disconnected?); pick another camera")
            time.sleep(0.02)
        self._frames += 1
        return True

    def retrieve(self) -> np.ndarray:
        """The grabbed frame as RGB uint8."""
        ok, bgr = self.cap.retrieve()
        if not ok or bgr is None:
            raise CameraLost(f"{self.name} delivered a frame that could not be decoded")
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


@dataclass
class LiveFrame:
    """One processed frame."""

    frame: np.ndarray  # the camera frame, RGB
    output: np.ndarray  # the edited face pasted into the frame (the frame itself when no face was found)
    face: bool  # whether a face was found
    aligned: object = None  # engine.faces.AlignedFace
    ws: torch.Tensor | None = None  # the encoder's W+ before edits [1, num_ws, w_dim]
    timings: dict = field(default_factory=dict)  # ms per stage
    index: int = 0  # frame number from the source


class LivePipeline:
    """The per-frame work, split into the stages the runner overlaps: align | encode | edit, render, paste."""

    def __init__(
        self,
        inverter,  # engine.invert.Inverter for the preview generator (its encoder gives each frame's W+)
        edit=None,  # ws -> edited ws (the editor's current sliders); identity when None
        aligner=None,  # engine.faces.VideoAligner; a new one when None
        G=None,  # the generator that renders the edited face (default: the inverter's)
        fast_encoder: bool = True,  # run a frozen TorchScript trace of the encoder (same outputs, ~1.5x faster)
        mode: str = "transfer",  # "transfer": the frame's own face, edited; "regenerate": the render pasted in
    ):
        from engine.edit.transfer import check_mode
        from engine.faces import VideoAligner

        self.inverter = inverter
        self.G = G if G is not None else inverter.G
        self.edit = edit
        self.mode = check_mode(mode)  # read every frame: the editor may switch it while the camera runs
        self._transfer = None
        self.aligner = aligner or VideoAligner()
        # Aligned straight to the generator's size: that is what the inverter feeds its encoder and what the paste
        # maps back, so no resize sits in between.
        self.size = int(self.G.resolution)
        self._traced = None
        if fast_encoder and getattr(inverter, "encoder", None) is not None:
            self._traced = self._trace_encoder()

    def _trace_encoder(self):
        """Freezing folds MobileNetV2's batch norms into its convolutions and runs the graph without Python: the
        encoder, a third of the per-frame cost, gets about 1.5x faster. The live input has one fixed size, so one
        trace is exact; anything unexpected falls back to the plain module."""
        import warnings

        try:
            example = self.inverter.to_tensor(np.zeros((self.size, self.size, 3), np.uint8))
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings about the shape checks, which hold for live input
                traced = torch.jit.freeze(torch.jit.trace(self.inverter.encoder, (example,), check_trace=False))
                if not torch.allclose(traced(example), self.inverter.encoder(example), atol=1e-4):
                    return None
            return traced
        except Exception:  # noqa: BLE001 - an optimisation, never a reason to fail
            return None

    def align(self, rgb: np.ndarray, timestamp: float | None = None):
        return self.aligner.align(rgb, size=self.size, timestamp=timestamp)

    @torch.inference_mode()
    def encode(self, face, timings: dict) -> torch.Tensor | None:
        """The encoder's W+ for an aligned face (None when there is no face)."""
        if face is None:
            return None
        t = time.perf_counter()
        if self._traced is not None:
            ws = self._traced(self.inverter.to_tensor(face.image)).float()
        else:
            ws = self.inverter.encode(face.image)
        timings["encode"] = (time.perf_counter() - t) * 1e3
        return ws

    @property
    def transfer(self):
        """The stream's edit transfer: two face-mesh trackers (renders before/after the edit) and fields blended with
        the previous frame's, which removes the flicker of frame-to-frame encoder noise."""
        if self._transfer is None:
            from engine.edit.transfer import EditTransfer, TransferSettings
            from engine.faces.mesh import CropMesh

            self._transfer = EditTransfer(TransferSettings(temporal=0.5),
                                          meshes=(CropMesh(tracking=True), CropMesh(tracking=True)))
        return self._transfer

    @torch.inference_mode()
    def prepare(self, rgb: np.ndarray, face, ws, timings: dict) -> dict | None:
        """What the edit transfer needs that the sliders do not change: the render of the unedited codes, its face
        mesh and the person mask of the frame's own crop. The overlapped runner makes it on the encoder's thread,
        which leaves the renderer's thread, the slowest stage, only the edited render and the transfer."""
        if face is None or ws is None or self.mode != "transfer":
            return None
        t = time.perf_counter()
        G = self.G
        before = to_uint8(G.synthesis(ws, noise_mode="const")[0])
        prepared = {"G": G, "before": before, "person": self.transfer.person(rgb, face),
                    "before_mesh": self.transfer.mesh_before(before)}
        timings["prepare"] = (time.perf_counter() - t) * 1e3
        return prepared

    @torch.inference_mode()
    def finish(self, rgb: np.ndarray, face, ws, index: int = 0, timings: dict | None = None,
               prepared: dict | None = None) -> LiveFrame:
        """Edit the codes, render them and carry the edit over to the frame (or paste the render back)."""
        from engine.faces import paste_back

        timings = dict(timings or {})
        if face is None or ws is None:
            if self._transfer is not None:
                self._transfer.reset()
            return LiveFrame(rgb, rgb, False, timings=timings, index=index)
        t1 = time.perf_counter()
        edited = self.edit(ws) if self.edit is not None else ws
        t2 = time.perf_counter()
        G = self.G  # once: a style switched mid-frame must not pair one model's render with another's
        img = to_uint8(G.synthesis(edited, noise_mode="const")[0])
        mode = self.mode
        before = person = before_mesh = None
        if mode == "transfer":
            if prepared is not None and prepared["G"] is G:
                before, person, before_mesh = prepared["before"], prepared["person"], prepared["before_mesh"]
            else:
                before = to_uint8(G.synthesis(ws, noise_mode="const")[0])
        t3 = time.perf_counter()
        out = self.transfer(rgb, face, before, img, person=person, before_mesh=before_mesh) \
            if mode == "transfer" else paste_back(rgb, img, face)
        t4 = time.perf_counter()
        timings.update(edit=(t2 - t1) * 1e3, render=(t3 - t2) * 1e3, **{mode: (t4 - t3) * 1e3})
        return LiveFrame(rgb, out, True, face, ws, timings, index)

    def synthesize(self, rgb: np.ndarray, face, index: int = 0, timings: dict | None = None) -> LiveFrame:
        timings = dict(timings or {})
        return self.finish(rgb, face, self.encode(face, timings), index, timings)

    def process(self, rgb: np.ndarray, timestamp: float | None = None, index: int = 0) -> LiveFrame:
        """Both stages in sequence (one frame, no threads)."""
        t = time.perf_counter()
        face = self.align(rgb, timestamp)
        return self.synthesize(rgb, face, index, {"align": (time.perf_counter() - t) * 1e3})

    def close(self) -> None:
        self.aligner.close()
        if self._transfer is not None:
            self._transfer.close()


_UNALIGNED = object()  # a raw frame for the serial worker, which aligns it itself


class _Slot:
    """A one-item mailbox between two stages."""

    def __init__(self):
        self.cv = threading.Condition()
        self.item = None
        self.closed = False

    def full(self) -> bool:
        with self.cv:
            return self.item is not None

    def put(self, item, stop: threading.Event) -> bool:
        """Wait until the slot is free, then fill it; False if the run stopped meanwhile."""
        with self.cv:
            while self.item is not None and not stop.is_set():
                self.cv.wait(0.1)
            if stop.is_set():
                return False
            self.item = item
            self.cv.notify_all()
            return True

    def take(self, stop: threading.Event):
        """The next item; None once the producer closed the slot (or the run stopped)."""
        with self.cv:
            while self.item is None and not self.closed and not stop.is_set():
                self.cv.wait(0.1)
            if stop.is_set() or self.item is None:
                return None
            item, self.item = self.item, None
            self.cv.notify_all()
            return item

    def close(self):
        with self.cv:
            self.closed = True
            self.cv.notify_all()


class LiveRunner:
    """Runs a LivePipeline on a FrameSource with three threads, one per stage:

        reader: grab + align  →  encoder: encode (+ for the transfer: the unedited render, its mesh, the person mask)
        →  renderer: edit + render + transfer or paste  →  on_frame(LiveFrame)

    Each stage hands over through a one-item slot. The reader aligns a frame only when the encoder has taken the
    previous one (otherwise it grabs camera frames without decoding them), and the encoder waits for the renderer,
    so nothing queues up and every stage works on the newest frame it can. On two cores the encoder and the
    renderer, the two big costs, run at the same time. `on_frame` and `on_error(exc)` are called from the renderer
    (errors also from the others); `stop()` ends all three."""

    def __init__(self, source: FrameSource, pipeline: LivePipeline, on_frame, on_error=None, on_end=None,
                 overlap: bool | None = None):
        self.source, self.pipeline = source, pipeline
        self.on_frame, self.on_error, self.on_end = on_frame, on_error, on_end
        # Overlapping pays only with a spare core: on a machine that is already busy the three stages just take
        # turns on one core and lose ~20% to switching (measured: 14.7 fps overlapped vs 18.9 serial with one core
        # free). Serial mode keeps the reader (grab + decode) on its own thread and runs align → encode → render →
        # paste on one worker.
        self.overlap = spare_cores() >= 1.5 if overlap is None else bool(overlap)
        self._stop = threading.Event()
        self._aligned = _Slot()  # reader → encoder: (rgb, face, index, timings)
        self._encoded = _Slot()  # encoder → renderer: (rgb, face, ws, index, timings, prepared)
        self.dropped = 0  # camera frames skipped because the pipeline was busy
        self.produced = 0
        self._times: list[float] = []
        self._threads = [
            threading.Thread(target=self._read_loop, name="live-reader", daemon=True),
            threading.Thread(target=self._encode_loop, name="live-encoder", daemon=True),
        ]
        if self.overlap:
            self._threads.append(threading.Thread(target=self._render_loop, name="live-renderer", daemon=True))

    def start(self) -> LiveRunner:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for slot in (self._aligned, self._encoded):
            slot.close()
        for t in self._threads:
            if t is not threading.current_thread() and t.is_alive():
                t.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def fps(self, window: float = 1.0) -> float:
        """Output frames per second over the last `window` seconds."""
        now = time.monotonic()
        recent = [t for t in self._times if now - t <= window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def _fail(self, e: BaseException) -> None:
        first = not self._stop.is_set()
        self._stop.set()
        for slot in (self._aligned, self._encoded):
            slot.close()
        if first and self.on_error is not None:
            self.on_error(e)

    def _read_loop(self):
        index = 0
        try:
            while not self._stop.is_set():
                # Grab every frame, so the camera's own buffer never holds stale ones; convert and align it only if
                # the next stage is free to take it, else it would be thrown away after stealing CPU from it.
                if not self.source.grab():
                    break
                if self._aligned.full():
                    self.dropped += 1
                    index += 1
                    continue
                rgb = self.source.retrieve()
                if self.overlap:
                    t = time.perf_counter()
                    face = self.pipeline.align(rgb, time.monotonic())
                    item = (rgb, face, index, {"align": (time.perf_counter() - t) * 1e3})
                else:
                    item = (rgb, _UNALIGNED, index, {"captured": time.monotonic()})
                if not self._aligned.put(item, self._stop):
                    break
                index += 1
        except BaseException as e:  # noqa: BLE001 - reported, never raised on a worker thread
            self._fail(e)
        finally:
            self._aligned.close()

    def _encode_loop(self):
        try:
            while True:
                item = self._aligned.take(self._stop)
                if item is None:
                    break
                rgb, face, index, timings = item
                if face is _UNALIGNED:  # serial mode: this thread does every stage
                    t = time.perf_counter()
                    face = self.pipeline.align(rgb, timings.pop("captured"))
                    timings["align"] = (time.perf_counter() - t) * 1e3
                    ws = self.pipeline.encode(face, timings)
                    self._emit(self.pipeline.finish(rgb, face, ws, index, timings))
                    continue
                ws = self.pipeline.encode(face, timings)
                prepared = self.pipeline.prepare(rgb, face, ws, timings)
                if not self._encoded.put((rgb, face, ws, index, timings, prepared), self._stop):
                    break
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
        finally:
            self._encoded.close()
            if not self.overlap and self.on_end is not None:
                self.on_end()

    def _render_loop(self):
        try:
            while True:
                item = self._encoded.take(self._stop)
                if item is None:
                    break
                self._emit(self.pipeline.finish(*item))
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
        finally:
            if self.on_end is not None:
                self.on_end()

    def _emit(self, result: LiveFrame) -> None:
        self.produced += 1
        now = time.monotonic()
        self._times.append(now)
        self._times = [t for t in self._times if now - t <= 2.0]
        if self.on_frame is not None:
            self.on_frame(result)


def spare_cores(window: float = 0.25) -> float:
    """CPU cores not busy with other processes' work right now: all cores' busy time over `window` seconds
    (/proc/stat) minus this process's own. The 1-minute load average counted the editor's own renders of the last
    minute as load and chose the serial mode on an idle machine; it stays the fallback where /proc/stat is missing."""
    import os

    try:
        n = len(os.sched_getaffinity(0))  # the cores this process may run on (taskset, containers)
    except (AttributeError, OSError):
        n = os.cpu_count() or 1

    def busy_and_total() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # guest time is already counted in user and nice
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return sum(ticks) - idle, sum(ticks)

    try:
        b0, t0 = busy_and_total()
        own0, w0 = sum(os.times()[:2]), time.monotonic()
        time.sleep(window)
        b1, t1 = busy_and_total()
        own1, w1 = sum(os.times()[:2]), time.monotonic()
    except (OSError, ValueError, IndexError):
        try:
            return n - os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            return float(n)
    cores = os.cpu_count() or n  # /proc/stat covers every core of the machine
    others = cores * (b1 - b0) / max(t1 - t0, 1) - (own1 - own0) / max(w1 - w0, 1e-6)
    return max(0.0, n - max(others, 0.0))
