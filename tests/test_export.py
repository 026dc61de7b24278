"""Export to Core ML, TFLite and ONNX: real conversions of a small student, run in onnxruntime and the LiteRT
interpreter and compared with PyTorch; the Core ML packages checked with coremltools' spec API.

The export runs once per module (the conversions take most of this file's time)."""

import json

import numpy as np
import pytest
import torch
from conftest import run_main

import engine
from engine.export.common import ExportError, sha256_file
from engine.export.exporter import export_model
from engine.models.generator import Generator, seeds_to_z

SMALL_CHANNELS = {4: 32, 8: 32, 16: 16, 32: 16}


@pytest.fixture(scope="module")
def student(tmp_path_factory, nvidia_pkl):
    """A small student of the fixture teacher (its mapping network copied, random synthesis weights), on disk."""
    T = engine.load_generator(nvidia_pkl)
    torch.manual_seed(0)
    S = Generator(T.cfg.student(channels=SMALL_CHANNELS))
    S.mapping.load_state_dict(T.mapping.state_dict())
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    engine.save_generator(S, path)
    return path, engine.load_generator(path)


@pytest.fixture(scope="module")
def directions(tmp_path_factory, student):
    """A direction set in the plain layout (names, vectors, layers): one W direction, one per-layer."""
    _, G = student
    rng = np.random.RandomState(0)
    path = tmp_path_factory.mktemp("dirs") / "dirs.npz"
    vectors = rng.randn(2, G.w_dim).astype(np.float32)
    np.savez(path, names=np.array(["smile", "age"]), vectors=vectors, layers=np.array([[0, 3], [4, G.num_ws - 1]]))
    return path, vectors


@pytest.fixture(scope="module")
def exported(tmp_path_factory, student, directions):
    path, _ = student
    out = tmp_path_factory.mktemp("export") / "phone"
    manifest = export_model(path, out, directions=directions[0], progress=False,
                            callback=lambda *a: PROGRESS.append(a))
    return out, manifest


PROGRESS = []  # the export's callback(done, total, text) calls, for the app's progress bar


def _entry(manifest, name, fmt, precision):
    return next(e for e in manifest["models"] if (e["name"], e["format"], e["precision"]) == (name, fmt, precision))


def test_export_reports_progress(exported):
    done = [d for d, _, _ in PROGRESS]
    totals = {t for _, t, _ in PROGRESS}
    # reference images, then synthesis + mapping for each of the 3 formats, then the manifest
    assert totals == {7} and done == list(range(8)), PROGRESS
    assert any("Core ML" in text for *_, text in PROGRESS) and any("ONNX" in text for *_, text in PROGRESS)


def test_all_formats_exported_and_verified(exported, student):
    out, manifest = exported
    _, G = student
    assert manifest["verification"]["passed"]
    kinds = {(e["name"], e["format"], e["precision"]) for e in manifest["models"]}
    assert kinds == {
        (n, f, p)
        for n in ("synthesis", "mapping")
        for f, p in (("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16"), ("coreml", "fp16"))
    }
    for e in manifest["models"]:
        r = e["verification"]
        assert r["passed"], (e["path"], r)
        if e["format"] != "coreml" and e["precision"] == "fp32":
            assert r["max_abs"] <= 1e-3
    # The files a phone needs, and the report for people.
    assert (out / "BlazeSynthesis.mlpackage" / "Manifest.json").is_file()
    report = (out / "verification.md").read_text()
    assert "PASSED" in report and "synthesis_fp16.tflite" in report and "BlazeMapping.mlpackage" in report
    assert manifest["num_ws"] == G.num_ws and manifest["resolution"] == G.resolution == 64
    assert np.allclose(manifest["w_avg"], G.w_avg.numpy(), atol=1e-6)
    assert _entry(manifest, "synthesis", "onnx", "fp32")["opset"] >= 17


