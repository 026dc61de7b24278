"""Export to Core ML, TFLite and ONNX: real conversions of a small student and encoder (synthesis, mapping, encoder
and the fused stylizer, at FP32, FP16 and 8 bits), run in onnxruntime and the LiteRT interpreter and compared with
PyTorch; the Core ML packages checked with coremltools' spec API and their compressed weights emulated in PyTorch.
Also the batch-1 fast path (engine.runtime.fast_synthesis) that the editor renders with.

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
MODELS = ("synthesis", "mapping", "encoder", "stylizer")
TFLITE = ("fp32", "fp16", "int8", "int8-full")


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
def encoder(tmp_path_factory, student):
    """A small encoder for the student (MobileNetV2 up to stride 8, a narrow head with random, non-zero outputs)."""
    from engine.models.encoder import Encoder, EncoderConfig, load_encoder, save_encoder, w_statistics

    _, G = student
    torch.manual_seed(1)
    E = Encoder(EncoderConfig.for_generator(G, stages=[3, 6], input_size=64, hidden=32))
    E.w_avg.copy_(G.w_avg)
    E.w_std.copy_(w_statistics(G, samples=512)[1])
    with torch.no_grad():
        for head in E.heads:
            head.out.weight.normal_(0, 0.02)  # an untrained head answers w_avg for every face
    path = save_encoder(E, tmp_path_factory.mktemp("encoder") / "encoder.safetensors")
    return path, load_encoder(path)


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
def exported(tmp_path_factory, student, directions, encoder):
    """Everything at once: the four networks, the 8-bit variants (Core ML int8, TFLite dynamic and full-integer)."""
    path, _ = student
    out = tmp_path_factory.mktemp("export") / "phone"
    manifest = export_model(path, out, directions=directions[0], encoder=encoder[0], fused=True, precision="int8",
                            progress=False, callback=lambda *a: PROGRESS.append(a))
    return out, manifest


PROGRESS = []  # the export's callback(done, total, text) calls, for the app's progress bar


def _entry(manifest, name, fmt, precision):
    return next(e for e in manifest["models"] if (e["name"], e["format"], e["precision"]) == (name, fmt, precision))


def test_export_reports_progress(exported):
    done = [d for d, _, _ in PROGRESS]
    totals = {t for _, t, _ in PROGRESS}
    # reference images, then the 4 networks for each of the 3 formats, then the manifest
    assert totals == {13} and done == list(range(14)), PROGRESS
    assert any("Core ML INT8" in text for *_, text in PROGRESS) and any("ONNX" in text for *_, text in PROGRESS)
    assert any("stylizer" in text for *_, text in PROGRESS) and any("encoder" in text for *_, text in PROGRESS)


def test_all_formats_exported_and_verified(exported, student):
    out, manifest = exported
    _, G = student
    assert manifest["verification"]["passed"]
    kinds = {(e["name"], e["format"], e["precision"]) for e in manifest["models"]}
    assert kinds == {
        (n, f, p) for n in MODELS for f, p in (("onnx", "fp32"), *(("tflite", q) for q in TFLITE), ("coreml", "int8"))
        if p != "int8-full" or n in ("synthesis", "mapping")
    }
    # No full-integer encoder (it loses the face), and the manifest says why.
    assert {(k["model"], k["precision"]) for k in manifest["skipped"]} == {("encoder", "int8-full"),
                                                                          ("stylizer", "int8-full")}
    assert all("dynamic-range" in k["why"] for k in manifest["skipped"])
    for e in manifest["models"]:
        r = e["verification"]
        assert r["passed"], (e["path"], r)
        if e["format"] != "coreml" and e["precision"] == "fp32":
            assert r["max_abs"] <= 1e-3
    # The files a phone needs, and the report for people.
    for n in ("Synthesis", "Mapping", "Encoder", "Stylizer"):
        assert (out / f"Blaze{n}.mlpackage" / "Manifest.json").is_file()
    report = (out / "verification.md").read_text()
    assert "PASSED" in report and "synthesis_fp16.tflite" in report and "BlazeMapping.mlpackage" in report
    assert "synthesis_int8_full.tflite" in report and "emulated" in report and "Not made: `encoder`" in report
    assert manifest["num_ws"] == G.num_ws and manifest["resolution"] == G.resolution == 64
    assert np.allclose(manifest["w_avg"], G.w_avg.numpy(), atol=1e-6)
    assert _entry(manifest, "synthesis", "onnx", "fp32")["opset"] >= 17


def _io_shapes(G, name, K=2):
    R = G.resolution
    face = [1, 3, R, R]
    return {"synthesis": ([[1, G.num_ws, G.w_dim]], [1, 3, R, R]), "mapping": ([[1, G.z_dim]], [1, G.w_dim]),
            "encoder": ([face], [1, G.num_ws, G.w_dim]), "stylizer": ([face, [1, K]], [1, 3, R, R])}[name]


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

    R = G.resolution
    for e in manifest["models"]:
        for f in e["files"]:
            assert manifest["files"][f["path"]]["sha256"] == f["sha256"]
        want_in, want_out = _io_shapes(G, e["name"])
        names_in = [i["name"] for i in e["inputs"]]
        path = out / e["path"]
        if e["format"] == "onnx":
            g = onnx.load(str(path)).graph
            shape = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*g.input, *g.output)]
            assert [v.name for v in (*g.input, *g.output)] == [*names_in, e["outputs"][0]["name"]]
            assert shape == [*want_in, want_out] == [*(i["shape"] for i in e["inputs"]), e["outputs"][0]["shape"]]
        elif e["format"] == "tflite":
            runner = Interpreter(model_path=str(path)).get_signature_runner(e["signature"])
            ins = runner.get_input_details()
            (oname, odet), = runner.get_output_details().items()
            assert sorted(ins) == sorted(names_in) and [list(ins[n]["shape"]) for n in names_in] == want_in
            assert all(ins[n]["dtype"] == np.float32 for n in names_in)  # full-integer files too: float at the edges
            assert (oname, list(odet["shape"])) == (e["outputs"][0]["name"], want_out)
        else:
            spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
            inputs, (outp,) = spec.description.input, spec.description.output
            assert [i.name for i in inputs] == names_in
            for inp, shape in zip(inputs, want_in):
                if inp.name == "face":  # a CVPixelBuffer on the phone, mapped to -1..1 by Core ML
                    assert (inp.type.imageType.width, inp.type.imageType.height) == (R, R)
                else:
                    assert list(inp.type.multiArrayType.shape) == shape
            if e["name"] in ("synthesis", "stylizer"):
                assert outp.type.WhichOneof("Type") == "imageType"
                assert (outp.name, outp.type.imageType.width, outp.type.imageType.height) == ("image", R, R)
            else:
                assert (outp.name, list(outp.type.multiArrayType.shape)) == (e["outputs"][0]["name"], want_out)
    syn = _entry(manifest, "synthesis", "onnx", "fp32")
    assert syn["outputs"][0]["shape"] == [1, 3, R, R] and syn["outputs"][0]["range"] == [-1, 1]
    ref = np.load(out / "reference.npz")
    assert ref["ws"].shape[1:] == (G.num_ws, G.w_dim) and ref["pixels"].shape[1:] == (R, R, 3)
    assert ref["crops"].shape[1:] == (3, R, R) and ref["alphas"].shape == (len(ref["crops"]), 2)
    assert np.allclose(ref["crops"], ref["crop_pixels"].transpose(0, 3, 1, 2) / 127.5 - 1, atol=1e-6)


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
    promises it does not keep (FP16 or palettised weights, a bigger image)."""
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

    e = _entry(manifest, "synthesis", "coreml", "int8")
    assert validate_coreml(out / e["path"], e["inputs"], e["outputs"], "int8")["passed"]
    for wrong in ("fp16", "fp32", "palette4"):
        assert not validate_coreml(out / e["path"], e["inputs"], e["outputs"], wrong)["passed"], wrong
    bigger = [{**e["outputs"][0], "width": 128}]
    assert not validate_coreml(out / e["path"], e["inputs"], bigger, "int8")["passed"]


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


