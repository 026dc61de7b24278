"""`main.py bench --exported DIR`: CPU latency of an export's ONNX and TFLite files next to PyTorch eager
(channels_last, engine.runtime.prepare_for_cpu) running the same student, all on the same threads."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.export.common import sha256_file
from engine.export.manifest import read_manifest
from engine.io.safety import read_npz


def _source_generator(m: dict):
    """The exported student, if its file is still where it was and unchanged; else (None, why)."""
    src = m.get("source") or {}
    path = src.get("path")
    if not path:
        return None, "the export records no source model file"
    if not Path(path).is_file():
        return None, f"the source model {path} is gone"
    if src.get("sha256") and sha256_file(path) != src["sha256"]:
        return None, f"the source model {path} has changed since the export"
    from engine.io.checkpoints import load_generator

    return load_generator(path), ""


def interleaved_latency(fns: list, repeats: int, warmup: int = 3) -> list[dict]:
    """Time several functions round-robin, so that background load on a shared machine hits them all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1000)
    return [{"median_ms": statistics.median(ts), "min_ms": min(ts), "repeats": repeats} for ts in times]


def bench_exported(folder, repeats: int = 20, out="bench.json", threads: int = 2) -> int:
    """Median latency (batch 1) of each exported ONNX/TFLite synthesis and mapping file and of PyTorch eager; prints
    a table and writes JSON to `out`. Core ML packages are listed as not runnable here."""
    from engine.export.verify import onnx_runner, tflite_runner
    from engine.runtime import prepare_for_cpu

    folder = Path(folder)
    m = read_manifest(folder)
    ref_path = folder / "reference.npz"
    if not ref_path.is_file():
        raise UserError(f"{folder} has no reference.npz; export again")
    ref = read_npz(ref_path, "export reference file", names=["ws", "z"])
    want = {"ws": (m["num_ws"], m["w_dim"]), "z": (m["z_dim"],)}
    if any(k not in ref or ref[k].ndim != len(v) + 1 or ref[k].shape[1:] != v or not len(ref[k])
           for k, v in want.items()):
        raise UserError(f"{ref_path}: its arrays do not match the manifest's W+ layout; export again")
    inputs = {"synthesis": ref["ws"][:1].astype(np.float32), "mapping": ref["z"][:1].astype(np.float32)}
    torch.set_num_threads(threads)
    rows: list[dict] = []
    fns: list = []

    G, why = _source_generator(m)
    if G is not None:
        G = prepare_for_cpu(G)
        ws, z = torch.from_numpy(inputs["synthesis"]), torch.from_numpy(inputs["mapping"])
        for name, fn in (("synthesis", lambda: G.synthesis(ws, noise_mode="const")), ("mapping", lambda: G.mapping(z))):
            rows.append({"model": name, "runtime": f"pytorch {torch.__version__} eager channels_last",
                         "precision": "fp32", "file": None})
            fns.append(fn)
    else:
        print(f"note: PyTorch baseline skipped: {why}")
    for e in m["models"]:
        if e["format"] == "coreml":
            continue
        make = onnx_runner if e["format"] == "onnx" else tflite_runner
        run = make(folder / e["path"], e["inputs"][0]["name"], e["outputs"][0]["name"], threads=threads)
        rows.append({"model": e["name"], "runtime": e["runtime"], "precision": e["precision"], "file": e["path"]})
        fns.append(lambda run=run, x=inputs[e["name"]]: run(x))
    with torch.inference_mode():
        for row, lat in zip(rows, interleaved_latency(fns, repeats)):
            row.update(lat)

    base = {r["model"]: r["median_ms"] for r in rows if r["file"] is None}
    print(f"{m['source']['arch']} {m['resolution']}px, batch 1, {threads} thread{'s' if threads != 1 else ''}, "
          f"median of {repeats} runs (round-robin)")
    print(f"  {'model':10s} {'runtime':44s} {'precision':9s} {'median ms':>10s} {'min ms':>8s}  vs PyTorch")
    for r in sorted(rows, key=lambda r: r["model"] != "synthesis"):
        rel = f"{base[r['model']] / r['median_ms']:.2f}×" if r["model"] in base else ""
        print(f"  {r['model']:10s} {r['runtime'][:44]:44s} {r['precision']:9s} {r['median_ms']:10.2f} "
              f"{r['min_ms']:8.2f}  {rel}")
    skipped = [e["path"] for e in m["models"] if e["format"] == "coreml"]
    if skipped:
        print(f"  (not run here: {', '.join(skipped)} — Core ML needs macOS/iOS)")
    result = {
        "folder": str(folder.resolve()),
        "source": m.get("source", {}).get("file"),
        "resolution": m["resolution"],
        "results": rows,
        "pytorch_skipped": why or None,
        "machine": {
            "threads": threads,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "note": "batch 1, runtimes timed round-robin in one process; inputs from reference.npz",
        },
    }
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
    return 0
