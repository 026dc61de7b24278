"""`main.py bench --exported DIR`: CPU latency of an export's ONNX and TFLite files next to PyTorch (eager
channels_last, engine.runtime.prepare_for_cpu, and the folded batch-1 graph engine.runtime.fast_synthesis can pick)
running the same networks, with 1 and 2 threads each."""

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

# Each exported input's sample in reference.npz.
REFERENCE_INPUTS = {"ws": "ws", "z": "z", "face": "crops", "alphas": "alphas"}


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


def _source_encoder(m: dict, G):
    enc = m.get("encoder") or {}
    path = enc.get("path")
    if G is None or not path or not Path(path).is_file() or (enc.get("sha256") and sha256_file(path) != enc["sha256"]):
        return None
    from engine.models.encoder import load_encoder

    return load_encoder(path)


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


def _pytorch_rows(G, E, inputs: dict) -> list[tuple[dict, object]]:
    """(row, fn) for the networks run in PyTorch in this process."""
    from engine.runtime import folded_trace, prepare_for_cpu

    G = prepare_for_cpu(G)
    ws, z = torch.from_numpy(inputs["ws"]), torch.from_numpy(inputs["z"])
    version = f"pytorch {torch.__version__}"
    out = [
        ({"model": "synthesis", "runtime": f"{version} eager channels_last"},
         lambda: G.synthesis(ws, noise_mode="const")),
        ({"model": "mapping", "runtime": f"{version} eager"}, lambda: G.mapping(z)),
    ]
    if G.is_student:
        folded = folded_trace(G, ws)
        out.insert(1, ({"model": "synthesis", "runtime": f"{version} folded batch-1, traced"}, lambda: folded(ws)))
    if E is not None and "face" in inputs:
        face = torch.from_numpy(inputs["face"])
        E = E.eval()
        out.append(({"model": "encoder", "runtime": f"{version} eager channels_last"}, lambda: E(face)))
    return [({**row, "precision": "fp32", "file": None}, fn) for row, fn in out]


def bench_exported(folder, repeats: int = 20, out="bench.json", threads=(1, 2)) -> int:
    """Median latency (batch 1) of each exported ONNX/TFLite file and of PyTorch, on each thread count in `threads`;
    prints a table and writes JSON to `out`. Core ML packages are listed as not runnable here."""
    from engine.export.verify import onnx_runner, tflite_runner

    threads = [int(threads)] if isinstance(threads, int) else [int(t) for t in threads]
    folder = Path(folder)
    m = read_manifest(folder)
    ref_path = folder / "reference.npz"
    if not ref_path.is_file():
        raise UserError(f"{folder} has no reference.npz; export again")
    ref = read_npz(ref_path, "export reference file", names=list(REFERENCE_INPUTS.values()))
    want = {"ws": (m["num_ws"], m["w_dim"]), "z": (m["z_dim"],)}
    if any(k not in ref or ref[k].ndim != len(v) + 1 or ref[k].shape[1:] != v or not len(ref[k])
           for k, v in want.items()):
        raise UserError(f"{ref_path}: its arrays do not match the manifest's W+ layout; export again")
    inputs = {name: ref[key][:1].astype(np.float32) for name, key in REFERENCE_INPUTS.items() if key in ref}
    G, why = _source_generator(m)
    E = _source_encoder(m, G)
    if G is None:
        print(f"note: PyTorch baseline skipped: {why}")
    old_threads = torch.get_num_threads()
    rows: list[dict] = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            pairs = _pytorch_rows(G, E, inputs) if G is not None else []
            for e in m["models"]:
                if e["format"] == "coreml":
                    continue
                names = [i["name"] for i in e["inputs"]]
                if any(x not in inputs for x in names):
                    continue
                make = onnx_runner if e["format"] == "onnx" else tflite_runner
                run = make(folder / e["path"], names, e["outputs"][0]["name"], threads=n)
                xs = [inputs[x] for x in names]
                pairs.append(({"model": e["name"], "runtime": e["runtime"], "precision": e["precision"],
                               "file": e["path"]}, lambda run=run, xs=xs: run(*xs)))
            with torch.inference_mode():
                for (row, _), lat in zip(pairs, interleaved_latency([fn for _, fn in pairs], repeats)):
                    rows.append({**row, "threads": n, **lat})
    finally:
        torch.set_num_threads(old_threads)

    print(f"{m['source']['arch']} {m['resolution']}px, batch 1, median of {repeats} runs (round-robin per thread "
          "count)")
    print(f"  {'model':10s} {'runtime':44s} {'precision':9s} {'threads':>7s} {'median ms':>10s} {'min ms':>8s}"
          "  vs PyTorch eager")
    order = {"synthesis": 0, "encoder": 1, "stylizer": 2, "mapping": 3}
    for n in threads:
        base = {r["model"]: r["median_ms"] for r in rows
                if r["threads"] == n and r["file"] is None and "eager" in r["runtime"]}
        for r in sorted((r for r in rows if r["threads"] == n), key=lambda r: order.get(r["model"], 9)):
            rel = f"{base[r['model']] / r['median_ms']:.2f}×" if r["model"] in base else ""
            print(f"  {r['model']:10s} {r['runtime'][:44]:44s} {r['precision']:9s} {n:7d} {r['median_ms']:10.2f} "
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