def test_bad_options_give_clear_errors(tmp_path, student, nvidia_pkl, encoder, directions):
    from engine.models.encoder import Encoder, EncoderConfig, save_encoder

    path, G = student
    with pytest.raises(ExportError, match="unsupported precision 'int4'; choose fp16, fp32 or int8"):
        export_model(path, tmp_path / "a", precision="int4", progress=False)
    with pytest.raises(ExportError, match="unsupported --bits 5; choose 8"):
        export_model(path, tmp_path / "a", precision="int8", bits=5, progress=False)
    with pytest.raises(ExportError, match="--bits 4 .* needs --precision int8"):
        export_model(path, tmp_path / "a", precision="fp16", bits=4, progress=False)
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
    with pytest.raises(ExportError, match="--fused .* needs an encoder .*--encoder"):
        export_model(path, tmp_path / "e", directions=directions[0], fused=True, progress=False)
    with pytest.raises(ExportError, match="--fused .* needs directions .*--directions"):
        export_model(path, tmp_path / "e", encoder=encoder[0], fused=True, progress=False)
    other = Encoder(EncoderConfig.for_generator(Generator(G.cfg), stages=[3], input_size=64, hidden=8))
    with pytest.raises(engine.UserError, match="trained for another model"):
        export_model(path, tmp_path / "e", encoder=save_encoder(other, tmp_path / "other.safetensors"),
                     progress=False)
    r = run_main("export", "--model", path, "--out", tmp_path / "f", "--fused", "--format", "onnx")
    assert r.returncode == 1 and "--fused" in r.stderr and "Traceback" not in r.stderr
    assert not any((tmp_path / n).exists() for n in "abcdef")


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
    assert half["encoder_image_psnr_db"] >= 35 and half["stylizer_psnr_db"] >= 35
    report = (out / "verification.md").read_text()
    assert "Half-precision compute" in report and "encoder (pictures from its W+)" in report


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
    got = {(r["model"], r["runtime"].split()[0], r["precision"], r["threads"]) for r in rows}
    for threads in (1, 2):
        for model in MODELS:
            for runtime, precision in (("onnxruntime", "fp32"), ("ai-edge-litert", "fp16"), ("ai-edge-litert", "int8")):
                assert (model, runtime, precision, threads) in got
        assert ("synthesis", "ai-edge-litert", "int8-full", threads) in got
        for model in ("synthesis", "mapping", "encoder"):
            assert (model, "pytorch", "fp32", threads) in got
        assert any("folded" in r["runtime"] and r["threads"] == threads for r in rows)
    assert all(r["median_ms"] > 0 for r in rows)


