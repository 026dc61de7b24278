"""Hostile files: model, encoder, latent, direction and export files whose headers or metadata lie about sizes.

Each crafted file must be refused with one clear line, before anything large is allocated. Peak memory is measured
in a child process (`resource.getrusage(RUSAGE_CHILDREN)` of a wrapper that runs only that child)."""

import json
import pickle
import struct
import subprocess
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

import engine
import engine.assets
from engine.errors import CheckpointError, UserError

# A refusing `main.py` process: Python, torch and the engine imported, one small model perhaps read. Far below what
# any of these files would make a trusting loader allocate (gigabytes to terabytes).
PEAK_LIMIT_MB = 1200

_WRAPPER = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "sys.stdout.write(f'{p.returncode}\\n{peak}\\n')\n"
    "sys.stderr.write(p.stderr)\n"
)


def run_measured(*args) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MB) of `python main.py ARGS` in its own process."""
    r = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, str(ROOT / "main.py"), *map(str, args)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    code, peak_kb = r.stdout.split()[:2]
    return int(code), r.stderr, int(peak_kb) / 1024


def assert_refused(code: int, stderr: str, peak_mb: float, *needles: str):
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert code == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert peak_mb < PEAK_LIMIT_MB, f"peak {peak_mb:.0f} MB"
    print(f"refused, peak {peak_mb:.0f} MB: {lines[0]}")  # the closing note's table (pytest -s)


def rewrite_header(src: Path, dst: Path, key: str, edit) -> None:
    """Copy a .safetensors file, changing only the JSON document under `key` in its metadata (tensors untouched)."""
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    doc = json.loads(header["__metadata__"][key])
    edit(doc)
    header["__metadata__"][key] = json.dumps(doc)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def lying_student(tmp_path: Path, name: str, edit) -> Path:
    dst = tmp_path / name
    rewrite_header(engine.assets.STUDENT, dst, "blazestudio", lambda d: edit(d["config"]))
    return dst


# ---------------------------------------------------------------------------------------------------------------------
# Generators


def test_inflated_widths_are_refused_without_allocating(tmp_path):
    evil = lying_student(tmp_path, "evil.safetensors",
                         lambda c: c.update(channels={k: 4_000_000 for k in c["channels"]}))
    out = tmp_path / "x.png"
    code, err, peak = run_measured("generate", "--model", evil, "--seeds", "0", "--out", out)
    assert_refused(code, err, peak, "evil.safetensors", "channels[4] = 4000000 is outside")
    assert not out.exists()


def test_huge_resolution_is_refused(tmp_path):
    evil = lying_student(tmp_path, "big.safetensors", lambda c: c.update(resolution=2**20))
    code, err, peak = run_measured("generate", "--model", evil, "--seeds", "0", "--out", tmp_path / "x.png")
    assert_refused(code, err, peak, "resolution = 1048576 is outside")


def test_plausible_but_wrong_config_names_the_tensor(tmp_path):
    """Within bounds, but not what the file stores: a wider level and a bigger resolution (which changes num_ws)."""
    wider = lying_student(tmp_path, "wider.safetensors", lambda c: c["channels"].update({"8": 2048}))
    code, err, peak = run_measured("generate", "--model", wider, "--seeds", "0", "--out", tmp_path / "x.png")
    assert_refused(code, err, peak, "do not fit", "synthesis.up8.pw_weight", "[2048, 256, 1, 1]")

    def bigger(c):
        c.update(resolution=128, channels={**c["channels"], "64": 64}, head_channels={**c["head_channels"], "64": 32})

    with pytest.raises(CheckpointError, match=r"missing 'synthesis\.up64"):
        engine.load_generator(lying_student(tmp_path, "bigger.safetensors", bigger))


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.update(w_dim="512"), "w_dim must be an integer"),
    (lambda c: c.update(mapping_layers=10**9), "mapping_layers = 1000000000 is outside"),
    (lambda c: c.update(channels=[1, 2]), "channels and head_channels must be objects"),
    (lambda c: c.update(extra_field=1), "unknown config fields"),
    (lambda c: c.update(arch="x" * 10**5), "unknown architecture"),
])
def test_malformed_configs_are_one_line_errors(tmp_path, edit, needle):
    with pytest.raises(CheckpointError, match=needle) as e:
        engine.load_generator(lying_student(tmp_path, "bad.safetensors", edit))
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


# NVIDIA pickles: the init kwargs and attributes come from the file too.

def _repickle_nvidia(src: Path, edit) -> bytes:
    """Re-pickle the fixture snapshot the way NVIDIA's code does (persistent objects, EasyDict kwargs), after `edit`
    changed the records' states."""
    from engine.io.checkpoints import EasyDict, PersistentRecord, _unpickle_nvidia

    data = _unpickle_nvidia(src)
    edit(data)
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class FakeEasyDict(dict):
        pass

    FakeEasyDict.__module__, FakeEasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = FakeEasyDict

    class Obj:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    def convert(x):
        if isinstance(x, PersistentRecord):
            return Obj({"type": "class", "version": 6, "module_src": "raise SystemExit", "class_name": x.class_name,
                        "state": convert(x.state)})
        if isinstance(x, EasyDict):
            return FakeEasyDict({k: convert(v) for k, v in x.items()})
        if isinstance(x, dict):
            return type(x)((k, convert(v)) for k, v in x.items())
        return x

    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util})
    try:
        return pickle.dumps(convert(data), protocol=4)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_repickled_fixture_still_loads(tmp_path, nvidia_pkl):
    """The crafting helper itself: without a lie, the re-pickled snapshot loads and matches the original."""
    p = tmp_path / "same.pkl"
    p.write_bytes(_repickle_nvidia(nvidia_pkl, lambda d: None))
    a, b = engine.load_generator(nvidia_pkl), engine.load_generator(p)
    z = torch.randn(2, a.z_dim)
    with torch.no_grad():
        assert torch.equal(a(z), b(z))


