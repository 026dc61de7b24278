"""`main.py bench`: parameters, FLOPs and CPU latency of the teacher and student networks (random weights), or of
exported files with `--exported DIR`."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def add_arguments(p):
    p.add_argument("--out", default="bench.json", help="where to write the results as JSON (default bench.json)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per network (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--only", default=None, help="comma-separated subset, e.g. 'teacher-256,student-256'")
    p.add_argument("--exported", default=None,
                   help="benchmark an export folder instead: its ONNX/TFLite files vs PyTorch, with 1 and 2 threads "
                        "(--threads for one count)")
    p.add_argument("--app", action="store_true", help="also measure the editor's slider-to-frame and webcam paths")
    p.add_argument("--half", nargs="+", default=None, metavar="MODEL",
                   help="instead: PSNR of each model computed in float16 (as phone GPUs do) against float32")
    p.add_argument("--seeds", type=int, default=32, help="with --half: seeds 0..N-1 (default 32)")
    p.add_argument("--edits", nargs="*", default=None, metavar="PHOTO",
                   help="instead: how photo edits keep the person (transfer vs regenerate) on these photos "
                        "(default: assets/examples), every bundled direction at 80%% of its range; writes the JSON "
                        "and a picture grid")


def run(args) -> int:
    from engine.bench import bench_synthesis, standard_configs
    from engine.models.generator import Generator

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.half:
        return _bench_half(args)
    if args.edits is not None:
        return _bench_edits(args)
    if args.exported:
        from engine.export.bench import bench_exported

        return bench_exported(Path(args.exported), repeats=args.repeats, out=args.out,
                              threads=args.threads or (1, 2))
    configs = standard_configs()
    names = args.only.split(",") if args.only else list(configs)
    results = {}
    torch.manual_seed(0)
    for name in names:
        G = Generator(configs[name])
        r = bench_synthesis(G, repeats=args.repeats if "1024" not in name else max(3, args.repeats // 4))
        results[name] = r
        print(
            f"{name:13s} params {r['synthesis_params'] / 1e6:6.2f} M (inference {r['inference_params'] / 1e6:5.2f} M)"
            f"  {r['flops'] / 1e9:7.2f} GFLOPs ({r['macs'] / 1e9:6.2f} GMAC)  {r['median_ms']:8.1f} ms",
            flush=True,
        )
        del G
    if "teacher-256" in results and "student-256" in results:
        ratio = results["teacher-256"]["median_ms"] / results["student-256"]["median_ms"]
        results["speedup_256"] = ratio
        print(f"student/teacher speed ratio at 256: {ratio:.1f}×")
    if args.app:
        from engine.bench_app import bench_app_paths

        results["app"] = bench_app_paths()
    results["machine"] = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "note": "batch 1, float32, channels_last, median of repeated runs in one process",
    }
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


def _bench_half(args) -> int:
    import numpy as np

    from engine.export.verify import HALF_MIN_PSNR, half_precision_psnrs
    from engine.io.checkpoints import load_generator

    results = {}
    for path in args.half:
        G = load_generator(None if path == "bundled" else path)
        ps = half_precision_psnrs(G, list(range(args.seeds)))
        results[path] = {"mean_db": float(np.mean(ps)), "worst_db": float(np.min(ps)), "seeds": args.seeds}
        verdict = "ok" if min(ps) >= HALF_MIN_PSNR else "BELOW"
        print(f"{path}: float16 vs float32 over {args.seeds} seeds: mean {np.mean(ps):.1f} dB, "
              f"worst {np.min(ps):.1f} dB ({verdict}: the export's bound is {HALF_MIN_PSNR:g} dB)")
    Path(args.out).write_text(json.dumps({"half_precision": results}, indent=1))
    return 0


def _bench_edits(args) -> int:
    from engine.assets import DIRECTIONS
    from engine.bench_edits import bench_edits, format_table
    from engine.invert import Inverter, pick_encoder
    from engine.io.checkpoints import load_generator
    from engine.io.directions import load_directions

    G = load_generator()
    E, _ = pick_encoder(G)
    result = bench_edits(G, Inverter(G, E), load_directions(DIRECTIONS, G), args.edits or None, args.out)
    print(format_table(result["summary"]))
    print(f"wrote {args.out} and {Path(args.out).with_name(Path(args.out).stem + '_grid.png')}")
    return 0
