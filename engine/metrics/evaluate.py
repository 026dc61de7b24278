"""The paper's table for a teacher and its student: params, FLOPs, FID against the data and between the two, and
LPIPS-VGG and PSNR of the student against the teacher on shared latents (`main.py eval`).

Samples: seeds first … first+N−1 through each model's mapping (ψ = 1, no truncation: FID measures the whole
distribution), synthesis with the fixed noise buffers, as 8-bit pictures. Teacher and student get the same seeds, so
their samples are pairs (same W+) for LPIPS and PSNR. A sampled data source (the recipe's face source) gets seeds of
its own, DATA_SEED0 on; `floor=True` adds a second, disjoint draw of it, whose FID against the first is the lowest
FID that N samples can show for that data.

Inception features are cached per image set (`FeatureCache`): the key names the Inception file's hash, the
resizing, the model file's sha256 (or the data's identity), the sample count and the seed, so a model evaluated once
costs nothing the next time, whatever it is compared with.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.metrics.weights import INCEPTION, LPIPS_VGG, verified

DEFAULT_SAMPLES = 2000
DATA_SEED0 = 10_000_000  # data samples never share seeds with model samples …
FLOOR_SEED0 = 20_000_000  # … nor with the second draw that measures the floor
CACHE_ENV = "BLAZESTUDIO_CACHE"
# LPIPS on images above this size is computed on downsampled copies (NVlabs' metrics and projector also work at 256).
LPIPS_MAX_SIZE = 256


def default_cache_dir() -> Path:
    """$BLAZESTUDIO_CACHE/features, else $XDG_CACHE_HOME/blazestudio/features, else ~/.cache/blazestudio/features."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "features"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "blazestudio" / "features"


