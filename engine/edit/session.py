"""The edit session: what the app's sliders, the CLI and the tests drive. No Qt.

It holds a base latent (a seed, a loaded latent or an inverted photo), the edit state on top of it (truncation ψ,
style mixing, one amount per direction and optional per-direction layer ranges), an undo/redo history of every
change, and the model(s) that render the result — typically the student and its teacher, from the same W+.

Every state is immutable and the final W+ is recomputed from the base each time (mix → truncate → Σ α·d), so
undoing, redoing or returning a slider to a previous value gives back bit-identical ws, and the render cache (last
ws → image per model) then skips the network entirely.

Rendering (engine.edit.renderer): `render()` renders now, on the caller's thread. `request_render()` returns at once;
one worker thread renders the newest requested state only (requests made while it is busy are merged into one),
stores it as `latest_frame()` and calls the callbacks on the worker thread. `set_model(name, G)` renders a name with
another generator of the same W space from then on (the editor's stylized model and its strength blends).

Observers connect to `session.events` (engine.events, no Qt; a Qt app re-emits them as signals on its UI thread):
`changed(state)` after every change, undo, redo, group and new base; `directions(dset)` when the direction set gains,
replaces or renames directions; `frame(frame)` for every frame the worker renders, on the worker thread. With
`render_on_change()` the session requests a frame itself after each change it announces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.edit.ops import apply_edits, style_mix
from engine.edit.renderer import TEACHER, Frame, Renderer
from engine.errors import UserError
from engine.events import Events
from engine.io.directions import DirectionSet, load_directions
from engine.io.latents import load_latent, same_w_space, save_latent, w_space_id
from engine.models.generator import seeds_to_z
from engine.runtime import prepare_for_cpu


@dataclass(frozen=True, eq=False)
class Mix:
    ws: torch.Tensor  # [num_ws, w_dim] source of the mixed layers
    layers: tuple[int, int]  # inclusive W+ range taken from the source
    label: str = ""  # "seed 7", a file name, ...
    seed: int | None = None  # the seed the source was mapped from, if it was one


@dataclass(frozen=True, eq=False)
class EditState:
    """One point of the undo history. Never mutated: changes make a new state with dataclasses.replace."""

    base: torch.Tensor  # [num_ws, w_dim]
    base_info: dict = field(default_factory=dict)  # {"seed": 7} / {"latent": "x.npz"} / {"photo": ...}
    psi: float = 1.0
    cutoff: int | None = None
    alphas: dict = field(default_factory=dict)  # direction name -> α (only non-zero amounts are kept)
    layers: dict = field(default_factory=dict)  # direction name -> (a, b) overriding the direction's own range
    mix: Mix | None = None
    locks: tuple = ()  # attributes held still by every edit (their boundaries projected out of each direction)


def _announcing(method):
    """A change made by `method` is announced to observers when it returns, outside the session's lock."""

    @functools.wraps(method)
    def wrapper(self, *args, **kw):
        try:
            return method(self, *args, **kw)
        finally:
            self._announce()

    return wrapper


def _name_models(models) -> dict:
    if isinstance(models, Mapping):
        named = dict(models)
    else:
        seq = [models] if isinstance(models, torch.nn.Module) else list(models)
        named = {}
        for G in seq:
            base = "student" if G.is_student else TEACHER
            name, k = base, 2
            while name in named:
                name, k = f"{base}{k}", k + 1
            named[name] = G
    if not named:
        raise UserError("an edit session needs at least one model")
    return named


