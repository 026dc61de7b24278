"""`main.py bench --edits`: how well photo edits keep the person, measured on real photos.

For each photo (default: the public-domain portraits in assets/examples) and each direction of a set (default: the
bundled one) at ±80% of its slider range, in both modes (transfer, regenerate):
- PSNR and LPIPS-VGG against the original, inside the face (where paste-back reaches) and PSNR outside it;
- the fine detail kept inside the face (RMS of the image minus its blur, relative to the original's): the photo's own
  texture survives transfer, a pasted rendition has the generator's;
- for geometric directions, the change MediaPipe measures on the output photo (mouth opening, head yaw), next to the
  change on the regenerated face.
Zero-edit exactness (every slider at 0) is reported for both modes. A picture grid is written beside the JSON.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

# Directions whose effect the face mesh measures on the output photo; fitted directions carry their attribute instead.
GEOMETRIC = {"mouth open": "mouth_open", "smile": "smile", "pose": "yaw", "head turn": "yaw", "nod": "pitch",
             "head tilt": "roll", "eyes open": "eyes_open"}
FRACTION = 0.8


def example_photos() -> list[Path]:
    from engine.assets import ASSETS

    return sorted(p for p in (ASSETS / "examples").glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _psnr(a, b, mask) -> float:
    if not mask.any():
        return float("nan")
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2)[mask].mean())
    return 200.0 if mse == 0 else min(200.0, 10 * math.log10(255.0**2 / mse))


def _detail(a, mask) -> float:
    x = a.astype(np.float64)
    return float(np.sqrt(((x - cv2.GaussianBlur(x, (0, 0), 2.0)) ** 2)[mask].mean()))


def _lpips_inside(lp, a, b, box) -> float:
    """LPIPS-VGG of the face's bounding box (resized to 256), or NaN without the metrics package."""
    if lp is None:
        return float("nan")
    x0, y0, x1, y1 = box
    t = [torch.from_numpy(cv2.resize(im[y0:y1, x0:x1], (256, 256), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
         .float()[None] / 127.5 - 1 for im in (a, b)]
    with torch.no_grad():
        return float(lp(t[0], t[1]).mean())


def bench_edits(G, inverter, dset, photos=None, out_json="bench_edits.json", progress: bool = True) -> dict:
    """Runs the measurements above; writes `out_json` and a grid picture beside it (…_grid.png)."""
    import json

    from tqdm import tqdm

    from engine.edit.attributes import AttributeMeter
    from engine.edit.ops import apply_edits
    from engine.edit.photo import PhotoEdit
    from engine.render import save_image

    try:
        from engine.metrics.lpips import LPIPS

        lp = LPIPS()
    except Exception:  # noqa: BLE001 - the metrics extra is optional: PSNR and detail still tell the story
        lp = None
    meter = AttributeMeter(photometric=False)
    photos = [Path(p) for p in (photos or example_photos())]
    rows, grids = [], []
    for path in photos:
        pe = PhotoEdit(path, inverter)
        rgb = pe.rgb
        regen0 = pe.render(lambda ws: ws, "regenerate")
        face = (regen0 != rgb).any(axis=2)  # where paste-back reaches
        ys, xs = np.nonzero(face)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        base = meter.photo(rgb) or {}
        regen_base = meter.photo(regen0) or {}
        zero = pe.render(lambda ws: ws, "transfer")
        rows.append({"photo": path.name, "direction": "(none)", "alpha": 0.0, "mode": "transfer",
                     "identical": bool(np.array_equal(zero, rgb)), "psnr_face": _psnr(zero, rgb, face),
                     "psnr_outside": _psnr(zero, rgb, ~face)})
        rows.append({"photo": path.name, "direction": "(none)", "alpha": 0.0, "mode": "regenerate",
                     "identical": bool(np.array_equal(regen0, rgb)), "psnr_face": _psnr(regen0, rgb, face),
                     "psnr_outside": _psnr(regen0, rgb, ~face), "lpips_face": _lpips_inside(lp, regen0, rgb, box),
                     "detail_kept": _detail(regen0, face) / _detail(rgb, face)})
        tiles = [rgb]
        for d in tqdm(list(dset), desc=path.name, unit="direction", disable=not progress):
            for sign in (-1, 1):
                a = sign * FRACTION * d.slider[1]
                fn = lambda ws, d=d, a=a: apply_edits(ws, [(d, a)])  # noqa: E731
                outs = {m: pe.render(fn, m) for m in ("transfer", "regenerate")}
                if sign > 0:
                    tiles += [outs["transfer"], outs["regenerate"]]
                attr = GEOMETRIC.get(d.name) or GEOMETRIC.get(d.info.get("attribute", ""))
                for mode, out in outs.items():
                    row = {"photo": path.name, "direction": d.name, "alpha": a, "mode": mode,
                           "psnr_face": _psnr(out, rgb, face), "psnr_outside": _psnr(out, rgb, ~face),
                           "lpips_face": _lpips_inside(lp, out, rgb, box),
                           "detail_kept": _detail(out, face) / _detail(rgb, face)}
                    if attr:
                        m = meter.photo(out) or {}
                        ref = base if mode == "transfer" else regen_base
                        row["attribute"] = attr
                        row["attribute_change"] = m.get(attr, float("nan")) - ref.get(attr, float("nan"))
                    rows.append(row)
        grids.append(_grid_row(tiles))
    summary = _summarize(rows)
    out = Path(out_json)
    out.write_text(json.dumps({"rows": _finite(rows), "summary": _finite(summary),
                               "directions": dset.names, "fraction": FRACTION}, indent=1))
    save_image(_stack(grids), out.with_name(out.stem + "_grid.png"))
    return {"rows": rows, "summary": summary}


def _summarize(rows) -> dict:
    """Per mode: medians over photos and directions; per geometric direction: whether transfer moves the attribute
    the regenerated face's way, by at least half as much."""
    out = {}
    for mode in ("transfer", "regenerate"):
        r = [x for x in rows if x["mode"] == mode and x["direction"] != "(none)"]
        out[mode] = {k: float(np.nanmedian([x.get(k, np.nan) for x in r])) for k in
                     ("psnr_face", "psnr_outside", "lpips_face", "detail_kept")}
        zero = [x for x in rows if x["mode"] == mode and x["direction"] == "(none)"]
        out[mode]["zero_edit_identical"] = all(x["identical"] for x in zero)
    geo = {}
    for x in rows:
        if x["mode"] == "transfer" and "attribute_change" in x:
            twin = next(y for y in rows if y["mode"] == "regenerate" and y["photo"] == x["photo"]
                        and y["direction"] == x["direction"] and y["alpha"] == x["alpha"])
            t, g = x["attribute_change"], twin["attribute_change"]
            ok = bool(np.sign(t) == np.sign(g) and abs(t) >= 0.5 * abs(g))
            geo.setdefault(x["direction"], []).append({"photo": x["photo"], "alpha": x["alpha"], "transfer": t,
                                                       "regenerate": g, "ok": ok})
    out["geometric"] = geo
    return out


def _grid_row(tiles, h: int = 256) -> np.ndarray:
    out = []
    for t in tiles:
        w = round(t.shape[1] * h / t.shape[0])
        out.append(cv2.resize(t, (w, h), interpolation=cv2.INTER_AREA))
        out.append(np.full((h, 4, 3), 255, np.uint8))
    return np.concatenate(out[:-1], axis=1)


def _stack(rows) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)


def _finite(x):
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def format_table(summary: dict) -> str:
    lines = ["mode        PSNR face  PSNR outside  LPIPS face  detail kept  zero edit identical"]
    for mode in ("transfer", "regenerate"):
        s = summary[mode]
        lines.append(f"{mode:11s} {s['psnr_face']:9.1f}  {s['psnr_outside']:12.1f}  {s['lpips_face']:10.3f}  "
                     f"{s['detail_kept']:11.2f}  {s['zero_edit_identical']}")
    for name, items in summary["geometric"].items():
        ok = sum(i["ok"] for i in items)
        lines.append(f"geometric '{name}': transfer moves it the regenerated way by ≥ half on {ok}/{len(items)}: "
                     + ", ".join(f"{i['transfer']:+.3f} vs {i['regenerate']:+.3f}" for i in items))
    return "\n".join(lines)
