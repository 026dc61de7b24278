"""FID over a training run: every kept snapshot of a run folder (`<name>_<step>.safetensors`, plus the final
`<name>.safetensors`) against the recipe's face source, with the same 2,000 source samples and the same model seeds
for all of them, so that the checkpoint to keep is chosen by FID and not by eye.

    python -m training.fid_curve runs/teacher-c --baseline assets/teacher.safetensors --samples 2000

Writes `fid.json` (step → FID) and `fid.png` (the curve) into the run folder and prints the best checkpoint.
Features are cached per model hash (engine.metrics.evaluate.FeatureCache), so adding a snapshot later costs one
model's samples only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from engine.errors import UserError, report_errors

SNAPSHOT = re.compile(r"^(?P<name>[a-z]+)_(?P<step>\d+)\.safetensors$")


def snapshots(run: Path) -> list[Path]:
    """The run's numbered snapshots in step order (named `<lowercase name>_<step>.safetensors`, as the trainers
    write them), then its final model if there is one."""
    found = sorted((p for p in run.glob("*.safetensors") if SNAPSHOT.match(p.name)),
                   key=lambda p: int(SNAPSHOT.match(p.name)["step"]))
    names = {SNAPSHOT.match(p.name)["name"] for p in found}
    finals = [run / f"{n}.safetensors" for n in sorted(names) if (run / f"{n}.safetensors").exists()]
    return found + finals


def training_step(info: dict, path: Path) -> int | None:
    """The step a model was saved at: the teacher's `steps`, a student's `distill.step`, else its file name's."""
    distill = info.get("distill")
    step = info.get("steps", distill.get("step") if isinstance(distill, dict) else None)
    if isinstance(step, int):
        return step
    named = SNAPSHOT.match(Path(path).name)
    return int(named["step"]) if named else None


def fid_curve(paths: list[Path], samples: int = 2000, seed: int = 0, progress: bool = True) -> list[dict]:
    from engine.io.checkpoints import load_generator
    from engine.metrics.evaluate import DATA_SEED0, FeatureCache, default_cache_dir, evaluate
    from engine.metrics.sources import FaceSource, SourceSamples

    source = FaceSource()
    data = SourceSamples(source, samples, DATA_SEED0 + seed)
    cache = FeatureCache(default_cache_dir())
    rows = []
    for path in paths:
        G = load_generator(path)
        if G.resolution != source.resolution:
            raise UserError(f"{path.name} is {G.resolution} px, the recipe's source {source.resolution} px")
        result = evaluate(None, G, data, samples=samples, seed=seed, cache=cache, progress=progress,
                          log=lambda *_: None)
        step = training_step(G.cfg.info, path)
        rows.append({"file": str(path), "step": step, "fid": float(result["fid"]["teacher_vs_data"])})
        print(f"{path.name}: step {step}, FID {rows[-1]['fid']:.2f}", flush=True)
    return rows


def plot(rows: list[dict], out: Path, title: str) -> None:
    """A plain line chart drawn with OpenCV (no plotting package is a dependency)."""
    pts = [(r["step"], r["fid"]) for r in rows if r["step"] is not None]
    w, h, m = 720, 420, 70
    img = np.full((h, w, 3), 255, np.uint8)
    if not pts:
        cv2.imwrite(str(out), img)
        return
    xs, ys = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    y0, y1 = np.floor(ys.min() - 1), np.ceil(ys.max() + 1)

    def at(x, y):
        return (int(m + (x - x0) / (x1 - x0) * (w - 2 * m)), int(h - m - (y - y0) / (y1 - y0) * (h - 2 * m)))

    font, grey = cv2.FONT_HERSHEY_SIMPLEX, (120, 120, 120)
    cv2.rectangle(img, (m, m), (w - m, h - m), grey, 1)
    for y in np.linspace(y0, y1, 5):
        cv2.putText(img, f"{y:.1f}", (8, at(x0, y)[1] + 5), font, 0.45, grey, 1, cv2.LINE_AA)
    last = -10**9
    for x in np.sort(xs):
        px = at(x, y0)[0]
        if px - last < 44:  # close snapshots: a label that would overprint its neighbour is left out
            continue
        cv2.putText(img, f"{int(x)}", (px - 18, h - m + 20), font, 0.45, grey, 1, cv2.LINE_AA)
        last = px
    order = np.argsort(xs)
    line = np.array([at(xs[i], ys[i]) for i in order], np.int32)
    cv2.polylines(img, [line], False, (200, 90, 30), 2, cv2.LINE_AA)
    for px, py in line:
        cv2.circle(img, (int(px), int(py)), 4, (200, 90, 30), -1, cv2.LINE_AA)
    # Value labels, the best point's first; one that would overprint a label already drawn is left out (a plateau of
    # close snapshots otherwise becomes an unreadable smear).
    drawn, values = [], ys[order]
    for i in np.argsort(values, kind="stable"):
        px, py = (int(v) for v in line[i])
        if any(abs(px - qx) < 44 and abs(py - qy) < 14 for qx, qy in drawn):
            continue
        cv2.putText(img, f"{values[i]:.2f}", (px - 20, py - 10), font, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
        drawn.append((px, py))
    cv2.putText(img, title, (m, 40), font, 0.6, (30, 30, 30), 1, cv2.LINE_AA)
    cv2.putText(img, "training step", (w // 2 - 50, h - 20), font, 0.5, grey, 1, cv2.LINE_AA)
    cv2.imwrite(str(out), img)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.fid_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder with <name>_<step>.safetensors snapshots")
    p.add_argument("--baseline", default=None, help="also the model the run started from (e.g. the published one)")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    return report_errors(_run, p.parse_args(argv))


def _run(args) -> None:
    run = Path(args.run)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    paths = ([Path(args.baseline)] if args.baseline else []) + snapshots(run)
    if not paths:
        raise UserError(f"{run}: no <name>_<step>.safetensors snapshots here")
    rows = fid_curve(paths, args.samples, args.seed)
    best = min(rows, key=lambda r: r["fid"])
    (run / "fid.json").write_text(json.dumps({"samples": args.samples, "rows": rows, "best": best}, indent=1))
    plot(rows, run / "fid.png", f"FID vs the recipe's source ({args.samples} samples) over training")
    print(f"best: {Path(best['file']).name} (step {best['step']}, FID {best['fid']:.2f}); wrote "
          f"{run / 'fid.json'} and {run / 'fid.png'}")


if __name__ == "__main__":
    sys.exit(main())
