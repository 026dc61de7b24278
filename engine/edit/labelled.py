"""Directions named by what they do, measured (engine.edit.attributes) instead of guessed by eye.

- `sample_attributes`: render seeds and measure every attribute of every face (MediaPipe face mesh, pixels).
- `fit_attribute_directions`: InterFaceGAN's recipe with measured labels instead of a classifier's. For each
  attribute, a ridge regression of the measure on w gives the direction in W along which it grows fastest (the
  boundary's normal, with continuous labels); the W+ layer range is the smallest of coarse / middle / fine /
  coarse+middle / all that still moves the attribute at least 80% as much as all layers do.
- `describe`: sweep any direction (SeFa, GANSpace, imported, fitted) and measure what it moves: per attribute, the
  share of faces that move the same way and the median change in standard deviations of that attribute across
  faces; a proposed name ("mostly yaw, some smile") and layer range.
- `lock`: InterFaceGAN's conditional manipulation. A direction with the boundaries of other attributes projected out
  (Gram-Schmidt) moves its own attribute while holding those still, to first order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from engine.edit.attributes import ATTRIBUTES, AttributeMeter
from engine.edit.layers import layer_groups
from engine.edit.ops import apply_edits
from engine.errors import UserError
from engine.io.directions import Direction, DirectionSet
from engine.models.generator import seeds_to_z
from engine.render import to_uint8

# Attributes a labelled direction is fitted for by default: the ones a user looks for and the face mesh measures well.
DEFAULT_ATTRIBUTES = ("smile", "mouth_open", "eyes_open", "yaw", "pitch", "roll", "brightness", "warmth")
SWEEP_FRACTION = 2 / 3  # describe and the figures sweep α over ±⅔ of a slider's range
HELD_OUT_SEED = 10_000_000  # held-out seeds start here; fitting uses seeds from 0


@dataclass
class Samples:
    """Measured renders: w [n, w_dim] and one array [n] per attribute (NaN where the mesh found no face)."""

    w: torch.Tensor
    values: dict[str, np.ndarray]
    seeds: list[int] = field(default_factory=list)

    def std(self, name: str) -> float:
        v = self.values[name]
        return float(np.nanstd(v)) or 1e-9


@torch.no_grad()
def measure_ws(G, ws: torch.Tensor, meter: AttributeMeter, batch: int = 16) -> dict[str, np.ndarray]:
    """Every attribute of G's render of each W+ [n, num_ws, w_dim]."""
    out = {k: np.full(len(ws), np.nan) for k in ATTRIBUTES}
    for i in range(0, len(ws), batch):
        imgs = to_uint8(G.synthesis(ws[i : i + batch], noise_mode="const"))
        for j, img in enumerate(imgs):
            m = meter.crop(img)
            if m is not None:
                for k in ATTRIBUTES:
                    out[k][i + j] = m.get(k, np.nan)
    return out


@torch.no_grad()
def sample_attributes(G, n: int, seed0: int = 0, psi: float = 0.8, meter: AttributeMeter | None = None,
                      progress: bool = True) -> Samples:
    """n seeds from `seed0`, mapped (truncation ψ keeps faces the mesh can read), rendered and measured."""
    meter = meter or AttributeMeter()
    seeds = list(range(seed0, seed0 + n))
    w_all, values = [], {k: [] for k in ATTRIBUTES}
    bar = tqdm(total=n, desc="measure", unit="face", disable=not progress)
    for i in range(0, n, 32):
        ws = G.mapping(seeds_to_z(seeds[i : i + 32], G.z_dim), psi=psi)
        got = measure_ws(G, ws, meter)
        w_all.append(ws[:, 0])
        for k in ATTRIBUTES:
            values[k].append(got[k])
        bar.update(len(ws))
    bar.close()
    return Samples(torch.cat(w_all), {k: np.concatenate(v) for k, v in values.items()}, seeds)