@pytest.mark.parametrize("attr, where, value, needle", [
    ("img_resolution", "synthesis", 2**20, "claims img_resolution 1048576 but its blocks end at 64"),
    ("z_dim", "mapping", 4_000_000, "claims z_dim 4000000 but its mapping weights have"),
    ("w_dim", "mapping", "lots", "claims w_dim 'lots'"),
])
def test_nvidia_attributes_that_lie_are_refused(tmp_path, nvidia_pkl, attr, where, value, needle):
    def edit(data):
        data["G_ema"].modules[where].state[attr] = value

    p = tmp_path / "lie.pkl"
    p.write_bytes(_repickle_nvidia(nvidia_pkl, edit))
    code, err, peak = run_measured("import", p, "-o", tmp_path / "x.safetensors")
    assert_refused(code, err, peak, needle)
    assert not (tmp_path / "x.safetensors").exists()


def test_nvidia_block_without_tensors_is_refused(tmp_path, nvidia_pkl):
    def edit(data):
        syn = data["G_ema"].modules["synthesis"]
        syn.state["_modules"]["b1048576"] = syn.modules["b64"].__class__({"state": {"_modules": {}}})

    p = tmp_path / "lie.pkl"
    p.write_bytes(_repickle_nvidia(nvidia_pkl, edit))
    with pytest.raises(CheckpointError, match=r"tensors missing.*b1048576"):
        engine.load_generator(p)


# ---------------------------------------------------------------------------------------------------------------------
# Encoders


def test_encoder_with_a_huge_hidden_width_is_refused(tmp_path):
    evil = tmp_path / "enc.safetensors"
    rewrite_header(engine.assets.ENCODER, evil, "blazestudio-encoder", lambda d: d["config"].update(hidden=10**7))
    code, err, peak = run_measured("invert", ROOT / "tests/fixtures/images/astronaut.png", "--encoder", evil,
                                   "--out", tmp_path / "me.npz")
    assert_refused(code, err, peak, "hidden = 10000000 is outside")


def test_encoder_whose_tensors_do_not_match_its_config(tmp_path):
    from engine.models.encoder import load_encoder

    evil = tmp_path / "enc.safetensors"
    rewrite_header(engine.assets.ENCODER, evil, "blazestudio-encoder", lambda d: d["config"].update(hidden=2048))
    with pytest.raises(CheckpointError, match=r"do not fit the encoder.*heads\.0\..*2048"):
        load_encoder(evil)


# ---------------------------------------------------------------------------------------------------------------------
# Direction sets and latents


