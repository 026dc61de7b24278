"""Which style-modulation layers consume which W+ entry, and names for W+ layer ranges.

The W+ layout is the teacher's (NVIDIA's): block 4 uses ws[0] (conv) and ws[1] (ToRGB); every later block at w_idx
uses ws[w_idx] and ws[w_idx+1] for its convs and ws[w_idx+2] for its ToRGB, so a ToRGB shares its entry with the
next block's first conv. The student consumes the same entries (see StudentSynthesis).
"""

from __future__ import annotations

from engine.errors import UserError


def modulated_affines(G, aux_heads: bool = False) -> list[tuple[str, object, int]]:
    """(module name, affine FullyConnected, W+ index it consumes) for every modulated layer of G's synthesis.

    For a student only the layers on the inference path are listed unless `aux_heads`: the intermediate UpToRGB
    heads exist for distillation and do not affect the output image."""
    syn = G.synthesis
    out: list[tuple[str, object, int]] = []
    if not G.is_student:
        w_idx = 0
        for r in syn.block_resolutions:
            block = getattr(syn, f"b{r}")
            convs = ["conv1"] if block.num_conv == 1 else ["conv0", "conv1"]
            for j, c in enumerate(convs):
                out.append((f"b{r}.{c}", getattr(block, c).affine, w_idx + j))
            out.append((f"b{r}.torgb", block.torgb.affine, w_idx + block.num_conv))
            w_idx += block.num_conv
        return out
    last = syn.levels[-1]
    for k, r in enumerate(syn.levels):
        if r == 4:
            out.append(("conv4b", syn.conv4b.affine, 0))
        else:
            out.append((f"conv{r}a", getattr(syn, f"conv{r}a").affine, 2 * k - 1))
            out.append((f"conv{r}b", getattr(syn, f"conv{r}b").affine, 2 * k))
        if aux_heads or r == last:
            head = getattr(syn, f"head{r}")
            out.append((f"head{r}", head.affine, 2 * k + 2))
            out.append((f"head{r}.torgb", head.torgb.affine, 2 * k + 3))
    return out


def layer_resolutions(num_ws: int) -> list[int]:
    """The feature resolution each W+ entry styles: the block whose conv(s) it drives (the last one only drives
    the final ToRGB)."""
    res = 2 ** ((num_ws + 2) // 2)
    return [min(4 * 2 ** ((i + 1) // 2), res) for i in range(num_ws)]


def layer_groups(num_ws: int) -> dict[str, tuple[int, int]]:
    """StyleGAN's usual coarse (4–8: pose, face shape), middle (16–32: features, hair) and fine (64+: colour,
    texture) W+ ranges for this layout."""
    res = layer_resolutions(num_ws)
    groups = {}
    for name, lo, hi in (("coarse", 4, 8), ("middle", 16, 32), ("fine", 64, 1 << 30)):
        idx = [i for i, r in enumerate(res) if lo <= r <= hi]
        if idx:
            groups[name] = (idx[0], idx[-1])
    groups["all"] = (0, num_ws - 1)
    return groups


def parse_layers(text: str | None, num_ws: int, default: tuple[int, int] | None = None) -> tuple[int, int]:
    """'4-7', '5', 'coarse' / 'middle' / 'fine' / 'all' → an inclusive W+ range, checked against num_ws."""
    if text is None or str(text).strip() == "":
        return default if default is not None else (0, num_ws - 1)
    text = str(text).strip()
    groups = layer_groups(num_ws)
    if text in groups:
        return groups[text]
    try:
        a, sep, b = text.partition("-")
        lo = int(a)
        hi = int(b) if sep else lo
    except ValueError:
        raise UserError(f"bad layer range {text!r}; use e.g. '4-7', '5' or one of {', '.join(groups)}") from None
    if not 0 <= lo <= hi < num_ws:
        raise UserError(f"layer range {text!r} is outside this model's W+ layers 0-{num_ws - 1}")
    return lo, hi
