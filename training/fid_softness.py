"""How much of a model's FID is softness? The recipe's face source, blurred by a Gaussian of σ pixels (another draw of
seeds), is scored against the source as if it were a model. Each set's sharpness (the mean variance of the Laplacian
of its grey images) is printed beside it, and the models' sharpness too, so that a model can be placed on the blur
scale.

    python -m training.fid_softness --sigmas 0 0.7 1 1.5 --models assets/teacher.safetensors assets/student.safetensors

Features are cached per set (engine.metrics.evaluate.FeatureCache), as for `main.py eval`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.errors import report_errors


class BlurredSamples:
    """Another image set (SourceSamples) with every image blurred by a Gaussian of `sigma` pixels."""

    def __init__(self, inner, sigma: float):
        self.inner, self.sigma = inner, float(sigma)

    @property
    def key(self) -> dict:
        return {**self.inner.key, "gaussian_blur_px": self.sigma}

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, batch: int):
        from engine.render import to_uint8

        for x in self.inner.batches(batch):
            u8 = [cv2.GaussianBlur(im, (0, 0), self.sigma, borderType=cv2.BORDER_REFLECT) if self.sigma > 0 else im
                  for im in to_uint8(x)]
            yield torch.from_numpy(np.stack(u8)).permute(0, 3, 1, 2).contiguous()


def sharpness(images) -> float:
    """Mean variance of the Laplacian of the grey images (uint8 [N, H, W, 3] or float [-1, 1] NCHW)."""
    from engine.render import to_uint8

    u8 = images if isinstance(images, np.ndarray) and images.dtype == np.uint8 else to_uint8(images)
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for im in u8]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.fid_softness", description=__doc__.split("\n\n")[0])
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.7, 1.0, 1.5], help="blur, in 64 px pixels")
    p.add_argument("--models", nargs="*", default=["assets/teacher.safetensors"], help="models to place on the scale")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--sharpness-samples", type=int, default=200)
    p.add_argument("--out", default="runs/fid-softness.json")
    return report_errors(_run, p.parse_args(argv))


def _run(args) -> None:
    from engine.io.checkpoints import load_generator
    from engine.metrics.evaluate import DATA_SEED0, Evaluator, FeatureCache, default_cache_dir
    from engine.metrics.fid import fid
    from engine.metrics.sources import FaceSource, SourceSamples
    from engine.models.generator import seeds_to_z

    source = FaceSource()
    data = SourceSamples(source, args.samples, DATA_SEED0)
    other = data.redraw(DATA_SEED0 + 10 * args.samples + 1_000_003)
    ev = Evaluator(FeatureCache(default_cache_dir()), torch.device("cpu"))
    ref = ev.features("source", data)
    probe = SourceSamples(source, args.sharpness_samples, DATA_SEED0 + 5_000_000)
    rows = []
    for s in args.sigmas:
        blurred = BlurredSamples(other, s)
        f = fid(ev.features(f"source blurred {s:g} px", blurred), ref)
        sharp = sharpness(next(BlurredSamples(probe, s).batches(len(probe))).permute(0, 2, 3, 1).numpy())
        rows.append({"set": f"source blurred {s:g} px", "sigma": s, "fid_vs_source": f, "sharpness": sharp})
        print(f"source blurred σ {s:g} px: FID {f:.2f} against the source, sharpness {sharp:.1f}", flush=True)
    for path in args.models:
        G = load_generator(path)
        with torch.no_grad():
            x = G.synthesis(G.mapping(seeds_to_z(range(args.sharpness_samples), G.z_dim)), noise_mode="const")
        rows.append({"set": str(path), "sharpness": sharpness(x)})
        print(f"{path}: sharpness {rows[-1]['sharpness']:.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"samples": args.samples, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