def test_int8_files_are_smaller_and_within_their_bounds(exported, student):
    """A W+ the export never saw, through the 8-bit TFLite files: really quantised (smaller, further from PyTorch
    than FP32), yet within the bounds the export promises; the sizes are in the manifest."""
    from engine.export.verify import INT8_MIN_PSNR, psnr, tflite_runner

    out, manifest = exported
    _, G = student
    with torch.no_grad():
        ws = G.mapping(seeds_to_z([321], G.z_dim), psi=0.8)
        ref = G.synthesis(ws).numpy()
    fp32 = _entry(manifest, "synthesis", "tflite", "fp32")
    got32 = tflite_runner(out / fp32["path"], "ws", "image")(ws.numpy())
    for precision in ("int8", "int8-full"):
        e = _entry(manifest, "synthesis", "tflite", precision)
        got = tflite_runner(out / e["path"], "ws", "image")(ws.numpy())
        assert psnr(got, ref) >= INT8_MIN_PSNR[precision], precision
        assert np.abs(got - ref).max() > 10 * np.abs(got32 - ref).max(), precision
    for name in MODELS:
        sizes = manifest["sizes"][name]
        full = name in ("synthesis", "mapping")
        assert set(sizes) == {"onnx fp32", "coreml int8", *(f"tflite {p}" for p in TFLITE if full or p != "int8-full")}
        assert sizes["tflite int8"] <= 0.5 * sizes["tflite fp32"], (name, sizes)
        assert not full or sizes["tflite int8-full"] <= 0.5 * sizes["tflite fp32"], (name, sizes)
        assert sizes["tflite fp16"] < 0.7 * sizes["tflite fp32"]
        assert sizes["coreml int8"] == _entry(manifest, name, "coreml", "int8")["bytes"]
        r = _entry(manifest, name, "coreml", "int8")["verification"]
        assert r["weight_values"]["INT8"] > 0 and r["pictures_passed"] and "emulated" in r
    assert "QUANTIZE" in _entry(manifest, "synthesis", "tflite", "int8-full")["ops"]
    assert "File sizes (MB)" in (out / "verification.md").read_text()


