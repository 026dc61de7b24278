"""`main.py export`: the student's synthesis and mapping networks (and the encoder, and with --fused one stylizer
graph) for Core ML, TFLite/LiteRT and ONNX, verified in their runtimes, with manifest.json and verification.md beside
them."""

from __future__ import annotations

from pathlib import Path

from engine.cli.common import add_model_argument


def add_arguments(p):
    add_model_argument(p, "student model (.safetensors); default: the bundled student")
    p.add_argument("--format", default="coreml,tflite,onnx",
                   help="comma-separated formats: coreml, tflite, onnx (default: all three)")
    p.add_argument("--out", "-o", required=True, help="output folder (must be new or empty unless --force)")
    p.add_argument("--precision", default="fp16",
                   help="Core ML precision: fp16 (default), fp32 or int8 (8-bit weights). TFLite is always written "
                        "in FP32 and FP16, and with int8 also as dynamic-range and full-integer 8-bit files; ONNX in "
                        "FP32")
    p.add_argument("--bits", type=int, default=8, choices=(8, 6, 4),
                   help="with --precision int8: Core ML weight bits, 8 = linear quantisation (default), 6 or 4 = "
                        "palettised (a k-means table of 64 or 16 values per tensor)")
    p.add_argument("--directions", default=None,
                   help="a direction-set .npz to copy into manifest.json, so the app can offer its sliders "
                        "(default for the bundled student: the bundled set)")
    p.add_argument("--encoder", default=None,
                   help="an encoder (.safetensors) to export too, so the phone can take a face in (default for the "
                        "bundled student: the bundled encoder)")
    p.add_argument("--no-encoder", action="store_true", help="do not export an encoder")
    p.add_argument("--fused", action="store_true",
                   help="also one stylizer model: aligned face + slider values → edited face (encoder, directions "
                        "and synthesis in one file)")
    p.add_argument("--force", action="store_true", help="replace an export already in --out")
    p.add_argument("--allow-teacher", action="store_true",
                   help="export a StyleGAN2 teacher too (large and slow on phones; students are what ships)")


def run(args) -> int:
    import torch

    from engine.export.exporter import export_model, summary

    torch.set_grad_enabled(False)
    manifest = export_model(
        args.model,
        args.out,
        formats=args.format,
        precision=args.precision,
        directions=args.directions,
        force=args.force,
        allow_teacher=args.allow_teacher,
        encoder=False if args.no_encoder else args.encoder,
        fused=args.fused,
        bits=args.bits,
    )
    print(summary(manifest, Path(args.out)))
    print(f"verification: passed (details in {Path(args.out) / 'verification.md'})")
    return 0