def _ridge(x: torch.Tensor, t: torch.Tensor, l2: float) -> torch.Tensor:
    a = x.T @ x + l2 * len(x) * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, x.T @ t)


def _ridge_direction(w: torch.Tensor, y: np.ndarray, l2=None) -> tuple[torch.Tensor, float]:
    """Unit direction of the ridge-regression coefficients of y on centred w, and the held-out R² of the fit.

    W has hundreds of dimensions and a few thousand measured faces fit any of them by chance, so the penalty is
    chosen by 5-fold cross-validation (the R² reported is that held-out one) unless `l2` is given."""
    ok = np.isfinite(y)
    if ok.sum() < 40:
        raise UserError(f"only {int(ok.sum())} faces could be measured; sample more (or use ψ < 1)")
    x = w[torch.from_numpy(ok)].double()
    t = torch.from_numpy(y[ok]).double()
    x = x - x.mean(0)
    t = t - t.mean()
    folds = torch.arange(len(x)) % 5
    best = None
    for lam in ([l2] if l2 is not None else [1e-3, 1e-2, 1e-1, 1.0, 10.0]):
        err = 0.0
        for k in range(5):
            tr, te = folds != k, folds == k
            coef = _ridge(x[tr], t[tr], lam)
            err += float(((t[te] - x[te] @ coef) ** 2).sum())
        r2 = 1 - err / float((t * t).sum().clamp_min(1e-12))
        if best is None or r2 > best[1]:
            best = (lam, r2)
    coef = _ridge(x, t, best[0])
    norm = coef.norm()
    if norm == 0:
        raise UserError("the measure carries no linear signal in W")
    return (coef / norm).float(), float(best[1])


@torch.no_grad()
def sweep_effect(G, d: Direction, seeds, attrs=ATTRIBUTES, alpha: float | None = None, psi: float = 0.8,
                 layers: tuple[int, int] | None = None, meter: AttributeMeter | None = None,
                 locks=()) -> dict[str, np.ndarray]:
    """Per attribute, the change (α = +a minus α = −a) on each seed's face; a = ⅔ of the slider by default."""
    meter = meter or AttributeMeter()
    a = SWEEP_FRACTION * d.slider[1] if alpha is None else alpha
    d = lock(d, locks) if locks else d
    base = G.mapping(seeds_to_z(list(seeds), G.z_dim), psi=psi)
    hi = measure_ws(G, apply_edits(base, [(d, a, layers)]), meter)
    lo = measure_ws(G, apply_edits(base, [(d, -a, layers)]), meter)
    return {k: hi[k] - lo[k] for k in attrs}


def summarize(changes: np.ndarray, std: float) -> dict:
    """Share of faces moving the majority's way, and the median change in across-face standard deviations."""
    c = changes[np.isfinite(changes)]
    if len(c) == 0:
        return {"same_way": float("nan"), "median_std": float("nan"), "n": 0}
    sign = np.sign(np.median(c)) or 1.0
    return {"same_way": float(np.mean(np.sign(c) == sign)), "median_std": float(np.median(c) / std), "n": int(len(c))}


def choose_layers(G, d: Direction, attr: str, seeds, meter: AttributeMeter, keep: float = 0.8) -> tuple[int, int]:
    # (8 faces per candidate range are enough to rank them; the reported effects use the full held-out set.)
    """The smallest of the usual W+ ranges that moves `attr` at least `keep` times as much as all layers do."""
    groups = layer_groups(G.num_ws)
    cands = [groups[k] for k in ("coarse", "middle", "fine") if k in groups]
    if "coarse" in groups and "middle" in groups:
        cands.append((groups["coarse"][0], groups["middle"][1]))
    full = groups["all"]
    effect = {}
    for rng in [full, *cands]:
        ch = sweep_effect(G, d, seeds, (attr,), layers=rng, meter=meter)[attr]
        effect[rng] = float(np.nanmedian(ch)) if np.isfinite(ch).any() else 0.0
    best = full
    for rng in sorted(cands, key=lambda r: r[1] - r[0]):
        if abs(effect[rng]) >= keep * abs(effect[full]) and np.sign(effect[rng]) == np.sign(effect[full]):
            best = rng
            break
    return best