class EditSession:
    """Edits on one latent, rendered by one or more models sharing a W space.

    models: a Generator, a list of them (named 'student' / 'teacher' by architecture) or a {name: Generator} dict;
    the first one's mapping network makes seeds. directions: a DirectionSet or a path to a direction file.
    """

    def __init__(self, models, directions: DirectionSet | str | Path | None = None, *, noise_mode: str = "const",
                 prepare: bool = True):
        self.models = _name_models(models)
        self.main_name = next(iter(self.models))
        G = self.G = self.models[self.main_name]
        if not all(same_w_space(G, m) for m in self.models.values()):
            ids = ", ".join(f"{k}: {w_space_id(m)}" for k, m in self.models.items())
            raise UserError(f"these models do not share a W space ({ids}); a student must carry its teacher's mapping"
                            " network")
        if prepare:
            for m in self.models.values():
                prepare_for_cpu(m)
        self.num_ws, self.w_dim = G.num_ws, G.w_dim
        self.w_avg = G.w_avg.detach().float().clone()
        self.noise_mode = noise_mode
        self.events = Events("changed", "directions", "frame")
        if directions is None:
            self.directions = DirectionSet.for_model(G)
        elif isinstance(directions, DirectionSet):
            directions.check(G)
            self.directions = directions
        else:
            self.directions = load_directions(directions, G)

        self._lock = threading.RLock()
        self._history = [EditState(base=self.w_avg[None].repeat(self.num_ws, 1), base_info={"w_avg": True})]
        self._labels = ["start"]
        self._keys: list = [None]
        self._pos = 0
        self._group_depth = 0
        self._batch_depth = 0
        self._version = 0
        self._unannounced = False  # a change observers have not been told about yet (held back inside a group)
        self._render_on_change: tuple[bool, object] = (False, None)
        self._ws_cache: tuple[int, torch.Tensor] | None = None
        self.renderer = Renderer(self.models, noise_mode, on_frame=lambda f: self.events.emit("frame", f))
        self.render_counts = self.renderer.render_counts  # network passes actually run, per model

    # -- state and history -------------------------------------------------------------------------------------------
    @property
    def state(self) -> EditState:
        with self._lock:
            return self._history[self._pos]

    @property
    def version(self) -> int:
        """Bumped by every change, undo and redo; frames carry the version they show."""
        with self._lock:
            return self._version

    @property
    def can_undo(self) -> bool:
        with self._lock:
            return self._pos > 0

    @property
    def can_redo(self) -> bool:
        with self._lock:
            return self._pos < len(self._history) - 1

    @property
    def undo_text(self) -> str:
        with self._lock:
            return self._labels[self._pos] if self._pos > 0 else ""

    @property
    def redo_text(self) -> str:
        with self._lock:
            return self._labels[self._pos + 1] if self._pos < len(self._history) - 1 else ""

    def _bump(self) -> None:
        """The state (or what it means) changed: a new version, which observers hear about once the change is done."""
        self._version += 1
        self._unannounced = True

    def _announce(self) -> None:
        """Emit `changed(state)` for changes made since the last one, outside the lock so that observers may call
        back; inside a group, only when the outermost group ends. Then, if asked to, request a frame: after the
        observers, which may still set what a frame needs (a post-process)."""
        with self._lock:
            if self._group_depth or self._batch_depth or not self._unannounced:
                return
            self._unannounced = False
            state = self._history[self._pos]
            render, which = self._render_on_change
        self.events.emit("changed", state)
        if render and not self.renderer.closed:
            self.request_render(which=which)

    def render_on_change(self, on: bool = True, which=None) -> None:
        """Request a frame of `which` models (None: all) after every announced change, as an interactive editor
        wants; off by default."""
        with self._lock:
            self._render_on_change = (bool(on), which)

    def _push(self, new: EditState, label: str, key=None, merge: bool = False) -> bool:
        with self._lock:
            # A slider drag sends many values: with merge, consecutive changes of the same control are one undo step.
            if merge and key is not None and self._pos > 0 and self._keys[self._pos] == key \
                    and self._pos == len(self._history) - 1:
                self._history[self._pos] = new
                self._labels[self._pos] = label
            else:
                del self._history[self._pos + 1 :], self._labels[self._pos + 1 :], self._keys[self._pos + 1 :]
                self._history.append(new)
                self._labels.append(label)
                self._keys.append(key)
                self._pos += 1
            self._bump()
            return True

    @contextlib.contextmanager
    def group(self, label: str):
        """Changes made inside `with session.group("reset sliders"):` become one undo step with that label (nested
        groups join the outermost), announced once. Other threads' changes wait until the group ends."""
        try:
            with self._lock:
                self._group_depth += 1
                start = self._pos
                try:
                    yield self
                finally:
                    self._group_depth -= 1
                    if self._group_depth == 0 and self._pos > start + 1:
                        final = self._history[self._pos]
                        del self._history[start + 1 :], self._labels[start + 1 :], self._keys[start + 1 :]
                        self._history.append(final)
                        self._labels.append(label)
                        self._keys.append(None)
                        self._pos = start + 1
                        self._bump()
                    elif self._group_depth == 0 and self._pos == start + 1:
                        self._labels[self._pos] = label
                        self._keys[self._pos] = None  # a later slider drag must not merge into the group
        finally:
            self._announce()

    @contextlib.contextmanager
    def batch(self):
        """Changes made inside `with session.batch():` stay separate undo steps but are announced once, at the end
        (so that an observer renders the result once, not each step). Other threads' changes wait until it ends."""
        try:
            with self._lock:
                self._batch_depth += 1
                try:
                    yield self
                finally:
                    self._batch_depth -= 1
        finally:
            self._announce()

    def undo(self) -> bool:
        with self._lock:
            if self._pos == 0:
                return False
            self._pos -= 1
            self._bump()
        self._announce()
        return True

    def redo(self) -> bool:
        with self._lock:
            if self._pos >= len(self._history) - 1:
                return False
            self._pos += 1
            self._bump()
        self._announce()
        return True

    def clear_history(self) -> None:
        """Make the current state the first one: nothing to undo or redo (an editor calls this once it has set up
        the starting point a user sees, so that undo never goes back to a state the user was never shown)."""
        with self._lock:
            self._history = [self._history[self._pos]]
            self._labels = ["start"]
            self._keys = [None]
            self._pos = 0

    def history(self) -> list[str]:
        """Labels of every change, oldest first (the current one is history()[position])."""
        with self._lock:
            return list(self._labels)

    # -- the base latent ---------------------------------------------------------------------------------------------
    def _as_w(self, ws, what: str) -> torch.Tensor:
        ws = torch.as_tensor(ws).detach().float().cpu()
        if ws.ndim == 1:
            ws = ws[None].repeat(self.num_ws, 1)
        if ws.ndim == 3 and ws.shape[0] == 1:
            ws = ws[0]
        if tuple(ws.shape) != (self.num_ws, self.w_dim):
            raise UserError(f"{what} has shape {list(ws.shape)}; this model needs W+ [{self.num_ws}, {self.w_dim}]")
        if not torch.isfinite(ws).all():
            raise UserError(f"{what} contains NaN or infinite values")
        return ws.clone()

    def map_seed(self, seed: int) -> torch.Tensor:
        """The untruncated W+ [num_ws, w_dim] of a seed."""
        with torch.no_grad():
            return self.G.mapping(seeds_to_z([seed], self.G.z_dim))[0].float().clone()

    @_announcing
    def set_base(self, ws, label: str = "", keep_edits: bool = True, **info) -> bool:
        """A new base latent ([num_ws, w_dim], [1, num_ws, w_dim] or a w [w_dim]); info describes where it came from
        (seed, latent file, photo and its alignment ...). Edits, ψ and mixing stay unless keep_edits=False."""
        ws = self._as_w(ws, label or "the latent")
        with self._lock:
            cur = self.state
            new = dataclasses.replace(cur, base=ws, base_info=dict(info)) if keep_edits else \
                EditState(base=ws, base_info=dict(info))
            return self._push(new, label or "new latent", ("base",))

    def set_seed(self, seed: int, **kw) -> bool:
        return self.set_base(self.map_seed(int(seed)), label=f"seed {int(seed)}", seed=int(seed), **kw)

    def load_latent(self, path, index: int = 0, **kw) -> bool:
        ws, meta = load_latent(path, self.G)
        if not 0 <= index < len(ws):
            raise UserError(f"{Path(path).name} holds {len(ws)} latent(s); index {index} is out of range")
        info = {k: v for k, v in meta.items() if k not in ("format", "version", "w_space_id", "num_ws", "w_dim")}
        return self.set_base(ws[index], label=f"latent {Path(path).name}", latent=str(path), index=index,
                             meta=info, **kw)

    # -- edits -------------------------------------------------------------------------------------------------------
    def alpha(self, name: str) -> float:
        return float(self.state.alphas.get(name, 0.0))

    @_announcing
    def set_alpha(self, name: str, alpha: float, merge: bool = False) -> bool:
        """Set the amount of one direction. Returns False (no history entry) when nothing changes."""
        d = self.directions[name]
        alpha = float(alpha)
        with self._lock:
            cur = self.state
            if cur.alphas.get(d.name, 0.0) == alpha:
                return False
            alphas = {k: v for k, v in cur.alphas.items() if k != d.name}
            if alpha != 0.0:
                alphas[d.name] = alpha
            return self._push(dataclasses.replace(cur, alphas=alphas), f"{d.name} {alpha:+.2f}", ("alpha", d.name),
                              merge)

    @_announcing
    def nudge(self, name: str, delta: float) -> bool:
        """Add delta to a direction's amount (+α then −α returns exactly to where it was when the sum is exact)."""
        with self._lock:
            return self.set_alpha(name, self.alpha(name) + float(delta))

    def edit_layers(self, name: str) -> tuple[int, int]:
        return tuple(self.state.layers.get(name, self.directions[name].layers))

    @_announcing
    def set_layers(self, name: str, layers: tuple[int, int] | str | None) -> bool:
        """Restrict a direction to W+ layers [a, b] (or a group: 'coarse', 'middle', 'fine', 'all'); None restores
        the direction's own range."""
        from engine.edit.layers import parse_layers

        d = self.directions[name]
        rng = d.layers if layers is None else (
            parse_layers(layers, self.num_ws) if isinstance(layers, str) else tuple(int(v) for v in layers))
        if not 0 <= rng[0] <= rng[1] < self.num_ws:
            raise UserError(f"layer range {rng[0]}-{rng[1]} is outside 0-{self.num_ws - 1}")
        with self._lock:
            cur = self.state
            if self.edit_layers(d.name) == rng:
                return False
            new_layers = {k: v for k, v in cur.layers.items() if k != d.name}
            if rng != d.layers:
                new_layers[d.name] = rng
            return self._push(dataclasses.replace(cur, layers=new_layers), f"{d.name} layers {rng[0]}-{rng[1]}",
                              ("layers", d.name))

    @_announcing
    def set_psi(self, psi: float, cutoff: int | None = None, merge: bool = False) -> bool:
        """Truncation ψ toward w_avg (1 = none) on the first `cutoff` layers (all when None)."""
        psi = float(psi)
        if cutoff is not None and not 0 < int(cutoff) <= self.num_ws:
            raise UserError(f"truncation cutoff must be 1-{self.num_ws}, not {cutoff}")
        with self._lock:
            cur = self.state
            if cur.psi == psi and cur.cutoff == cutoff:
                return False
            return self._push(dataclasses.replace(cur, psi=psi, cutoff=cutoff), f"ψ {psi:.2f}", ("psi",), merge)

    @_announcing
    def set_mix(self, source, layers: tuple[int, int] | str, label: str = "") -> bool:
        """Style mixing: take W+ layers [a, b] (or 'coarse' / 'middle' / 'fine') from `source`, a seed (int) or a
        latent ([num_ws, w_dim] / [1, num_ws, w_dim] / w)."""
        if isinstance(layers, str):
            from engine.edit.layers import parse_layers

            layers = parse_layers(layers, self.num_ws)
        a, b = (int(v) for v in layers)
        if not 0 <= a <= b < self.num_ws:
            raise UserError(f"mixing layer range {a}-{b} is outside 0-{self.num_ws - 1}")
        seed = None
        if isinstance(source, (int, np.integer)):
            seed = int(source)
            ws, label = self.map_seed(seed), label or f"seed {seed}"
        else:
            ws = self._as_w(source, label or "the mixing source")
        with self._lock:
            cur = self.state
            return self._push(dataclasses.replace(cur, mix=Mix(ws, (a, b), label, seed)),
                              f"mix {a}-{b} from {label or 'latent'}", ("mix",))

    @_announcing
    def clear_mix(self) -> bool:
        with self._lock:
            cur = self.state
            if cur.mix is None:
                return False
            return self._push(dataclasses.replace(cur, mix=None), "no mixing", ("mix",))

    @_announcing
    def set_locks(self, attributes) -> bool:
        """Hold these attributes still while the sliders move (InterFaceGAN's conditional manipulation): each
        direction gets the locked attributes' boundaries in the direction set projected out (engine.edit.labelled)."""
        from engine.edit.labelled import boundaries_for

        locks = tuple(dict.fromkeys(str(a).strip() for a in attributes if str(a).strip()))
        boundaries_for(self.directions, locks)  # a lock without a boundary is an error now, not at render time
        with self._lock:
            cur = self.state
            if cur.locks == locks:
                return False
            label = f"hold {', '.join(locks)} still" if locks else "no locks"
            return self._push(dataclasses.replace(cur, locks=locks), label, ("locks",))

    def edit_terms(self, state: EditState | None = None) -> list:
        """apply_edits' (Direction, α, layers) terms of a state, with its locks applied to each direction."""
        st = self.state if state is None else state
        terms = [(self.directions[n], a, st.layers.get(n)) for n, a in st.alphas.items()]
        if st.locks and terms:
            from engine.edit.labelled import boundaries_for, lock

            held = boundaries_for(self.directions, st.locks)
            terms = [(lock(d, held), a, rng) for d, a, rng in terms]
        return terms

    @_announcing
    def reset(self) -> bool:
        """Back to the bare base latent: no edits, no layer overrides, ψ = 1, no mixing (undoable)."""
        with self._lock:
            cur = self.state
            if not cur.alphas and not cur.layers and cur.psi == 1.0 and cur.mix is None:
                return False
            return self._push(EditState(base=cur.base, base_info=cur.base_info), "reset", ("reset",))

    # -- directions --------------------------------------------------------------------------------------------------
    @_announcing
    def add_directions(self, dset: DirectionSet | str | Path, replace: bool = False) -> None:
        if not isinstance(dset, DirectionSet):
            dset = load_directions(dset, self.G)
        dset.check(self.G)
        with self._lock:
            self.directions.extend(dset, replace=replace)
            self._bump()  # a replaced vector changes what the same amounts mean
            self._ws_cache = None
        self.events.emit("directions", self.directions)

    def rename_direction(self, old: str, new: str) -> None:
        """Rename a direction (e.g. 'sefa3' → 'smile'); every state in the history follows the new name."""
        with self._lock:
            self.directions.rename(old, new)
            ren = lambda d: {(new if k == old else k): v for k, v in d.items()}  # noqa: E731
            self._history = [dataclasses.replace(s, alphas=ren(s.alphas), layers=ren(s.layers)) for s in self._history]
            self._keys = [(k[0], new) if k and len(k) == 2 and k[1] == old else k for k in self._keys]
        self.events.emit("directions", self.directions)

    # -- the result --------------------------------------------------------------------------------------------------
    def compute_ws(self, state: EditState | None = None) -> torch.Tensor:
        """The edited W+ [1, num_ws, w_dim] of a state (default: the current one)."""
        with self._lock:
            if state is None and self._ws_cache is not None and self._ws_cache[0] == self._version:
                return self._ws_cache[1]
            s = self.state if state is None else state
            ws = s.base[None]
            if s.mix is not None:
                ws = style_mix(ws, s.mix.ws, s.mix.layers)
            ws = self.G.mapping.truncate(ws, s.psi, s.cutoff)
            edits = self.edit_terms(s)
            ws = apply_edits(ws, edits) if edits else ws.clone()
            if state is None:
                self._ws_cache = (self._version, ws)
            return ws

    def ws(self) -> torch.Tensor:
        return self.compute_ws()

    def edit_latent(self, ws: torch.Tensor) -> torch.Tensor:
        """Any latent [N, num_ws, w_dim] with the current mixing and slider edits applied (not ψ, not the base): the
        webcam brings its own base every frame. Safe from any thread: states are immutable, one read is consistent."""
        st = self.state
        if st.mix is not None:
            ws = style_mix(ws, st.mix.ws, st.mix.layers)
        terms = self.edit_terms(st)
        return apply_edits(ws, terms) if terms else ws

    def save_latent(self, path, **meta) -> Path:
        """Write the edited W+ with a description of how it was made (base, ψ, mixing, edits)."""
        with self._lock:
            s, ws = self.state, self.compute_ws()
        info = {
            "base": s.base_info, "psi": s.psi, "cutoff": s.cutoff,
            "edits": {k: {"alpha": v, "layers": list(self.edit_layers(k))} for k, v in s.alphas.items()},
            "mix": None if s.mix is None else {"layers": list(s.mix.layers), "source": s.mix.label},
            "locks": list(s.locks),
            **meta,
        }
        return save_latent(path, ws, self.G, **info)

    # -- rendering (engine.edit.renderer) ---------------------------------------------------------------------------
    def set_postprocess(self, fn: Callable[[Frame], dict] | None) -> None:
        """fn(frame) -> {name: image} run on every rendered frame, on the thread that renders it; its outputs land in
        `frame.extra` (the editor pastes the edited face back into its photo). None: no post-process."""
        self.renderer.set_postprocess(fn)

    def set_model(self, name: str, G) -> None:
        """Render `name` with G instead from now on: a generator of the same W space standing in for the model (a
        stylized copy, a blend of one). The edit state and its history stay; as after a change, observers
        hear `changed` and, with render_on_change, a frame follows."""
        if name not in self.models:
            raise UserError(f"no model named {name!r} in this session (have {', '.join(self.models)})")
        if not same_w_space(G, self.models[name]):
            raise UserError("that model does not share this session's W space")
        prepare_for_cpu(G)
        with self._lock:
            self.renderer.set_model(name, G)  # the renderer shares self.models
            if name == self.main_name:
                self.G = G
            self._bump()  # the same state now means other pixels: frames of the old model are stale
        self._announce()

    def render(self, which=None) -> Frame:
        """Render the current state now (on this thread); `which` limits it to some model names."""
        with self._lock:
            ws, version = self.compute_ws(), self._version
        return self.renderer.render(ws, version, which)

    def request_render(self, callback: Callable[[Frame], None] | None = None, which=None) -> int:
        """Ask for a frame of the current state without waiting. Requests made while the worker is busy are merged:
        only the newest state is rendered, and every merged request's callback receives that frame. Returns the
        version the frame will show (at least)."""
        with self._lock:  # held, so that requests reach the worker in the order of the states they show
            version = self._version
            self.renderer.request(self.compute_ws(), version, which, callback)
            return version

    def latest_frame(self) -> Frame | None:
        """The newest finished frame (maybe older than the current state); never waits."""
        return self.renderer.latest_frame()

    def wait_for_frame(self, version: int | None = None, timeout: float | None = None) -> Frame | None:
        """Block until a frame of at least `version` (default: the current one) exists; None on timeout."""
        return self.renderer.wait_for(self.version if version is None else version, timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is pending or rendering."""
        return self.renderer.wait_idle(timeout)

    def close(self) -> None:
        self.renderer.close()

    def with_models(self, models) -> EditSession:
        """A new session rendering with `models` (e.g. the student and, now, its teacher) that starts from this one's
        current state, directions, post-process and render_on_change; its history starts there, and its versions
        continue this one's so that frames of either can be ordered. This session stays open: close it when done."""
        new = EditSession(models, self.directions, noise_mode=self.noise_mode)
        if not same_w_space(new.G, self.G):
            new.close()
            raise UserError("the new models do not share this session's W space")
        with self._lock:
            state, version, auto = self.state, self._version, self._render_on_change
        with new._lock:
            new._history, new._labels, new._keys, new._pos = [state], ["start"], [None], 0
            new._version = version + 1
            new._render_on_change = auto
        new.set_postprocess(self.renderer.postprocess)
        return new

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