def _write_npz(path: Path, compressed: bool = False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def test_direction_set_claiming_a_huge_w_dim(tmp_path):
    from engine.io.directions import load_directions

    src = dict(np.load(engine.assets.DIRECTIONS, allow_pickle=False))
    meta = json.loads(str(src["meta"]))
    meta["w_dim"] = 10**12
    evil = _write_npz(tmp_path / "dirs.npz", **{**src, "meta": np.array(json.dumps(meta))})
    with pytest.raises(UserError, match="w_dim = 1000000000000 is outside"):
        load_directions(evil)
    code, err, peak = run_measured("generate", "--seeds", "0", "--directions", evil, "--edit", "pose=1",
                                   "--out", tmp_path / "x.png")
    assert_refused(code, err, peak, "dirs.npz")


def test_compressed_npz_bomb_is_refused_from_its_header(tmp_path):
    """A few kB on disk that decompress to 4 GB of zeros: refused from the .npy header, before any inflating."""
    bomb = tmp_path / "bomb.npz"
    chunk = bytes(1 << 24)

    class RepeatedDeflate:
        """Deflating 4 GB of zeros takes zlib 13 s; after a full flush the deflate of a zero chunk is the same bytes
        every time, so it is made once. zipfile still counts the sizes and the CRC of all 4 GB: a valid archive."""

        def __init__(self):
            self.z = zlib.compressobj(9, zlib.DEFLATED, -15)
            fresh = zlib.compressobj(9, zlib.DEFLATED, -15)
            self.block = fresh.compress(chunk) + fresh.flush(zlib.Z_FULL_FLUSH)

        def compress(self, data):
            return self.block if data is chunk else self.z.compress(data) + self.z.flush(zlib.Z_FULL_FLUSH)

        def flush(self):
            return self.z.flush()

    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        header = {"descr": "<f4", "fortran_order": False, "shape": (1, 16, 2**26)}
        with z.open("ws.npy", "w", force_zip64=True) as f:
            f._compressor = RepeatedDeflate()  # Python 3.11's zipfile: the entry's compressor object
            np.lib.format.write_array_header_1_0(f, header)
            for _ in range(256):
                f.write(chunk)
    with zipfile.ZipFile(bomb) as z, z.open("ws.npy") as f:  # a true archive, its blocks inflating to zeros
        np.lib.format.read_magic(f)
        assert np.lib.format.read_array_header_1_0(f)[0] == (1, 16, 2**26)
        assert z.getinfo("ws.npy").file_size == f.tell() + 2**32
        assert not any(f.read(3 << 24))
    assert bomb.stat().st_size < 10 << 20
    code, err, peak = run_measured("generate", "--latent", bomb, "--out", tmp_path / "x.png")
    assert_refused(code, err, peak, "bomb.npz", "claims shape [1, 16, 67108864]")


@pytest.mark.parametrize("kind, needle", [
    ("4-d", "a latent is [N, num_ws, w_dim]"),
    ("extra layer", "the model needs [{num_ws}, {w_dim}]"),
    ("strings", "a latent is [N, num_ws, w_dim]"),
    ("nan", "NaN or infinite"),
])
def test_latents_of_the_wrong_shape_or_kind(tmp_path, kind, needle):
    G = engine.load_generator()
    ws = {"4-d": np.zeros((2, 3, 4, 5), np.float32),
          "extra layer": np.zeros((1, G.num_ws + 1, G.w_dim), np.float32),
          "strings": np.array(["a", "b"]),
          "nan": np.full((1, G.num_ws, G.w_dim), np.nan, np.float32)}[kind]
    bad = _write_npz(tmp_path / "me.npz", ws=ws)
    code, err, peak = run_measured("generate", "--latent", bad, "--out", tmp_path / "x.png")
    assert_refused(code, err, peak, "me.npz", needle.format(num_ws=G.num_ws, w_dim=G.w_dim))


# ---------------------------------------------------------------------------------------------------------------------
# Export manifests


def test_manifest_that_lies_is_refused(tmp_path):
    from engine.export.manifest import read_manifest

    good = {"format": "blazestudio-export", "resolution": 64, "num_ws": 10, "w_dim": 512, "z_dim": 100,
            "models": [{"name": "synthesis", "format": "onnx", "precision": "fp32", "path": "synthesis.onnx",
                        "inputs": [{"name": "ws"}], "outputs": [{"name": "image"}]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(good))
    assert read_manifest(tmp_path)["w_dim"] == 512
    for change, needle in (({"w_dim": 10**9}, "w_dim = 1000000000 is outside"),
                           ({"models": [{**good["models"][0], "path": "../../etc/passwd"}]}, "outside the export"),
                           ({"models": "all"}, "'models' is not a list"),
                           ({"num_ws": None}, "num_ws must be an integer")):
        (tmp_path / "manifest.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(UserError, match=needle):
            read_manifest(tmp_path)
    code, err, peak = run_measured("bench", "--exported", tmp_path)
    assert_refused(code, err, peak, "manifest.json")


def test_bounds_do_not_refuse_real_models(nvidia_pkl, rosinality_pt):
    """The bounds sit above every real configuration: FFHQ 1024 teacher and student configs validate."""
    from engine.models.config import ModelConfig

    for res in (256, 1024):
        cfg = ModelConfig(resolution=res)
        cfg.student()
        ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert engine.load_generator(nvidia_pkl).resolution == engine.load_generator(rosinality_pt).resolution == 64


def test_every_entry_point_reports_errors_the_same_way(capsys):
    """main.py, the recipe and the training tools share report_errors: one line, exit 1; Ctrl-C one line, 130."""
    from engine.errors import report_errors

    def bad(_):
        raise CheckpointError("x.pkl: not a StyleGAN checkpoint")

    def interrupted(_):
        raise KeyboardInterrupt

    assert report_errors(bad, None) == 1
    assert capsys.readouterr().err == "error: x.pkl: not a StyleGAN checkpoint\n"
    assert report_errors(interrupted, None, interrupted="interrupted; run it again") == 130
    assert capsys.readouterr().err == "interrupted; run it again\n"
    assert report_errors(lambda a: a, 3) == 3
    with pytest.raises(ValueError):  # a bug is not bad input: it keeps its traceback
        report_errors(lambda _: int("x"), None)