def fit_attribute_directions(G, samples: Samples, attrs=DEFAULT_ATTRIBUTES, l2: float | None = None,
                             check_seeds=None, meter: AttributeMeter | None = None, progress: bool = True,
                             layers: tuple[int, int] | None = None) -> DirectionSet:
    """One direction per attribute (named after it), its W+ range chosen by `choose_layers` unless `layers` is
    given, and its measured effect per unit α on `check_seeds` (held out) in its info."""
    meter = meter or AttributeMeter()
    check_seeds = list(check_seeds or range(HELD_OUT_SEED, HELD_OUT_SEED + 24))
    out = DirectionSet.for_model(G)
    w = samples.w
    for name in tqdm(list(attrs), desc="fit", unit="attribute", disable=not progress):
        if name not in samples.values:
            raise UserError(f"unknown attribute '{name}'; choose from {', '.join(ATTRIBUTES)}")
        v, r2 = _ridge_direction(w, samples.values[name], l2)
        proj = (w - w.mean(0)) @ v
        std_w = float(proj.std())
        info = {"attribute": name, "r2_held_out": r2, "std": std_w, "samples": len(w)}
        d = Direction(name, v, (0, G.num_ws - 1), (-3 * std_w, 3 * std_w), "attributes", info)
        rng = layers or choose_layers(G, d, name, check_seeds[:8], meter)
        d = Direction(name, v, rng, d.slider, "attributes", info)
        # The slider spans what it takes to move the attribute by about ±1.5 of its across-face standard deviations
        # at ⅔ of the range, within the distance that separates typical faces in W (further out, faces break up).
        probe = sweep_effect(G, d, check_seeds[:8], (name,), meter=meter)[name]
        per_alpha = abs(float(np.nanmedian(probe))) / (2 * SWEEP_FRACTION * d.slider[1]) if np.isfinite(
            probe).any() else 0.0
        reach = float(np.median((w - w.mean(0)).norm(dim=1)))
        hi = 1.5 * samples.std(name) / (SWEEP_FRACTION * max(per_alpha, 1e-9))
        # At least the faces' own spread along it (±3 std), unless that is beyond the reach: the cap wins.
        hi = float(min(max(hi, 3 * std_w), reach))
        d = Direction(name, v, rng, (-round(hi, 3), round(hi, 3)), "attributes", info)
        ch = sweep_effect(G, d, check_seeds, meter=meter)
        a = SWEEP_FRACTION * d.slider[1]
        d.info["effect_per_alpha"] = {k: float(np.nanmedian(ch[k]) / (2 * a)) if np.isfinite(ch[k]).any() else None
                                      for k in ATTRIBUTES}
        d.info["held_out"] = {k: summarize(ch[k], samples.std(k)) for k in ATTRIBUTES}
        d.info["unit"] = {"alpha": "W distance", "effect": "attribute units per unit α"}
        out.add(d)
    return out