class FeatureCache:
    """Inception features [N, 2048] on disk, one .npy per image set, named by a hash of its key (a JSON-able dict);
    the key is stored beside it (.json) so that a file can be told apart from a hash collision or a stale write."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root).expanduser() if root is not None else None

    @staticmethod
    def _name(key: dict) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, key: dict | None) -> np.ndarray | None:
        if self.root is None or key is None:
            return None
        name = self._name(key)
        try:
            stored = json.loads((self.root / f"{name}.json").read_text())
            if stored != json.loads(json.dumps(key)):
                return None
            feats = np.load(self.root / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError):  # absent, or damaged: computing again is the remedy
            return None
        return feats if feats.ndim == 2 else None

    def put(self, key: dict | None, features: np.ndarray) -> None:
        if self.root is None or key is None:
            return
        from engine.io.checkpoints import atomic_write

        def write_npy(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
                np.save(f, features, allow_pickle=False)

        name = self._name(key)
        try:
            atomic_write(self.root / f"{name}.npy", write_npy)
            atomic_write(self.root / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(key, sort_keys=True)))
        except UserError as e:  # a read-only cache folder costs time, not the result
            print(f"note: feature cache not written ({e})")


class GeneratorSamples:
    """`count` samples of a generator for seeds first … first+count-1 (ψ = 1, noise_mode "const")."""

    def __init__(self, G, count: int, first_seed: int, device: torch.device):
        self.G, self.count, self.first_seed, self.device = G, count, first_seed, device
        self._sha256: str | None = None

    @property
    def file_sha256(self) -> str | None:
        path = getattr(self.G, "source_path", None)
        if self._sha256 is None and path and Path(path).is_file():
            from engine.io.checkpoints import file_sha256

            self._sha256 = file_sha256(path)
        return self._sha256

    @property
    def key(self) -> dict | None:
        if self.file_sha256 is None:
            return None  # a network made in memory has no identity to cache under
        return {"kind": "generator", "sha256": self.file_sha256, "count": self.count, "seed": self.first_seed,
                "psi": 1.0, "noise_mode": "const"}

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def batches(self, batch: int) -> Iterator[torch.Tensor]:
        from engine.models.generator import seeds_to_z

        for i in range(0, self.count, batch):
            seeds = range(self.first_seed + i, self.first_seed + min(self.count, i + batch))
            z = seeds_to_z(seeds, self.G.z_dim).to(self.device)
            yield self.G.synthesis(self.G.mapping(z), noise_mode="const")


def _inception_key(images_key: dict | None) -> dict | None:
    if images_key is None:
        return None
    return {"features": "inception-pool3", "inception_sha256": INCEPTION.sha256, "resize": "tf-bilinear-299",
            "images": images_key}


@dataclass
class Evaluator:
    """Feature extraction with its cache, shared by every image set of one evaluation."""

    cache: FeatureCache
    device: torch.device
    batch: int = 25
    progress: bool = True

    def __post_init__(self):
        self._inception = None
        self.timings: dict[str, float] = {}
        self.cached: list[str] = []

    @property
    def inception(self):
        if self._inception is None:
            from engine.metrics.fid import InceptionFeatures

            self._inception = InceptionFeatures(self.device)
        return self._inception

    def features(self, name: str, images) -> np.ndarray:
        """Inception features of an image set (GeneratorSamples, SourceSamples, ImageFolder), cached."""
        t = time.perf_counter()
        key = _inception_key(images.key)
        feats = self.cache.get(key)
        if feats is not None and len(feats) == len(images):
            self.cached.append(name)
        else:
            feats = self.inception.features(images.batches(self.batch), total=len(images), desc=f"FID {name}",
                                            progress=self.progress, batch=self.batch)
            self.cache.put(key, feats)
        self.timings[f"features_{name}"] = round(time.perf_counter() - t, 2)
        return feats


def model_info(G) -> dict:
    """What the table says about a model: its file, params and FLOPs of one synthesis pass."""
    from engine.bench import count_params, inference_params, synthesis_flops

    path = getattr(G, "source_path", None)
    from engine.io.checkpoints import file_sha256

    return {
        "file": str(path) if path else None,
        "sha256": file_sha256(path) if path and Path(path).is_file() else None,
        "arch": G.cfg.arch,
        "resolution": G.resolution,
        "synthesis_params": count_params(G.synthesis),
        "inference_params": inference_params(G),
        "flops": synthesis_flops(G),
    }


@torch.no_grad()
def pair_metrics(student, teacher, count: int, first_seed: int, device, batch: int = 25, progress: bool = True
                 ) -> dict:
    """LPIPS-VGG and PSNR of the student against the teacher on shared latents (means over `count` pairs)."""
    from tqdm import tqdm

    from engine.metrics.lpips import LPIPS
    from engine.models.generator import seeds_to_z
    from engine.render import psnr

    R = teacher.resolution
    lp = LPIPS(resize=LPIPS_MAX_SIZE if R > LPIPS_MAX_SIZE else 0).to(device)
    d, p = [], []
    with tqdm(total=count, desc="LPIPS/PSNR student vs teacher", unit="pair", disable=not progress,
              dynamic_ncols=True) as bar:
        for i in range(0, count, batch):
            z = seeds_to_z(range(first_seed + i, first_seed + min(count, i + batch)), teacher.z_dim).to(device)
            ws = teacher.mapping(z)
            t = teacher.synthesis(ws, noise_mode="const").clamp(-1, 1)
            s = student.synthesis(ws, noise_mode="const").clamp(-1, 1)
            d.append(lp(s, t).float().cpu())
            p.append(psnr(s, t, per_sample=True).cpu())
            bar.update(len(z))
    return {"lpips_vgg": float(torch.cat(d).mean()), "psnr_db": float(torch.cat(p).mean()), "pairs": count}


def evaluate(
    student=None,  # Generator or None
    teacher=None,  # Generator or None (at least one of the two)
    data=None,  # SourceSamples / ImageFolder (engine.metrics.sources) or None: no FID against data
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,  # first seed of the model samples
    cache: FeatureCache | None = None,
    device=None,
    floor: bool = False,  # also FID of the data against a second draw of it (sampled sources only)
    progress: bool = True,
    batch: int = 25,
    log: Callable[[str], None] = print,
) -> dict:
    """The evaluation as a JSON-able dict: models, fid, student_vs_teacher, timings_s (see the module docstring)."""
    from engine.io.latents import same_w_space
    from engine.metrics.fid import NAME as FID_NAME
    from engine.metrics.fid import fid

    if student is None and teacher is None:
        raise UserError("nothing to evaluate: give a model")
    if samples < 2:
        raise UserError(f"--samples must be at least 2 (FID needs a covariance), not {samples}")
    device = torch.device(device or "cpu")
    t_start = time.perf_counter()
    # A missing or altered [metrics] file is reported before any work, not after the first feature set.
    verified(INCEPTION)
    verified(LPIPS_VGG)
    ev = Evaluator(cache or FeatureCache(None), device, batch, progress)
    models = {k: G for k, G in (("teacher", teacher), ("student", student)) if G is not None}
    info = {k: model_info(G.cpu()) for k, G in models.items()}  # FLOPs are counted on the CPU
    for G in models.values():
        G.eval().requires_grad_(False).to(device)
    paired = student is not None and teacher is not None and same_w_space(student, teacher)
    out: dict = {
        "samples": samples,
        "seed": seed,
        "data": None,
        "models": info,
        "fid": {},
        "student_vs_teacher": None,
        "metrics": {
            "fid": f"{FID_NAME}; Inception sha256 {INCEPTION.sha256[:16]}…; eigh-based Fréchet distance",
            "lpips": "LPIPS v0.1, VGG16 with its linear layers, at the model's resolution (at most 256 px)",
            "psnr": "dB on the 0..1 pictures, per pair, averaged",
        },
    }
    if student is not None and teacher is not None and not paired:
        log("note: the student does not share the teacher's W space (not distilled from it): no pair metrics")

    feats = {k: ev.features(k, GeneratorSamples(G, samples, seed, device)) for k, G in models.items()}
    fid_seconds = 0.0

    def fid_timed(a, b) -> float:
        nonlocal fid_seconds
        t = time.perf_counter()
        value = fid(a, b)
        fid_seconds += time.perf_counter() - t
        return value

    if data is not None:
        out["data"] = {"description": data.description, "images": len(data)}
        feats["data"] = ev.features("data", data)
        for k in models:
            out["fid"][f"{k}_vs_data"] = fid_timed(feats[k], feats["data"])
        if floor:
            second = getattr(data, "redraw", None)
            if second is None:
                log("note: --floor needs a sampled data source (the recipe's); skipped for a folder")
            else:
                out["fid"]["data_vs_data"] = fid_timed(ev.features("data_2", second(FLOOR_SEED0 + seed)), feats["data"])
    if "student" in feats and "teacher" in feats:
        out["fid"]["student_vs_teacher"] = fid_timed(feats["student"], feats["teacher"])
    ev.timings["frechet"] = round(fid_seconds, 2)
    if paired:
        t = time.perf_counter()
        out["student_vs_teacher"] = pair_metrics(student, teacher, samples, seed, device, batch, progress)
        ev.timings["pairs"] = round(time.perf_counter() - t, 2)
    ev.timings["total"] = round(time.perf_counter() - t_start, 2)
    out["timings_s"] = ev.timings
    out["cached"] = ev.cached
    return out


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def format_table(result: dict) -> str:
    """The result as the paper's table, plain text."""
    fids, pair = result["fid"], result.get("student_vs_teacher") or {}
    head = ["model", "params (M)", "GFLOPs", "FID vs data", "FID vs teacher", "LPIPS vs teacher", "PSNR vs teacher"]
    rows = []
    for role, m in result["models"].items():
        student = role == "student"
        rows.append([
            f"{role} ({Path(m['file']).name if m['file'] else 'in memory'})",
            f"{m['inference_params'] / 1e6:.2f}",
            f"{m['flops'] / 1e9:.3f}",
            _fmt(fids.get(f"{role}_vs_data"), ".2f"),
            _fmt(fids.get("student_vs_teacher") if student else None, ".2f"),
            _fmt(pair.get("lpips_vgg") if student else None, ".4f"),
            _fmt(pair.get("psnr_db") if student else None, ".2f") + (" dB" if student and pair else ""),
        ])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    text = [line(head), line(["-" * w for w in widths]), *map(line, rows)]
    n = result["samples"]
    notes = [f"{n} samples per model (ψ = 1)"]
    if result.get("data"):
        notes.append(f"data: {result['data']['description']}")
        if "data_vs_data" in fids:
            notes.append(f"FID floor (the data against a second draw of {n}): {fids['data_vs_data']:.2f}")
    if pair:
        notes.append(f"pairs: {pair['pairs']} shared latents")
    notes.append("params: synthesis on the inference path; GFLOPs: one synthesis pass")
    return "\n".join(text + [""] + notes)