def test_manifest_matches_files(exported, student):
    import coremltools as ct
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    out, manifest = exported
    _, G = student
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        assert sha256_file(out / rel) == info["sha256"], rel
        assert (out / rel).stat().st_size == info["bytes"]
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))

    R, syn_in, map_in = G.resolution, [1, G.num_ws, G.w_dim], [1, G.z_dim]
    for e in manifest["models"]:
        for f in e["files"]:
            assert manifest["files"][f["path"]]["sha256"] == f["sha256"]
        want_in = syn_in if e["name"] == "synthesis" else map_in
        assert [i["shape"] for i in e["inputs"]] == [want_in]
        path = out / e["path"]
        if e["format"] == "onnx":
            g = onnx.load(str(path)).graph
            shape = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*g.input, *g.output)]
            assert [v.name for v in (*g.input, *g.output)] == [e["inputs"][0]["name"], e["outputs"][0]["name"]]
            assert shape == [e["inputs"][0]["shape"], e["outputs"][0]["shape"]]
        elif e["format"] == "tflite":
            runner = Interpreter(model_path=str(path)).get_signature_runner(e["signature"])
            (iname, idet), = runner.get_input_details().items()
            (oname, odet), = runner.get_output_details().items()
            assert (iname, list(idet["shape"])) == (e["inputs"][0]["name"], e["inputs"][0]["shape"])
            assert (oname, list(odet["shape"])) == (e["outputs"][0]["name"], e["outputs"][0]["shape"])
        else:
            spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
            (inp,), (outp,) = spec.description.input, spec.description.output
            assert (inp.name, list(inp.type.multiArrayType.shape)) == (e["inputs"][0]["name"], want_in)
            if e["name"] == "synthesis":
                assert outp.type.WhichOneof("Type") == "imageType"
                assert (outp.name, outp.type.imageType.width, outp.type.imageType.height) == ("image", R, R)
            else:
                assert (outp.name, list(outp.type.multiArrayType.shape)) == ("w", [1, G.w_dim])
    syn = _entry(manifest, "synthesis", "onnx", "fp32")
    assert syn["outputs"][0]["shape"] == [1, 3, R, R] and syn["outputs"][0]["range"] == [-1, 1]
    ref = np.load(out / "reference.npz")
    assert ref["ws"].shape[1:] == tuple(syn_in[1:]) and ref["pixels"].shape[1:] == (R, R, 3)


def test_fp16_tflite_within_psnr_bound(exported, student):
    """A W+ the export never saw, through the FP16 file: close to PyTorch (PSNR ≥ 40 dB), yet really FP16."""
    from engine.export.verify import psnr, tflite_runner

    out, manifest = exported
    _, G = student
    fp16, fp32 = (_entry(manifest, "synthesis", "tflite", p) for p in ("fp16", "fp32"))
    assert "DEQUANTIZE" in fp16["ops"] and fp16["bytes"] < 0.7 * fp32["bytes"]
    with torch.no_grad():
        ws = G.mapping(seeds_to_z([123], G.z_dim), psi=0.8)
        ref = G.synthesis(ws).numpy()
    got16 = tflite_runner(out / fp16["path"], "ws", "image")(ws.numpy())
    got32 = tflite_runner(out / fp32["path"], "ws", "image")(ws.numpy())
    assert psnr(got16, ref) >= 40
    assert np.abs(got32 - ref).max() <= 1e-3
    assert np.abs(got16 - ref).max() > np.abs(got32 - ref).max()