def test_photo_pipeline_on_the_phone(exported, student, encoder, directions):
    """What a phone does with a photo: the aligned crop through encoder.onnx → W+; a slider edit from the manifest;
    synthesis.onnx. The fused stylizer (ONNX and TFLite) gives the same picture from the crop and the slider values,
    and both match PyTorch doing the same edit; moving the slider changes the picture as PyTorch's edit does."""
    from engine.edit import apply_edits
    from engine.export.verify import onnx_runner, psnr, tflite_runner
    from engine.io.directions import Direction

    out, manifest = exported
    _, G = student
    _, E = encoder
    ref = np.load(out / "reference.npz")
    crop = ref["crop_pixels"][-1:].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1  # a camera's uint8 crop
    sliders = manifest["pipeline"]["sliders"]
    assert [s["name"] for s in sliders] == ["smile", "age"] and sliders[0]["range"] == [-3.0, 3.0]
    alphas = np.array([[2.0, -1.0]], np.float32)

    ws = onnx_runner(out / "encoder.onnx", "face", "ws")(crop)
    for s, a in zip(manifest["directions"]["items"], alphas[0]):
        lo, hi = s["layers"]
        ws[:, lo : hi + 1] += a * np.array(s["vector"], np.float32)
    two_step = onnx_runner(out / "synthesis.onnx", "ws", "image")(ws)
    fused = onnx_runner(out / "stylizer.onnx", ["face", "alphas"], "image")(crop, alphas)
    fused_tfl = tflite_runner(out / "stylizer_fp32.tflite", ["face", "alphas"], "image")(crop, alphas)
    unedited = onnx_runner(out / "stylizer.onnx", ["face", "alphas"], "image")(crop, np.zeros_like(alphas))

    vectors = directions[1]
    dirs = [Direction("smile", torch.from_numpy(vectors[0]), (0, 3)),
            Direction("age", torch.from_numpy(vectors[1]), (4, G.num_ws - 1))]
    with torch.no_grad():
        base = E(torch.from_numpy(crop))
        want = G.synthesis(apply_edits(base, [(dirs[0], 2.0), (dirs[1], -1.0)])).numpy()
        want0 = G.synthesis(base).numpy()
    for got in (two_step, fused, fused_tfl):
        assert np.abs(got - want).max() < 1e-3
    assert np.abs(unedited - want0).max() < 1e-3
    assert psnr(fused, unedited) < 40  # the sliders really move the picture


