"""How the engine runs models on this machine: preparing a generator for CPU inference, and the editor's threads."""

from __future__ import annotations

import torch

# The editor renders with one intra-op thread (app.cli --threads): batch-1 renders of the student were faster on one
# thread than on two even on an idle 2-core CPU, and far steadier when the other core is busy (the UI, MediaPipe, the
# webcam's other stage, other programs).
APP_THREADS = 1


def prepare_for_cpu(G):
    """Inference mode in channels_last, which is 3–4× faster than NCHW for these convs on CPU (see DEVELOPERS.md)."""
    return G.eval().requires_grad_(False).to(memory_format=torch.channels_last)