def test_phone_pipeline_without_pytorch(exported, student, directions):
    """What an app does: z → mapping.onnx → w; W+ from the manifest's w_avg (truncation) and a direction (slider);
    → synthesis.onnx. Same picture as PyTorch doing the same edit."""
    from engine.export.verify import onnx_runner

    out, manifest = exported
    _, G = student
    z = seeds_to_z([5], G.z_dim).numpy()
    w = onnx_runner(out / "mapping.onnx", "z", "w")(z)
    psi, alpha = 0.6, 1.5
    w_avg = np.array(manifest["w_avg"], np.float32)
    ws = np.repeat(w[:, None], manifest["num_ws"], axis=1)
    ws = w_avg + psi * (ws - w_avg)
    d = manifest["directions"]["items"][0]
    a, b = d["layers"]
    ws[:, a : b + 1] += alpha * np.array(d["vector"], np.float32)
    img = onnx_runner(out / "synthesis.onnx", "ws", "image")(ws.astype(np.float32))

    vectors = directions[1]
    assert d["name"] == "smile" and np.allclose(d["vector"], vectors[0], atol=1e-6)
    with torch.no_grad():
        ref_ws = G.mapping(torch.from_numpy(z), psi=psi)
        ref_ws[:, a : b + 1] += alpha * torch.from_numpy(vectors[0])
        ref = G.synthesis(ref_ws).numpy()
    assert np.abs(img - ref).max() < 1e-3


def test_verification_detects_a_wrong_model(exported, student):
    """The checks can fail: the exported ONNX against another network's outputs, and a Core ML package held to
    a promise it does not keep (FP32 weights)."""
    from engine.export.to_coreml import validate_coreml
    from engine.export.verify import onnx_runner, verify_synthesis

    out, manifest = exported
    _, G = student
    ref = np.load(out / "reference.npz")
    G2 = engine.load_generator(G.source_path)
    with torch.no_grad():
        G2.synthesis.head32.torgb.bias.add_(0.01)  # a shift of the output image (weights alone are demodulated)
        other = G2.synthesis(torch.from_numpy(ref["ws"])).numpy()
    run = onnx_runner(out / "synthesis.onnx", "ws", "image")
    assert verify_synthesis(run, ref["ws"], ref["image"], "fp32")["passed"]
    bad = verify_synthesis(run, ref["ws"], other, "fp32")
    assert not bad["passed"] and bad["max_abs"] > 1e-3

    e = _entry(manifest, "synthesis", "coreml", "fp16")
    assert validate_coreml(out / e["path"], e["inputs"], e["outputs"], "fp16")["passed"]
    wrong = validate_coreml(out / e["path"], e["inputs"], e["outputs"], "fp32")
    assert not wrong["passed"]
    bigger = [{**e["outputs"][0], "width": 128}]
    assert not validate_coreml(out / e["path"], e["inputs"], bigger, "fp16")["passed"]


def test_directions_from_a_direction_set_file(tmp_path, student, nvidia_pkl):
    """engine.io.directions files (per-layer vectors, slider ranges) come through as plain arrays; a set made for
    another W space is refused."""
    dirs = pytest.importorskip("engine.io.directions")
    from engine.export.manifest import read_directions

    _, G = student
    per_layer = torch.randn(G.num_ws, G.w_dim)
    dset = dirs.DirectionSet.for_model(G, [dirs.Direction("pose", per_layer, (2, 5), (-2.0, 4.0), "sefa")])
    path = dset.save(tmp_path / "set.npz")
    doc = read_directions(path, G)
    (item,) = doc["items"]
    assert (item["name"], item["layers"], item["slider"], item["per_layer"]) == ("pose", [2, 5], [-2.0, 4.0], True)
    assert np.allclose(item["vector"], per_layer.numpy(), atol=1e-6)
    other = Generator(G.cfg)  # same shapes, another mapping network: another W space
    with pytest.raises(engine.UserError):
        read_directions(path, other)


def test_refuses_to_overwrite(exported, student):
    out, manifest = exported
    path, _ = student
    before = sha256_file(out / "manifest.json")
    with pytest.raises(ExportError, match="not empty.*--force"):
        export_model(path, out, formats="onnx", progress=False)
    r = run_main("export", "--model", path, "--format", "onnx", "--out", out)
    assert r.returncode == 1 and "not empty" in r.stderr and "--force" in r.stderr and "Traceback" not in r.stderr
    assert sha256_file(out / "manifest.json") == before


