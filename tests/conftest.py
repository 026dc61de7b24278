import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
import engine  # noqa: E402, F401  (before any test module imports torch: engine sets the OpenMP spin count)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def nvidia_pkl() -> Path:
    return FIXTURES / "stylegan2" / "nvidia-64" / "network-snapshot.pkl"


@pytest.fixture(scope="session")
def rosinality_pt() -> Path:
    return FIXTURES / "stylegan2" / "rosinality-64" / "checkpoint.pt"


def run_main(*args, cwd=ROOT, timeout=600):
    """Run `python main.py ARGS` as a user would; returns the CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
