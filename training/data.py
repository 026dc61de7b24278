"""What a training step consumes: W+ latents from the teacher's mapping, and real images from a folder.

Both streams are counter-based: batch k of rank r is a pure function of (seed, k, r). Their whole state is a step
counter, so a resumed run draws exactly what the uninterrupted run would have drawn, whatever happened in between
(kill -9, a different number of data-loading workers, prefetched batches that were never used).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints/strings; distinct tuples give unrelated streams."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class LatentSampler:
    """z ~ N(0, I) → the teacher's (frozen) mapping → W+, with style mixing and truncation as augmentation.

    Mixing: with probability `mix_prob` a sample takes a second w from a layer chosen uniformly in 1 … num_ws-1 on.
    Truncation: with probability `trunc_prob` a sample is pulled toward w_avg with ψ uniform in [psi_min, 1], so the
    student also learns the truncated region users render most.
    """

    def __init__(
        self,
        mapping: torch.nn.Module,  # the teacher's MappingNetwork (frozen)
        seed: int,
        rank: int = 0,
        mix_prob: float = 0.5,
        trunc_prob: float = 0.5,
        psi_min: float = 0.5,
    ):
        self.mapping = mapping
        self.seed, self.rank = seed, rank
        self.mix_prob, self.trunc_prob, self.psi_min = mix_prob, trunc_prob, psi_min

    @torch.no_grad()
    def plain(self, n: int, step: int, device) -> torch.Tensor:
        """n W+ codes for `step`, neither mixed nor truncated: the distribution real images are compared with."""
        g = torch.Generator().manual_seed(derive_seed("plain latents", self.seed, self.rank, step))
        return self.mapping(torch.randn(n, self.mapping.z_dim, generator=g).to(device))

    @torch.no_grad()
    def sample(self, n: int, step: int, device, untruncated: int = 0) -> torch.Tensor:
        """n W+ codes for `step` (the same on every call); the first `untruncated` of them are never truncated."""
        g = torch.Generator().manual_seed(derive_seed("latents", self.seed, self.rank, step))
        m = self.mapping
        z = torch.randn(2 * n, m.z_dim, generator=g)
        mix = torch.rand(n, generator=g) < self.mix_prob
        cut = torch.randint(1, m.num_ws, (n,), generator=g)
        trunc = torch.rand(n, generator=g) < self.trunc_prob
        psi = self.psi_min + (1 - self.psi_min) * torch.rand(n, generator=g)
        ws = m(z.to(device))
        ws, ws2 = ws[:n], ws[n:]
        layer = torch.arange(m.num_ws)[None, :]
        take2 = (mix[:, None] & (layer >= cut[:, None])).to(device)
        ws = torch.where(take2[:, :, None], ws2, ws)
        trunc[:untruncated] = False  # after every draw, so the other samples stay what they were
        psi = torch.where(trunc, psi, torch.ones_like(psi)).to(device)
        return m.w_avg.lerp(ws, psi[:, None, None])


def list_images(root) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data {root}: no such folder (give a folder of face images)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"--data {root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_image(path: Path, resolution: int) -> np.ndarray:
    """Centre-cropped to a square and resized to resolution × resolution: uint8 [R, R, 3]."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if s != resolution:
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


class ImageFolderBatches(torch.utils.data.Dataset):
    """Item k is rank r's k-th batch: images at positions [(k·W + r)·B, (k·W + r + 1)·B) of an endless stream that
    visits the folder in a fresh shuffled order every epoch (and mirrors each image with probability ½ if xflip)."""

    def __init__(self, files, resolution: int, batch: int, seed: int, rank: int = 0, world: int = 1, xflip=True):
        self.files, self.resolution, self.batch = list(files), resolution, batch
        self.seed, self.rank, self.world, self.xflip = seed, rank, world, xflip
        self._warned: set[int] = set()
        self._epochs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:  # endless; DataLoader only needs this with a default sampler, which we never use
        return sys.maxsize

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Visiting order and mirror flags of an epoch (the two latest are kept: a batch straddles two at most)."""
        if epoch not in self._epochs:
            g = torch.Generator().manual_seed(derive_seed("images", self.seed, epoch))
            n = len(self.files)
            self._epochs[epoch] = (torch.randperm(n, generator=g),
                                   torch.randint(0, 2, (n,), generator=g, dtype=torch.bool))
            for old in sorted(self._epochs)[:-2]:
                del self._epochs[old]
        return self._epochs[epoch]

    def position(self, p: int) -> tuple[int, bool]:
        perm, flip = self._epoch(p // len(self.files))
        i = p % len(self.files)
        return int(perm[i]), bool(flip[i]) and self.xflip

    def _load(self, index: int) -> np.ndarray:
        # A damaged file in a large folder should not end a long run: use its neighbour, and say so once.
        for k in range(len(self.files)):
            j = (index + k) % len(self.files)
            try:
                return load_image(self.files[j], self.resolution)
            except (OSError, UnidentifiedImageError, ValueError) as e:
                if j not in self._warned:
                    self._warned.add(j)
                    print(f"warning: skipping unreadable image {self.files[j]} ({e})", file=sys.stderr)
        raise UserError("--data: none of the images can be read")

    def __getitem__(self, k: int) -> torch.Tensor:
        start = (k * self.world + self.rank) * self.batch
        out = []
        for p in range(start, start + self.batch):
            index, flip = self.position(p)
            img = self._load(index)
            out.append(img[:, ::-1] if flip else img)
        x = torch.from_numpy(np.stack(out).copy()).permute(0, 3, 1, 2)
        return x.float() / 127.5 - 1  # [B, 3, R, R] in [-1, 1]


class _CountFrom(torch.utils.data.Sampler):
    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1


class ImageStream:
    """Batches of real images for the discriminator, resumable: its state is the number of batches taken."""

    def __init__(self, root, resolution: int, batch: int, seed: int, rank=0, world=1, xflip=True, workers=0):
        self.dataset = ImageFolderBatches(list_images(root), resolution, batch, seed, rank, world, xflip)
        self.workers = workers
        self.taken = 0
        self._it = None

    def __len__(self) -> int:
        return len(self.dataset.files)

    def next(self) -> torch.Tensor:
        if self.workers == 0:
            x = self.dataset[self.taken]
        else:
            if self._it is None:
                loader = torch.utils.data.DataLoader(
                    self.dataset,
                    batch_size=None,
                    sampler=_CountFrom(self.taken),
                    num_workers=self.workers,
                    persistent_workers=True,
                    prefetch_factor=2,
                )
                self._it = iter(loader)
            x = next(self._it)
        self.taken += 1
        return x

    def state_dict(self) -> dict:
        return {"taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.taken = int(state["taken"])
        self._it = None  # restart the workers at the restored position