def test_bad_options_give_clear_errors(tmp_path, student, nvidia_pkl):
    path, _ = student
    with pytest.raises(ExportError, match="unsupported precision 'int8'; choose fp16 or fp32"):
        export_model(path, tmp_path / "a", precision="int8", progress=False)
    with pytest.raises(ExportError, match="unknown export format 'caffe'"):
        export_model(path, tmp_path / "b", formats="onnx,caffe", progress=False)
    with pytest.raises(ExportError, match="teacher.*Distil.*--allow-teacher"):
        export_model(nvidia_pkl, tmp_path / "c", progress=False)
    with pytest.raises(ExportError, match="teacher cannot be exported to coreml, tflite.*--format onnx"):
        export_model(nvidia_pkl, tmp_path / "c", allow_teacher=True, progress=False)
    bad_dirs = tmp_path / "dirs.npz"
    np.savez(bad_dirs, names=np.array(["x"]), vectors=np.zeros((1, 7), np.float32))
    with pytest.raises(engine.UserError, match="'vectors' has shape"):
        export_model(path, tmp_path / "d", directions=bad_dirs, progress=False)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_force_replaces_only_the_export_and_failures_are_reported(tmp_path, student, monkeypatch):
    """--force swaps in the new export and keeps the user's other files; a file beyond tolerance stops the export
    with a clear error, and the export stays for inspection with the failure in manifest.json and verification.md.
    (The tolerance is set to zero here so that the real ONNX files, off by ~1e-6, count as failures.)"""
    from engine.export import verify
    from engine.export.common import VerificationError

    path, _ = student
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "synthesis_fp32.tflite").write_bytes(b"stale")
    monkeypatch.setattr(verify, "FP32_MAX_ABS", 0.0)
    with pytest.raises(VerificationError, match="verification failed for synthesis.onnx.*verification.md"):
        export_model(path, out, formats="onnx", force=True, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["verification"]["passed"]
    assert {e["path"] for e in manifest["models"]} == {"synthesis.onnx", "mapping.onnx"}
    assert "FAILED" in (out / "verification.md").read_text()
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "synthesis_fp32.tflite").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the staging folder is gone


def test_half_precision_compute_is_verified(exported):
    out, manifest = exported
    half = manifest["verification"]["half_precision"]
    assert half["passed"] and half["synthesis_psnr_db"] >= 35 and half["mapping_image_psnr_db"] >= 35
    assert "Half-precision compute" in (out / "verification.md").read_text()


def test_export_fails_when_half_precision_washes_out(tmp_path, student, monkeypatch):
    """With the layers' scaling switched off (the formulation phones choked on) and weights grown as training grows
    them, half precision overflows: the export must say so instead of shipping washed-out models."""
    from engine.export.common import VerificationError
    from engine.nn import layers

    _, G = student
    G = __import__("copy").deepcopy(G)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, (layers.DepthwiseModulatedConv, layers.UpToRGB)):
                m.pw_weight.mul_(12.0)
                m.dw_weight.mul_(4.0)
                m.affine.bias.fill_(3.0)
    monkeypatch.setattr(layers, "unit_max", lambda x, dim=None, floor=0.0: x)
    with pytest.raises(VerificationError, match="half-precision compute"):
        export_model(G, tmp_path / "out", formats="onnx", progress=False)
    half = json.loads((tmp_path / "out" / "manifest.json").read_text())["verification"]["half_precision"]
    assert not half["passed"] and half["synthesis_psnr_db"] < 35


def test_bench_exported(exported, tmp_path):
    from engine.export.bench import bench_exported

    out, _ = exported
    report = tmp_path / "bench.json"
    assert bench_exported(out, repeats=2, out=report) == 0
    rows = json.loads(report.read_text())["results"]
    got = {(r["model"], r["runtime"].split()[0], r["precision"]) for r in rows}
    for model in ("synthesis", "mapping"):
        assert {(model, "pytorch", "fp32"), (model, "onnxruntime", "fp32"), (model, "ai-edge-litert", "fp16")} <= got
    assert all(r["median_ms"] > 0 for r in rows)
