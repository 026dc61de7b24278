"""Few-shot face stylization (what BlazeStyleGAN shipped as in MediaPipe's Face Stylizer, done openly): fine-tune a
copy of a generator so that any W+ renders in the style of one to a few exemplar images.

The recipe is JoJoGAN's (Chong & Forsyth 2022), with a perceptual loss:
1. Each exemplar is inverted: aligned like a photo (or taken as an aligned crop with `aligned=True`, for drawings a
   face detector misses), encoded, and refined by the projector. Its codes w_s say what face the style is painted on.
2. Training pairs: w_s with its fine layers (those that style 64 px and finer: colour and texture) replaced by a
   random face's, each paired with the exemplar image itself. To render all of them as the exemplar, the network has
   to make the style's texture and colour whatever those layers ask for, from the exemplar's structure; that is the
   change that then shows on every other face.
3. A copy of the synthesis network is fine-tuned on the pairs (LPIPS-VGG when the metrics extra is installed, the
   engine's MobileNetV2 perceptual distance otherwise, plus a little L1). The mapping network, `w_avg` and the W+
   layout stay, so the encoder, directions, edits, photos, the webcam and export all work on the result. Optional
   terms keep the structure (low-resolution luminance) or the colours of the base model's renders of random faces.

The stylized model is an ordinary model file; its config records the base model and the exemplars (sha256 of their
pixels and files). Progress, cancel and resume are built in (`Stylizer.run`); `stylize` is the one-call form.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.errors import NoFaceError, UserError

STATE_SUFFIX = ".stylize-state.pt"


@dataclass
class StyleOptions:
    steps: int = 300  # fine-tuning steps (JoJoGAN's default)
    lr: float = 2e-3  # Adam on the synthesis weights, betas (0, 0.99) as JoJoGAN
    batch: int = 4  # mixed latents per step
    mix_from: int | None = None  # first W+ layer taken from random faces (default: the first that styles ≥ 64 px)
    invert_steps: int = 100  # projector steps per exemplar after the encoder
    l1_weight: float = 0.1
    keep_structure: float = 0.0  # weight of the base model's low-resolution luminance of random faces
    keep_colour: float = 0.0  # weight of the base model's mean colour of random faces
    seed: int = 0


@dataclass
class Exemplar:
    name: str
    image: np.ndarray  # the aligned crop, uint8 [R, R, 3]
    ws: torch.Tensor | None  # its codes [1, num_ws, w_dim] (None until inverted)
    sha256: str  # of the aligned pixels the model was tuned on
    source_sha256: str | None = None  # of the file, when read from one
    aligned: bool = False  # given as an aligned crop (no face detection)
    info: dict = field(default_factory=dict)


def _pixels_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def square_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The centred square of a picture, resized to size × size: an exemplar that is already an aligned face crop."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = rgb[y0 : y0 + s, x0 : x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def align_exemplar(source, resolution: int, aligned: bool = False) -> Exemplar:
    """One style image (a path or an RGB array) as the aligned crop the model is tuned on; not inverted yet."""
    from engine.faces import align_face, load_image
    from engine.faces.image_io import describe_source
    from engine.io.checkpoints import file_sha256

    name = describe_source(source)
    rgb = load_image(source)
    if aligned:
        crop = square_crop(rgb, resolution)
    else:
        try:
            crop = align_face(rgb, size=resolution).image
        except NoFaceError:
            raise NoFaceError(f"no face found in {name}; a drawing or painting the face detector misses can be given "
                              "as an aligned square crop of the face with --aligned") from None
    src_hash = file_sha256(source) if isinstance(source, (str, Path)) and Path(source).is_file() else None
    return Exemplar(name, crop, None, _pixels_sha256(crop), src_hash, aligned)


def invert_exemplar(ex: Exemplar, inverter, invert_steps: int = 100, progress: bool = False, cancel=None) -> bool:
    """Fill in the exemplar's codes: the encoder, then `invert_steps` projector steps. False when `cancel` stopped it
    (the codes are then unfinished and must not be used)."""
    target = inverter.to_tensor(ex.image)
    ws = inverter.encode(target)
    if invert_steps > 0:
        r = inverter.project(target, ws, invert_steps, progress=progress, cancel=cancel)
        if r.cancelled:
            return False
        ws = r.ws
    set_codes(ex, inverter, ws)
    return True


def set_codes(ex: Exemplar, inverter, ws: torch.Tensor) -> None:
    """Give the exemplar its codes and record how well they reproduce it."""
    m = inverter.metrics(inverter.to_tensor(ex.image), ws)
    ex.ws = ws.detach().cpu()
    ex.info = {"inversion_psnr": m.get("psnr"), "inversion_perceptual": m.get("perceptual")}


def prepare_exemplar(source, inverter, aligned: bool = False, invert_steps: int = 100, progress: bool = False,
                     cancel=None) -> Exemplar:
    """Align (or take as aligned), encode and refine one style image (a path or an RGB array)."""
    ex = align_exemplar(source, inverter.G.resolution, aligned)
    invert_exemplar(ex, inverter, invert_steps, progress, cancel)
    return ex


class _CallableEvent:
    """A `should_stop()` callable seen as the `threading.Event` the projector polls."""

    def __init__(self, should_stop):
        self.is_set = should_stop


def default_mix_from(num_ws: int) -> int:
    """The first W+ layer that styles 64 px or finer (JoJoGAN's swap, scaled to the model), at least halfway."""
    from engine.edit.layers import layer_resolutions

    res = layer_resolutions(num_ws)
    first = next((i for i, r in enumerate(res) if r >= 64), num_ws // 2)
    return max(1, min(first, num_ws - 1))


def _perceptual(device):
    """LPIPS-VGG when the metrics extra is installed, else the engine's MobileNetV2 distance (name, module)."""
    try:
        from engine.metrics.lpips import LPIPS

        return "lpips-vgg", LPIPS().to(device)
    except Exception:  # noqa: BLE001 - the metrics extra is optional
        from engine.models.perceptual import PerceptualLoss

        return "mobilenet_v2", PerceptualLoss().to(device)


class Stylizer:
    """One stylization run: the base generator, its exemplars, a tuned copy, its optimiser, and progress."""

    def __init__(self, G, exemplars: list[Exemplar], options: StyleOptions | None = None, state_path=None):
        if not exemplars:
            raise UserError("give at least one style image")
        self.base = G
        self.exemplars = exemplars
        self.o = options or StyleOptions()
        self.mix_from = self.o.mix_from if self.o.mix_from is not None else default_mix_from(G.num_ws)
        if not 0 < self.mix_from < G.num_ws:
            raise UserError(f"--mix-from must be 1-{G.num_ws - 1} for this model, not {self.mix_from}")
        self.device = G.w_avg.device
        self.loss_name, self.perceptual = _perceptual(self.device)
        self.perceptual.requires_grad_(False)
        self.styled = copy.deepcopy(G).float().train(False)
        self.styled.requires_grad_(False)
        self.styled.synthesis.requires_grad_(True)
        self.opt = torch.optim.Adam(self.styled.synthesis.parameters(), lr=self.o.lr, betas=(0.0, 0.99))
        self.gen = torch.Generator().manual_seed(self.o.seed)
        self.step = 0
        self.history: list[float] = []
        self.seconds = 0.0
        self.state_path = Path(state_path) if state_path else None
        self.targets = torch.cat([torch.from_numpy(e.image).permute(2, 0, 1)[None].float() / 127.5 - 1
                                  for e in exemplars]).to(self.device)
        self.ws = torch.cat([e.ws for e in exemplars]).to(self.device)

    # -- the pieces ------------------------------------------------------------------------------------------------
    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        n, b = len(self.exemplars), self.o.batch
        k = torch.randint(0, n, (b,), generator=self.gen)
        z = torch.randn(b, self.base.z_dim, generator=self.gen).to(self.device)
        with torch.no_grad():
            rand = self.base.mapping(z)
        ws = self.ws[k].clone()
        ws[:, self.mix_from :] = rand[:, self.mix_from :]
        return ws, self.targets[k]

    def _keep_terms(self) -> torch.Tensor:
        o = self.o
        if o.keep_structure <= 0 and o.keep_colour <= 0:
            return torch.zeros((), device=self.device)
        z = torch.randn(2, self.base.z_dim, generator=self.gen).to(self.device)
        with torch.no_grad():
            ws = self.base.mapping(z, psi=0.7)
            ref = self.base.synthesis(ws, noise_mode="const")
        img = self.styled.synthesis(ws, noise_mode="const")
        loss = torch.zeros((), device=self.device)
        if o.keep_structure > 0:
            def luma(x):
                y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
                return F.interpolate(y, size=(16, 16), mode="area")

            loss = loss + o.keep_structure * (luma(img) - luma(ref)).abs().mean()
        if o.keep_colour > 0:
            loss = loss + o.keep_colour * (img.mean((2, 3)) - ref.mean((2, 3))).abs().mean()
        return loss

    def train_step(self) -> float:
        ws, target = self._pairs()
        img = self.styled.synthesis(ws, noise_mode="const")
        loss = self.perceptual(img, target).mean() + self.o.l1_weight * (img - target).abs().mean()
        loss = loss + self._keep_terms()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        value = float(loss.detach())
        self.history.append(value)
        return value

    # -- the run ---------------------------------------------------------------------------------------------------
    def run(self, callback: Callable[[int, int, float], bool | None] | None = None, should_stop=None,
            progress: bool = True, save_every: int = 50) -> str:
        """Train to `options.steps`; "done", or "stopped" when `should_stop()` or the callback said so (the state
        is saved for resuming when a state path was given)."""
        status = "done"
        t0 = time.perf_counter()
        bar = tqdm(total=self.o.steps, initial=self.step, desc="stylize", unit="step", disable=not progress)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                while self.step < self.o.steps:
                    if should_stop is not None and should_stop():
                        status = "stopped"
                        break
                    loss = self.train_step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                    if self.state_path and self.step % save_every == 0:
                        self.save_state()
                    if callback is not None and callback(self.step, self.o.steps, loss) is False:
                        status = "stopped" if self.step < self.o.steps else "done"
                        break
        finally:
            bar.close()
            self.seconds += time.perf_counter() - t0
        if self.state_path and status == "stopped":
            self.save_state()
        return status

    def result(self, name: str = "stylized"):
        """The stylized generator (eval, no gradients), its config naming the base and the exemplars."""
        from engine.io.checkpoints import file_sha256

        G = copy.deepcopy(self.styled).eval().requires_grad_(False)
        base_path = getattr(self.base, "source_path", "") or ""
        G.cfg.info = {
            **{k: v for k, v in self.base.cfg.info.items() if k != "stylized"},
            "stylized": {
                "name": name,
                "base_model": Path(base_path).name or None,
                "base_sha256": file_sha256(base_path) if base_path and Path(base_path).is_file() else None,
                "styles": [{"name": e.name, "pixels_sha256": e.sha256, "file_sha256": e.source_sha256,
                            "aligned": e.aligned, **e.info} for e in self.exemplars],
                "steps": self.step,
                "loss": self.loss_name,
                "options": {**asdict(self.o), "mix_from": self.mix_from},
                "seconds": round(self.seconds, 1),
            },
        }
        G.source_path = ""
        return G

    # -- resume ----------------------------------------------------------------------------------------------------
    def _identity(self) -> dict:
        return run_identity(self.base, self.exemplars, self.o)

    def save_state(self) -> None:
        from engine.io.checkpoints import atomic_write

        state = {"identity": self._identity(), "step": self.step, "synthesis": self.styled.synthesis.state_dict(),
                 "opt": self.opt.state_dict(), "gen": self.gen.get_state(), "history": self.history,
                 "seconds": self.seconds, "ws": self.ws.cpu()}
        atomic_write(self.state_path, lambda tmp: torch.save(state, tmp))

    def try_resume(self) -> bool:
        """Continue from the state file when it belongs to this very run (same base, exemplars, options)."""
        state = _load_state(self.state_path, self._identity(), self.device)
        if state is None:
            return False
        self.styled.synthesis.load_state_dict(state["synthesis"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.step, self.history, self.seconds = int(state["step"]), list(state["history"]), float(state["seconds"])
        return True

    def clear_state(self) -> None:
        if self.state_path:
            self.state_path.unlink(missing_ok=True)


def run_identity(G, exemplars: list[Exemplar], options: StyleOptions) -> dict:
    """What makes a saved state this run's: the base's W space, the aligned exemplars' pixels and the options."""
    return {"exemplars": [e.sha256 for e in exemplars], "options": asdict(options), "base_mapping": _mapping_id(G)}


def _load_state(state_path, identity: dict, device="cpu") -> dict | None:
    """A run's saved state, None when there is none; one line when it is unreadable or another run's."""
    if not state_path or not Path(state_path).exists():
        return None
    name = Path(state_path).name
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{name}: unreadable stylization state ({str(e)[:120]}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("identity") != identity:
        raise UserError(f"{name} belongs to another stylization (other images, model or options); delete it, or "
                        "choose another --out")
    return state


def saved_codes(state_path, G, exemplars: list[Exemplar], options: StyleOptions) -> torch.Tensor | None:
    """The exemplars' codes stored in this run's state file, so that a resumed run skips inverting them again; None
    when there is no state file (and a clear error, before any inverting, when it is another run's)."""
    state = _load_state(state_path, run_identity(G, exemplars, options))
    ws = None if state is None else state.get("ws")
    if not isinstance(ws, torch.Tensor) or ws.shape != (len(exemplars), G.num_ws, G.w_dim):
        return None
    return ws


def _mapping_id(G) -> str:
    from engine.io.latents import w_space_id

    return w_space_id(G)


def blend_generators(base, styled, strength: float):
    """A copy of `styled` whose synthesis weights are base + strength·(styled − base): the stylization at a chosen
    strength (0 = the base, 1 = the full style). Both must share the architecture (a stylization does)."""
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"the style strength must be between 0 and 1, not {strength}")
    out = copy.deepcopy(styled)
    with torch.no_grad():
        sb = dict(base.synthesis.named_parameters())
        for n, p in out.synthesis.named_parameters():
            p.copy_(sb[n].lerp(p, strength))
    if strength < 1.0:
        # A blend is neither file: an export or a save must not claim the stylized file's path and hash.
        out.source_path = ""
        info = dict(out.cfg.info)
        info["stylized"] = {**info.get("stylized", {}), "strength": float(strength)}
        out.cfg.info = info
    return out


def stylize(G, sources, inverter, options: StyleOptions | None = None, aligned: bool = False, out=None,
            name: str = "stylized", callback=None, should_stop=None, progress: bool = True):
    """Exemplars → a stylized copy of G (and, with `out`, the model file written there; resumable from the state
    file beside it). Returns (generator or None when stopped early, Stylizer; None as well when stopped while the
    style images were still being inverted). A resumed run takes the style images' codes from its state file."""
    from engine.io.checkpoints import save_generator

    options = options or StyleOptions()
    exemplars = [align_exemplar(s, G.resolution, aligned) for s in sources]
    state = Path(str(out) + STATE_SUFFIX) if out else None
    codes = saved_codes(state, G, exemplars, options)
    if codes is not None:
        for i, ex in enumerate(exemplars):
            set_codes(ex, inverter, codes[i : i + 1].to(G.w_avg.device))
    else:
        cancel = _CallableEvent(should_stop) if should_stop is not None else None
        for ex in exemplars:
            # Ctrl-C while a style image is being inverted stops there: nothing is trained yet, nothing to keep.
            if not invert_exemplar(ex, inverter, options.invert_steps, progress, cancel):
                return None, None
    st = Stylizer(G, exemplars, options, state_path=state)
    if st.try_resume() and progress:
        print(f"resumed at step {st.step} from {state}")
    status = st.run(callback=callback, should_stop=should_stop, progress=progress)
    if status != "done":
        return None, st
    styled = st.result(name)
    if out:
        save_generator(styled, out)
        styled.source_path = str(out)
        st.clear_state()
    return styled, st


# ---------------------------------------------------------------------------------------------------------------------
# Measures for the figures


def _vgg_features(x: torch.Tensor) -> list[torch.Tensor]:
    """VGG16 activations (LPIPS' layers) of [-1, 1] images, or MobileNetV2 stages without the metrics extra."""
    try:
        from engine.metrics.lpips import LPIPS

        net = _vgg_features.net = getattr(_vgg_features, "net", None) or LPIPS()
        return net.features(x)
    except Exception:  # noqa: BLE001
        from engine.models.perceptual import PerceptualLoss

        net = _vgg_features.net = getattr(_vgg_features, "net", None) or PerceptualLoss()
        return net.features(x)


@torch.no_grad()
def gram_distance(images: torch.Tensor, exemplar: torch.Tensor) -> float:
    """Style distance (Gatys et al.): mean over layers of the squared difference between the Gram matrices of each
    image's features and the exemplar's, averaged over the images. 0 = the exemplar's texture statistics."""
    fi = _vgg_features(images.float())
    fe = _vgg_features(exemplar.float())

    def gram(f):
        n, c, h, w = f.shape
        f = f.reshape(n, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)

    return float(np.mean([((gram(a) - gram(b)) ** 2).sum((1, 2)).mean().item() for a, b in zip(fi, fe)]))


@torch.no_grad()
def face_detection_rate(G, seeds, psi: float = 0.7) -> float:
    """Share of G's renders of `seeds` in which MediaPipe's face mesh finds a face (stylized faces must stay faces)."""
    from engine.faces.mesh import shared_crop_mesh
    from engine.models.generator import seeds_to_z
    from engine.render import to_uint8

    mesh = shared_crop_mesh()
    imgs = to_uint8(G.synthesis(G.mapping(seeds_to_z(list(seeds), G.z_dim), psi=psi)))
    return float(np.mean([mesh(im) is not None for im in imgs]))


@torch.no_grad()
def style_report(G, styled, exemplars, preview=None, seeds: int = 6, rate_seeds: int = 24) -> dict:
    """What a stylization did, on base and stylized renders of the same latents: the Gram distance to the exemplars
    (lower is closer), the share of `rate_seeds` stylized samples in which the face mesh finds a face, and with
    `preview` a picture written there (rows: style images, base samples, stylized samples)."""
    from engine.models.generator import seeds_to_z
    from engine.render import make_grid, save_image, to_uint8

    ws = G.mapping(seeds_to_z(range(seeds), G.z_dim), psi=0.7)
    base, sty = G.synthesis(ws), styled.synthesis(ws)
    ex = np.stack([e.image for e in exemplars])
    if preview is not None:
        row = np.concatenate([ex, np.full((max(0, seeds - len(ex)), *ex.shape[1:]), 255, np.uint8)])[:seeds]
        save_image(make_grid(np.concatenate([row, to_uint8(base), to_uint8(sty)]), cols=seeds), preview)
    targets = torch.from_numpy(ex).permute(0, 3, 1, 2).float() / 127.5 - 1
    return {
        "gram_base": float(np.mean([gram_distance(base, e[None]) for e in targets])),
        "gram_stylized": float(np.mean([gram_distance(sty, e[None]) for e in targets])),
        "face_rate": face_detection_rate(styled, range(rate_seeds)),
        "rate_seeds": rate_seeds,
    }