def test_manifest_describes_the_chain(exported, student):
    """The phone side of the pipeline: normalisation, FFHQ's quad from eyes and mouth (which gives the crop the
    desktop aligns), the paste-back, the sliders; and which models it has."""
    from engine.faces.align import ffhq_quad
    from engine.faces.landmarks import EYE_IMAGE_LEFT, MOUTH_IMAGE_RIGHT

    _, manifest = exported
    _, G = student
    p = manifest["pipeline"]
    assert p["models"] == list(MODELS) and p["face_input"]["size"] == G.resolution
    assert "127.5" in p["face_input"]["normalisation"] and len(p["steps"]) >= 6
    assert str(list(EYE_IMAGE_LEFT)) in p["alignment"]["keypoints"]["eye_left"]
    assert str(MOUTH_IMAGE_RIGHT) in p["alignment"]["keypoints"]["mouth_right"]
    # The quad recipe as written, computed step by step, is engine.faces' quad.
    el, er, ml, mr = np.array([40.0, 50]), np.array([72.0, 46]), np.array([46.0, 90]), np.array([70.0, 88])
    rot90 = lambda v: np.array([-v[1], v[0]])  # noqa: E731 - as the manifest defines it
    eye_avg, eye_to_eye = (el + er) / 2, er - el
    eye_to_mouth = (ml + mr) / 2 - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth)
    x = x / np.hypot(*x) * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    y = np.array([-x[1], x[0]])
    c = eye_avg + 0.1 * eye_to_mouth
    assert "rot90((a, b)) = (-b, a)" in p["alignment"]["quad"][2]
    assert np.allclose(np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), ffhq_quad(el, er, ml, mr))
    assert "0.56" in p["paste_back"]["mask"] and [s["index"] for s in p["sliders"]] == [0, 1]
    assert manifest["encoder"]["file"] == "encoder.safetensors" and manifest["version"] >= 2


def test_coreml_fp16_and_palettised_packages(student, tmp_path):
    """The default FP16 package and a 4-bit palette: stored as promised, and the palette's pictures (emulated with
    the same k-means table) within its bound and below 8-bit linear's."""
    from engine.export.freeze import freeze
    from engine.export.manifest import synthesis_io
    from engine.export.to_coreml import emulate_compression, export_coreml, validate_coreml
    from engine.export.verify import INT8_MIN_PSNR, psnr
    from engine.export.wrappers import SynthesisPixels, SynthesisRaw

    _, G = student
    with torch.no_grad():
        ws = G.mapping(seeds_to_z([3, 4], G.z_dim), psi=0.7)
        ref = G.synthesis(ws).numpy()
    example = {"ws": ws[:1]}
    pixels = freeze(SynthesisPixels(G), example)
    inputs, outputs = synthesis_io(G, "coreml")
    sizes = {}
    for precision in ("fp16", "palette4"):
        path = tmp_path / f"{precision}.mlpackage"
        export_coreml(pixels, example, "image", path, precision, image_output=True)
        assert validate_coreml(path, inputs, outputs, precision)["passed"], precision
        sizes[precision] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    r = validate_coreml(tmp_path / "palette4.mlpackage", inputs, outputs, "palette4")
    assert r["weight_values"]["PALETTE4"] > 0 and not validate_coreml(tmp_path / "palette4.mlpackage", inputs,
                                                                      outputs, "palette6")["passed"]
    assert sizes["palette4"] < 0.6 * sizes["fp16"]  # small tensors (≤ 2048 values) and the spec stay as they are
    raw = freeze(SynthesisRaw(G), example)
    with torch.no_grad():
        got = {p: np.concatenate([emulate_compression(raw, p)(ws[i : i + 1]).numpy() for i in range(2)])
               for p in ("int8", "palette4")}
    p4 = min(psnr(got["palette4"][i], ref[i]) for i in range(2))
    assert INT8_MIN_PSNR["palette4"] <= p4 < min(psnr(got["int8"][i], ref[i]) for i in range(2))


def test_freeze_folds_weight_arithmetic(student):
    """The frozen graph computes the same pictures with no arithmetic left on the weights: every conv's weight is a
    stored constant (what XNNPACK and the int8 quantiser need)."""
    from engine.export.freeze import freeze
    from engine.export.wrappers import SynthesisRaw

    _, G = student
    with torch.no_grad():
        ws = G.mapping(seeds_to_z([9], G.z_dim), psi=0.7)
        frozen = freeze(SynthesisRaw(G), {"ws": ws})
        assert torch.allclose(frozen(ws), G.synthesis(ws), atol=1e-5)
    convs = [n for n in frozen.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert convs and all(n.args[1].op == "get_attr" for n in convs)
    assert not [n for n in frozen.graph.nodes if "amax" in str(n.target) and n.args[0].op == "get_attr"]


def _noisy(G):
    import copy

    G = copy.deepcopy(G)
    with torch.no_grad():
        for m in G.synthesis.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.3)  # zero in a fresh student: make the noise count
    return G