def describe(G, dset: DirectionSet, samples: Samples, seeds, meter: AttributeMeter | None = None,
             attrs=ATTRIBUTES, progress: bool = True, callback=None, with_locks: bool = False) -> dict[str, dict]:
    """For each direction: per attribute {same_way, median_std}, a proposed name and layer range.
    callback(done, total) after each direction; returning False stops (what is measured so far is returned).
    with_locks: for each fitted attribute direction, also the same sweep with every other fitted attribute of the set
    locked (`attributes_locked`), to show what the locks hold still."""
    meter = meter or AttributeMeter()
    seeds = list(seeds)
    out = {}
    dirs = list(dset)
    for i, d in enumerate(tqdm(dirs, desc="describe", unit="direction", disable=not progress)):
        if callback is not None and callback(i, len(dirs)) is False:
            break
        ch = sweep_effect(G, d, seeds, attrs, meter=meter)
        table = {k: summarize(ch[k], samples.std(k)) for k in attrs}
        name, top = propose_name(table)
        rng = choose_layers(G, d, top, seeds[:8], meter) if top else d.layers
        out[d.name] = {"attributes": table, "proposed_name": name, "main_attribute": top,
                       "proposed_layers": list(rng), "layers": list(d.layers)}
        if with_locks and d.info.get("attribute"):
            others = [b for b in dset if b.info.get("attribute") and b.name != d.name]
            if others:
                ch = sweep_effect(G, d, seeds, attrs, meter=meter, locks=others)
                out[d.name]["attributes_locked"] = {k: summarize(ch[k], samples.std(k)) for k in attrs}
                out[d.name]["locked"] = [b.name for b in others]
    return out


def proposed_names(result: dict) -> dict[str, str]:
    """{direction: new name} from a describe result: its main attribute, numbered when several share one;
    directions whose effect is unclear keep their names."""
    out, used = {}, set(result)
    for name, r in result.items():
        top = r.get("main_attribute")
        if not top or name == top:
            continue
        new, k = top, 2
        while new in used and new != name:
            new, k = f"{top} {k}", k + 1
        used.discard(name)
        used.add(new)
        out[name] = new
    return out


# Measures a name is not taken from: where the face sits in its crop follows from head pose and face shape (a yaw
# also slides the face oval sideways), and single eyes and mouth width are parts of eyes_open and smile.
NOT_NAMES = ("face_size", "face_x", "face_y", "eye_open_left", "eye_open_right", "mouth_width")


def propose_name(table: dict, min_same_way: float = 0.75, min_std: float = 0.3) -> tuple[str, str | None]:
    """'mostly yaw, some smile' from a describe table; ('unclear', None) when nothing moves consistently."""
    strong = [(abs(v["median_std"]), k, v["median_std"]) for k, v in table.items()
              if k not in NOT_NAMES and np.isfinite(v["median_std"]) and v["same_way"] >= min_same_way
              and abs(v["median_std"]) >= min_std]
    if not strong:
        return "unclear", None
    strong.sort(reverse=True)
    top_size, top, top_signed = strong[0]
    arrow = "+" if top_signed > 0 else "−"
    others = [k for size, k, _ in strong[1:] if size >= 0.5 * top_size][:2]
    return (f"mostly {top} ({arrow})" + (f", some {' and '.join(others)}" if others else "")), top


def lock(d: Direction, boundaries) -> Direction:
    """`d` with the given boundary directions projected out (Gram-Schmidt), renormalised to d's length along what
    remains, so its own effect keeps roughly its scale while the locked attributes hold still to first order. A
    direction is never locked against its own attribute: that would remove what it is for."""
    basis: list[torch.Tensor] = []
    own = d.info.get("attribute", d.name)
    boundaries = [b for b in boundaries if b.name != d.name and b.info.get("attribute", b.name) != own]
    for b in boundaries:
        v = b.vector if b.vector.ndim == 1 else b.vector.mean(0)
        for u in basis:
            v = v - (v @ u) * u
        if v.norm() > 1e-6:
            basis.append(v / v.norm())
    if not basis:
        return d
    vec = d.vector.clone()
    if vec.ndim == 1:
        for u in basis:
            vec = vec - (vec @ u) * u
    else:
        for u in basis:
            vec = vec - (vec @ u)[:, None] * u[None]
    if vec.norm() < 1e-6:
        raise UserError(f"locking leaves nothing of '{d.name}': it is a mix of the locked attributes")
    vec = vec * (d.vector.norm() / vec.norm())
    return Direction(d.name, vec, d.layers, d.slider, d.method, {**d.info, "locked": [b.name for b in boundaries]})


