"""Does LPIPS-VGG as the projector's loss reproduce faces better than the default MobileNetV2 distance?

    python -m training.perceptual_compare --steps 100 --samples 12 --out runs/perceptual-compare

Targets are real photos (the bundled examples and any given with --photos, or frames of --video), aligned as the
editor aligns them, and the model's own samples at held-out seeds (these have an exact answer). Each target is
inverted from the same encoder start, once per loss. Every result is judged three ways: PSNR, which favours neither
loss, LPIPS-VGG and the MobileNetV2 distance. Each loss is favoured by its own metric, so both are shown. Writes
`compare.json` and `compare.png` (rows: target | encoder only | each loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.errors import UserError, report_errors

LOSSES = ("mobilenet_v2", "lpips-vgg")


def video_frames(path, count: int) -> list[np.ndarray]:
    """`count` RGB frames spread evenly over a video."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame[:, :, ::-1].copy())
        ok, frame = cap.read()
    cap.release()
    if not frames:
        raise UserError(f"{path}: not a video OpenCV can read")
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in picks]


def targets(G, photos, video, frames: int, samples: int, seed: int) -> list[tuple[str, str, torch.Tensor]]:
    """(group, name, aligned target [1, 3, R, R] in [-1, 1]) for every photo, video frame and model sample."""
    from engine.faces import align_face, load_image
    from engine.models.generator import seeds_to_z

    out = []
    pictures = [(Path(p).name, load_image(p)) for p in photos]
    if video:
        pictures += [(f"{Path(video).stem}#{i}", f) for i, f in enumerate(video_frames(video, frames))]
    for name, rgb in pictures:
        crop = align_face(rgb, size=G.resolution).image
        out.append(("photos", name, torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1))
    with torch.no_grad():
        for s in range(seed, seed + samples):
            img = G.synthesis(G.mapping(seeds_to_z([s], G.z_dim)), noise_mode="const").clamp(-1, 1)
            out.append(("samples", f"seed {s}", ((img + 1) * 127.5).round() / 127.5 - 1))
    return out


def compare(G, E, items, steps: int, progress: bool = True) -> tuple[list[dict], dict[str, list[torch.Tensor]]]:
    from engine.invert import Inverter
    from engine.invert.projector import reconstruction_metrics
    from engine.models.perceptual import PerceptualLoss

    judges = {name: PerceptualLoss(name).eval() for name in LOSSES}
    inverters = {name: Inverter(G, E, perceptual=judges[name]) for name in LOSSES}
    rows, pictures = [], {"target": [], "encoder": [], **{n: [] for n in LOSSES}}
    bar = tqdm(total=len(items) * len(LOSSES), desc="invert", unit="target", disable=not progress)
    for group, name, target in items:
        ws0 = inverters[LOSSES[0]].encode(target)
        results = {"encoder": (ws0, 0.0)}
        for loss in LOSSES:
            t = time.perf_counter()
            r = inverters[loss].project(target, ws0.clone(), steps)
            results[loss] = (r.ws, time.perf_counter() - t)
            bar.update(1)
        pictures["target"].append(target)
        for method, (ws, seconds) in results.items():
            with torch.no_grad():
                recon = G.synthesis(ws, noise_mode="const")
            row = {"group": group, "target": name, "method": method, "seconds": round(seconds, 2)}
            for judge, metric in judges.items():
                m = reconstruction_metrics(recon, target, metric)
                row["psnr"] = m["psnr"]
                row[f"{judge}_distance"] = m["perceptual"]
            rows.append(row)
            pictures[method].append(recon.clamp(-1, 1))
    bar.close()
    return rows, pictures


def summarise(rows: list[dict]) -> dict:
    """Per group and method: mean PSNR and distances, and how often each loss beats the other on PSNR."""
    out: dict = {}
    for group in sorted({r["group"] for r in rows}):
        g = [r for r in rows if r["group"] == group]
        out[group] = {}
        for method in ("encoder", *LOSSES):
            m = [r for r in g if r["method"] == method]
            out[group][method] = {k: round(statistics.mean(r[k] for r in m), 4)
                                  for k in ("psnr", "mobilenet_v2_distance", "lpips-vgg_distance", "seconds")}
        by = {(r["target"], r["method"]): r["psnr"] for r in g}
        names = sorted({r["target"] for r in g})
        out[group]["lpips_vgg_higher_psnr"] = f"{sum(by[(n, 'lpips-vgg')] > by[(n, 'mobilenet_v2')] for n in names)}" \
                                              f"/{len(names)}"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.perceptual_compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="generator (default: the bundled student)")
    p.add_argument("--encoder", default=None, help="encoder (default: the bundled one)")
    p.add_argument("--photos", nargs="*", default=None, help="photos (default: the bundled examples)")
    p.add_argument("--video", default=None, help="also frames of this video")
    p.add_argument("--frames", type=int, default=4, help="frames taken from --video")
    p.add_argument("--samples", type=int, default=12, help="model samples (seeds from --seed)")
    p.add_argument("--seed", type=int, default=900_000, help="first sample seed (held out from training)")
    p.add_argument("--steps", type=int, default=100, help="projector steps per target and loss")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/perceptual-compare")
    return report_errors(_run, p.parse_args(argv))


def _run(args) -> None:
    from engine.assets import EXAMPLE_PHOTOS
    from engine.cli.common import load_model
    from engine.invert import pick_encoder
    from engine.render import make_grid, save_image, to_uint8

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    G = load_model(args.model)
    E, note = pick_encoder(G, args.encoder)
    if note:
        print(note)
    photos = list(args.photos) if args.photos is not None else [str(p) for p in EXAMPLE_PHOTOS]
    items = targets(G, photos, args.video, args.frames, args.samples, args.seed)
    rows, pictures = compare(G, E, items, args.steps)
    summary = summarise(rows)
    doc = {"model": str(G.source_path), "steps": args.steps, "losses": LOSSES, "summary": summary,
           "rows": rows}
    (out / "compare.json").write_text(json.dumps(doc, indent=1))
    grid = torch.cat([torch.cat(pictures[k]) for k in ("target", "encoder", *LOSSES)])
    save_image(make_grid(to_uint8(grid), cols=len(items)), out / "compare.png")
    for group, s in summary.items():
        print(f"{group}: " + "; ".join(
            f"{m} PSNR {v['psnr']:.2f} dB, LPIPS-VGG {v['lpips-vgg_distance']:.3f}, MobileNetV2 "
            f"{v['mobilenet_v2_distance']:.3f}" for m, v in s.items() if isinstance(v, dict))
            + f"; LPIPS-VGG higher PSNR on {s['lpips_vgg_higher_psnr']}")
    print(f"wrote {out / 'compare.json'} and {out / 'compare.png'} (rows: target, encoder, {', '.join(LOSSES)})")


if __name__ == "__main__":
    sys.exit(main())