def test_folded_synthesis_matches_the_network(student, nvidia_pkl):
    from engine.export.folded import fold_synthesis

    _, G = student
    G = _noisy(G)
    folded = fold_synthesis(G.synthesis)
    with torch.no_grad():
        ws = G.mapping(seeds_to_z([1, 2], G.z_dim), psi=0.7)
        for i in range(2):
            want = G.synthesis(ws[i : i + 1])
            assert torch.allclose(folded(ws[i : i + 1]), want, atol=1e-5)
        with pytest.raises(ValueError, match="one sample"):
            folded(ws)
    assert sum(p.numel() for p in folded.parameters()) == sum(p.numel() for p in G.synthesis.parameters())
    with pytest.raises(ValueError, match="student"):
        fold_synthesis(engine.load_generator(nvidia_pkl).synthesis)


def test_fast_synthesis_picks_a_verified_runtime(student, exported, tmp_path):
    """Every runtime is built (ONNX converted into the cache, LiteRT's file taken from it), verified against
    G.synthesis and timed; the winner renders G's pictures."""
    import shutil

    from engine.runtime import cache_folder, fast_synthesis, model_key

    _, G = student
    out, _ = exported
    G = _noisy(G)
    # The export's frozen synthesis is what the cache holds: LiteRT's conversion is the slow one, so reuse it.
    folder = cache_folder(tmp_path) / model_key(G)
    fs = fast_synthesis(G, runtimes=("pytorch", "pytorch-folded", "onnxruntime"), cache_dir=tmp_path, repeats=2)
    assert (folder / "synthesis.onnx").is_file()
    assert all(fs.report["candidates"][n]["verified"] for n in ("pytorch", "pytorch-folded", "onnxruntime"))
    assert fs.runtime == fs.report["chosen"] and fs.runtime in fs.report["candidates"]
    G0 = engine.load_generator(G.source_path)
    shutil.copy(out / "synthesis_fp32.tflite", folder / "synthesis_fp32.tflite")  # another model's: must not pass
    fs2 = fast_synthesis(G, runtimes=("pytorch", "litert"), cache_dir=tmp_path, repeats=2)
    assert fs2.report["candidates"]["litert"]["verified"] is False and fs2.runtime == "pytorch"
    # The same file where it belongs, with G's own weights: it verifies, and LiteRT renders.
    own = cache_folder(tmp_path / "other") / model_key(G0)
    own.mkdir(parents=True)
    shutil.copy(out / "synthesis_fp32.tflite", own / "synthesis_fp32.tflite")
    fs3 = fast_synthesis(G0, runtimes=("litert",), cache_dir=tmp_path / "other", repeats=2)
    assert fs3.runtime == "litert" and fs3.report["candidates"]["litert"]["max_abs"] <= 1e-3
    with torch.inference_mode():
        ws = G.mapping(seeds_to_z([77], G.z_dim), psi=0.7)
        assert torch.allclose(fs(ws), G.synthesis(ws), atol=1e-3)
        two = G.mapping(seeds_to_z([1, 2], G.z_dim))
        assert torch.equal(fs(two), G.synthesis(two))  # batches go to the network itself