def boundaries_for(dset: DirectionSet, names) -> list[Direction]:
    """The attribute boundaries in a set for locking: a direction whose info names the attribute, or that is named
    after it."""
    found = []
    for name in names:
        name = str(name).strip()
        if not name:
            continue
        match = next((d for d in dset if d.info.get("attribute") == name), None)
        if match is None and name in dset:
            match = dset[name]
        if match is None:
            raise UserError(f"no '{name}' boundary in this direction set to lock; fit one with: main.py directions "
                            f"--method attributes --attributes {name}")
        found.append(match)
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Reports


def report_markdown(result: dict, attrs=ATTRIBUTES) -> str:
    """A table: one row per direction, the median change per attribute (in across-face standard deviations; the
    share of faces moving the same way in brackets), the proposed name and layers."""
    head = "| direction | proposed name | layers → proposed | " + " | ".join(attrs) + " |"
    lines = [head, "|" + "---|" * (3 + len(attrs))]
    for name, r in result.items():
        cells = []
        for k in attrs:
            v = r["attributes"][k]
            cells.append("–" if not np.isfinite(v["median_std"]) else f"{v['median_std']:+.2f} ({v['same_way']:.0%})")
        lay = f"{r['layers'][0]}-{r['layers'][1]} → {r['proposed_layers'][0]}-{r['proposed_layers'][1]}"
        lines.append(f"| {name} | {r['proposed_name']} | {lay} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heatmap(result: dict, attrs=ATTRIBUTES, limit: float = 2.0) -> np.ndarray:
    """uint8 RGB picture of the describe table: red = the attribute grows with +α, blue = it shrinks (median change
    in standard deviations, saturating at ±limit); pale cells moved the same way on fewer than 75% of faces."""
    from PIL import Image, ImageDraw, ImageFont

    names = list(result)
    cw, ch, left, top = 74, 34, 380, 150
    img = Image.new("RGB", (left + cw * len(attrs) + 10, top + ch * len(names) + 40), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    for j, k in enumerate(attrs):
        x = left + j * cw + cw // 2
        label = Image.new("RGB", (top - 10, 16), (255, 255, 255))
        ImageDraw.Draw(label).text((0, 0), k, fill=(0, 0, 0), font=font)
        img.paste(label.rotate(60, expand=True, fillcolor=(255, 255, 255)), (x - 30, 4))
    for i, name in enumerate(names):
        r = result[name]
        y = top + i * ch
        draw.text((6, y + 3), name, fill=(0, 0, 0), font=font)
        draw.text((6, y + 18), r["proposed_name"][:58], fill=(90, 90, 90), font=small)
        for j, k in enumerate(attrs):
            v = r["attributes"][k]
            x = left + j * cw
            m, share = v["median_std"], v["same_way"]
            if not np.isfinite(m):
                colour = (230, 230, 230)
            else:
                t = float(np.clip(m / limit, -1, 1))
                strength = abs(t) * (1.0 if share >= 0.75 else 0.35)
                base = (214, 39, 40) if t > 0 else (31, 119, 180)
                colour = tuple(int(255 + (c - 255) * strength) for c in base)
            draw.rectangle([x + 1, y + 1, x + cw - 1, y + ch - 1], fill=colour)
            if np.isfinite(m):
                draw.text((x + 6, y + 3), f"{m:+.2f}", fill=(0, 0, 0), font=font)
                draw.text((x + 6, y + 18), f"{share:.0%}", fill=(60, 60, 60), font=small)
    # PIL's bundled font has no − or ⅔ glyph: plain ASCII here
    draw.text((6, top + ch * len(names) + 10), f"median change from -2/3 to +2/3 of each slider, in standard "
              f"deviations across faces (share of faces moving the same way); saturates at ±{limit:g}",
              fill=(60, 60, 60), font=small)
    return np.asarray(img)
