"""`main.py import SRC -o OUT.safetensors`: convert an NVIDIA .pkl or rosinality .pt into our single-file format."""

from __future__ import annotations

from pathlib import Path

from engine.io.checkpoints import build_generator, read_checkpoint, save_generator


def add_arguments(p):
    p.add_argument("src", help="NVIDIA snapshot .pkl, rosinality .pt, or a .safetensors model")
    p.add_argument("-o", "--out", required=True, help="output .safetensors file")


def run(args) -> int:
    src, out = Path(args.src), Path(args.out)
    cfg, state, _ = read_checkpoint(src)
    G = build_generator(cfg, state, src.name)
    save_generator(G, out)
    n = sum(p.numel() for p in G.parameters())
    print(
        f"{src.name} -> {out} ({cfg.arch}, {cfg.resolution}×{cfg.resolution}, {cfg.num_ws} ws, "
        f"{n / 1e6:.2f} M parameters, {out.stat().st_size / 1e6:.1f} MB)"
    )
    return 0