def test_fast_synthesis_falls_back_to_pytorch(student, tmp_path):
    """A runtime that gives other pictures, one that cannot be built, one that fails later, and weights changed after
    the choice: the editor then renders with G.synthesis, and says why."""
    from engine.runtime import fast_synthesis

    _, G = student
    G = _noisy(G)

    def broken(G_, example, folder):
        raise RuntimeError("no such runtime here")

    wrong = {"pytorch-folded": lambda G_, ex, f: (lambda ws: G_.synthesis(ws) + 0.01), "onnxruntime": broken}
    fs = fast_synthesis(G, runtimes=("pytorch", "pytorch-folded", "onnxruntime"), cache_dir=tmp_path, repeats=2,
                        builders=wrong)
    c = fs.report["candidates"]
    assert fs.runtime == "pytorch" and c["pytorch-folded"]["verified"] is False
    assert c["pytorch-folded"]["max_abs"] > 5e-3
    assert "no such runtime" in c["onnxruntime"]["error"]

    state = {"fail": False}

    def flaky(G_, example, folder):
        def run(ws):
            if state["fail"]:
                raise RuntimeError("device lost")
            return G_.synthesis(ws)
        return run

    fs = fast_synthesis(G, runtimes=("onnxruntime",), cache_dir=tmp_path, repeats=2, builders={"onnxruntime": flaky})
    assert fs.runtime == "onnxruntime"
    ws = G.mapping(seeds_to_z([5], G.z_dim))
    state["fail"] = True
    with torch.inference_mode():
        assert torch.equal(fs(ws), G.synthesis(ws))
    assert fs.runtime == "pytorch" and "device lost" in fs.report["failure"]

    fs = fast_synthesis(G, runtimes=("pytorch-folded",), cache_dir=tmp_path, repeats=2)
    assert fs.runtime == "pytorch-folded"
    with torch.no_grad():
        G.synthesis.head32.torgb.bias.add_(0.5)  # e.g. a tuning step in place
        assert torch.equal(fs(ws), G.synthesis(ws))
    assert fs.runtime == "pytorch" and "changed" in fs.report["failure"]


def test_renderer_renders_with_the_fast_path(student):
    from engine.edit import EditSession
    from engine.edit.renderer import Renderer
    from engine.render import to_uint8

    _, G = student
    with EditSession(G) as s:
        s.set_seed(3)
        f = s.render()
        assert s.renderer.runtimes["student"] in ("pytorch", "pytorch-folded")
        assert s.renderer._fast["student"].report["candidates"]["pytorch-folded"]["verified"]
        with torch.inference_mode():
            want = to_uint8(G.synthesis(s.ws()))[0]
        assert np.abs(f.main.astype(int) - want).max() <= 1
        s.renderer.set_fast("off")
        s.set_seed(4)
        f = s.render()
        assert s.renderer.runtimes == {"student": "pytorch"} and not s.renderer._fast
        with pytest.raises(engine.UserError, match="fast synthesis mode"):
            s.renderer.set_fast("gpu")
    assert Renderer({"student": G}, fast="off").runtimes == {"student": "pytorch"}


def test_renderer_converts_in_the_background(student, monkeypatch):
    """Mode "all" (the default for models of 128 px and up): the first frames come from PyTorch while the other
    runtimes are built on a background thread, then the renderer switches to the fastest that verifies. (The
    conversions are stood in for here; test_fast_synthesis_picks_a_verified_runtime does real ones.)"""
    import threading

    from engine import runtime as rt
    from engine.edit.renderer import Renderer

    _, G = student
    release = threading.Event()

    def slow_but_right(G_, example, folder):
        release.wait(30)
        return lambda ws: G_.synthesis(ws, noise_mode="const")

    def wrong(G_, example, folder):
        return lambda ws: G_.synthesis(ws, noise_mode="const") * 0

    real = rt._builders
    monkeypatch.setattr(rt, "EXPORTED_MIN_RESOLUTION", 0)
    monkeypatch.setattr(rt, "_builders", lambda threads: {**real(threads), "onnxruntime": slow_but_right,
                                                         "litert": wrong})
    r = Renderer({"student": G}, fast="all")
    ws = G.mapping(seeds_to_z([8], G.z_dim), psi=0.7)
    f = r.render(ws, 1)
    assert r.runtimes == {"student": "pytorch"} and r._fast["student"] is None  # still building
    release.set()
    assert r.wait_fast(timeout=60)
    fs = r._fast["student"]
    assert fs.report["candidates"]["litert"]["verified"] is False and fs.report["candidates"]["onnxruntime"]["verified"]
    assert r.runtimes["student"] in ("pytorch", "pytorch-folded", "onnxruntime")
    r._image_cache.clear()  # the same W+ again, through the chosen runtime this time
    f2 = r.render(ws, 2)
    assert r.render_counts["student"] == 2 and np.abs(f2.main.astype(int) - f.main.astype(int)).max() <= 1
    r.close()
