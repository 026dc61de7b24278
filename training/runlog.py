"""What a run leaves for people to look at: CSV tables of losses and metrics, and a PNG plot of the losses.

The plot uses matplotlib when it is importable (it is not one of our dependencies) and otherwise draws itself with
PIL, so a run always leaves a picture.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def resume_note(saved: dict, now: dict, ignore=()) -> str:
    """The line a resumed run prints when its settings differ from the ones it was started with ('' when none do):
    'note: resuming with settings that differ from the run's: adv_ramp 500 → 2000'. A resume takes the new ones,
    which is how a learning rate is lowered on purpose; a default that differs from the run's would re-shape its
    schedule unnoticed, so the trainers say it."""
    changed = ", ".join(f"{k} {saved[k]} → {now[k]}" for k in sorted(now)
                        if k not in ignore and k in saved and saved[k] != now[k])
    return f"note: resuming with settings that differ from the run's: {changed}" if changed else ""


class CsvLog:
    """Rows appended to a CSV file, one per call. On resume the rows past the checkpoint's step are dropped: they were
    written by the part of the run that the checkpoint does not contain and will be computed again."""

    def __init__(self, path, columns: list[str], resume_step: int | None = None):
        self.path = Path(path)
        self.columns = list(columns)
        rows = read_csv(self.path) if resume_step is not None and self.path.exists() else []
        kept = [r for r in rows if int(float(r.get("step", 0))) <= resume_step] if resume_step is not None else []
        # Columns grow when a run is resumed with more terms (e.g. adversarial after pure distillation).
        for r in kept:
            for k in r:
                if k not in self.columns:
                    self.columns.append(k)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(
                {k: _fmt(v) for k, v in row.items()}
            )


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def label_columns(grid: np.ndarray, labels: list[str], tile: int, pad: int = 2) -> np.ndarray:
    """Add a white strip above an engine.render.make_grid image with a label over each column."""
    strip = Image.new("RGB", (grid.shape[1], 14), "white")
    d = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    for k, text in enumerate(labels):
        d.text((pad + k * (tile + pad) + 2, 1), text, fill="black", font=font)
    return np.concatenate([np.asarray(strip), grid], axis=0)


def label_rows(grid: np.ndarray, labels: list[list[str]], tile: int, pad: int = 2, width: int = 96) -> np.ndarray:
    """Add a white strip left of an engine.render.make_grid image with a label (one or more lines) beside each row."""
    strip = Image.new("RGB", (width, grid.shape[0]), "white")
    d = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    for k, lines in enumerate(labels):
        top = pad + k * (tile + pad) + (tile - 12 * len(lines)) // 2
        for i, text in enumerate(lines):
            d.text((4, top + 12 * i), text, fill="black", font=font)
    return np.concatenate([np.asarray(strip), grid], axis=1)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _series(rows: list[dict], columns) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    steps = np.array([float(r["step"]) for r in rows])
    out = {}
    for c in columns:
        vals = np.array([float(r[c]) if r.get(c) not in (None, "") else np.nan for r in rows])
        if np.isfinite(vals).any():
            out[c] = vals
    return steps, out


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Moving average that ignores missing values (NaN) and keeps the length."""
    if window <= 1:
        return y
    ok = np.isfinite(y)
    k = np.ones(window)
    num = np.convolve(np.where(ok, y, 0.0), k, mode="same")
    den = np.convolve(ok.astype(float), k, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def plot_losses(csv_path, png_path, columns: list[str], title: str = "", backend: str = "auto") -> Path | None:
    """One panel per loss column against step (raw faint, smoothed bold). backend: "auto", "matplotlib" or "pil"."""
    rows = read_csv(csv_path) if Path(csv_path).exists() else []
    if not rows:
        return None
    steps, series = _series(rows, columns)
    if not series:
        return None
    window = max(1, len(steps) // 50)
    if backend == "auto":
        try:
            import matplotlib  # noqa: F401

            backend = "matplotlib"
        except ImportError:
            backend = "pil"
    if backend == "matplotlib":
        _plot_matplotlib(steps, series, window, png_path, title)
    else:
        _plot_pil(steps, series, window, png_path, title)
    return Path(png_path)


def _plot_matplotlib(steps, series, window, png_path, title) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = len(series)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows), dpi=100)
    for i, (name, y) in enumerate(series.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(steps, y, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(steps, smooth(y, window), color="tab:blue", lw=1.6)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = Path(png_path).with_suffix(".tmp.png")
    fig.savefig(tmp)
    tmp.replace(png_path)


def _nice(v: float) -> str:
    return f"{v:.3g}"


def _plot_pil(steps, series, window, png_path, title) -> None:
    pw, ph, margin = 360, 220, (48, 24, 12, 30)  # panel size; left, top, right, bottom margins
    n = len(series)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    top = 22 if title else 0
    img = Image.new("RGB", (cols * pw, rows * ph + top), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        d.text((8, 4), title, fill="black", font=font)
    x0s, x1s = float(steps.min()), float(steps.max())
    for i, (name, y) in enumerate(series.items()):
        ox, oy = (i % cols) * pw, top + (i // cols) * ph
        left, up, right, down = ox + margin[0], oy + margin[1], ox + pw - margin[2], oy + ph - margin[3]
        ok = np.isfinite(y)
        lo, hi = float(np.min(y[ok])), float(np.max(y[ok]))
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        d.rectangle([left, up, right, down], outline=(160, 160, 160))
        d.text((left, oy + 6), name, fill="black", font=font)
        for frac in (0.0, 0.5, 1.0):  # y ticks
            yy = down - frac * (down - up)
            d.line([left - 3, yy, left, yy], fill="black")
            d.text((ox + 2, yy - 5), _nice(lo + frac * (hi - lo)), fill="black", font=font)
        d.text((left, down + 4), _nice(x0s), fill="black", font=font)
        d.text((right - 36, down + 4), _nice(x1s), fill="black", font=font)

        def to_px(xv, yv, left=left, right=right, up=up, down=down, lo=lo, hi=hi):
            fx = 0.5 if x1s == x0s else (xv - x0s) / (x1s - x0s)
            return left + fx * (right - left), down - (yv - lo) / (hi - lo) * (down - up)

        for vals, colour, width in ((y, (180, 200, 235), 1), (smooth(y, window), (31, 119, 180), 2)):
            pts = [to_px(float(a), float(b)) for a, b in zip(steps, vals) if np.isfinite(b)]
            if len(pts) == 1:
                px, py = pts[0]
                d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
            elif pts:
                d.line(pts, fill=colour, width=width)
    tmp = Path(png_path).with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(png_path)
