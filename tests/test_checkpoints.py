"""Engine core: teacher parity with the reference implementations, safe loading, native round trip."""

import os
import pickle
import sys
import tempfile
import types

import pytest
import torch
from conftest import run_main
from safetensors.torch import load_file, save_file

import engine
from engine.errors import CheckpointError
from engine.models.config import ModelConfig
from engine.models.generator import Generator

IMG_TOL, WS_TOL = 1e-3, 1e-5


def _max_err(a, b):
    return (a - b).abs().max().item()


def check_nvidia(G, E):
    z = E["z"]
    with torch.no_grad():
        assert _max_err(G.mapping(z), E["ws_psi1"]) < WS_TOL
        assert _max_err(G.mapping(z, psi=0.7), E["ws_psi07"]) < WS_TOL
        assert _max_err(G.mapping(z, psi=0.5, cutoff=8), E["ws_psi05_cut8"]) < WS_TOL
        assert _max_err(G.synthesis(E["ws_psi1"], noise_mode="const"), E["img_const_psi1"]) < IMG_TOL
        assert _max_err(G.synthesis(E["ws_psi07"], noise_mode="none"), E["img_none_psi07"]) < IMG_TOL
        assert _max_err(G.synthesis(E["ws_psi05_cut8"]), E["img_const_psi05_cut8"]) < IMG_TOL
        assert _max_err(G.synthesis(E["ws_mix"]), E["img_const_mix"]) < IMG_TOL
        # 'random' noise really is random, and different from the stored noise
        a, b = G.synthesis(E["ws_psi1"], noise_mode="random"), G.synthesis(E["ws_psi1"], noise_mode="random")
        assert _max_err(a, b) > 1e-4


def check_rosinality(G, E):
    with torch.no_grad():
        ws = G.mapping(E["z"])
        assert _max_err(ws[:, 0], E["w"]) < WS_TOL
        assert _max_err(G.w_avg, E["latent_avg"]) < WS_TOL
        assert _max_err(G.synthesis(ws), E["img_psi1"]) < IMG_TOL
        assert _max_err(G.synthesis(G.mapping(E["z"], psi=0.7)), E["img_psi07"]) < IMG_TOL
        assert _max_err(G.synthesis(E["wplus_mix"]), E["img_wplus_mix"]) < IMG_TOL


@pytest.fixture(scope="module")
def nvidia_expected(fixtures):
    return load_file(str(fixtures / "stylegan2/nvidia-64/expected.safetensors"))


@pytest.fixture(scope="module")
def rosinality_expected(fixtures):
    return load_file(str(fixtures / "stylegan2/rosinality-64/expected.safetensors"))


def test_nvidia_parity(nvidia_pkl, nvidia_expected):
    trap = os.path.join(tempfile.gettempdir(), "EMBEDDED_CODE_WAS_EXECUTED")
    if os.path.exists(trap):
        os.remove(trap)
    G = engine.load_generator(nvidia_pkl)
    assert not os.path.exists(trap), "loading executed the pickle's embedded module_src"
    assert not os.path.exists("EMBEDDED_CODE_WAS_EXECUTED")
    assert (G.num_ws, G.resolution, G.cfg.mapping_layers, G.cfg.conv_clamp) == (10, 64, 2, 256.0)
    assert G.cfg.channels == {4: 64, 8: 64, 16: 64, 32: 32, 64: 16}
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    check_nvidia(G, nvidia_expected)


def test_rosinality_parity(rosinality_pt, rosinality_expected):
    G = engine.load_generator(rosinality_pt)
    assert (G.num_ws, G.resolution, G.cfg.mapping_layers) == (10, 64, 2)
    check_rosinality(G, rosinality_expected)


def test_import_cli_round_trip(tmp_path, nvidia_pkl, rosinality_pt, nvidia_expected, rosinality_expected):
    for src, check, expected in [
        (nvidia_pkl, check_nvidia, nvidia_expected),
        (rosinality_pt, check_rosinality, rosinality_expected),
    ]:
        out = tmp_path / (src.stem + ".safetensors")
        r = run_main("import", src, "-o", out)
        assert r.returncode == 0, r.stderr
        assert "stylegan2" in r.stdout
        G = engine.load_generator(out)
        assert G.cfg.info["source_sha256"]
        check(G, expected)


def test_bad_files_give_clear_errors(tmp_path, nvidia_pkl):
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        engine.load_generator(empty)

    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(nvidia_pkl.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        engine.load_generator(truncated)

    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(5000))
    with pytest.raises(CheckpointError):
        engine.load_generator(noise)

    with pytest.raises(CheckpointError, match="no such file"):
        engine.load_generator(tmp_path / "missing.pkl")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/PWNED_BY_PICKLE",))


def test_malicious_pickle_is_refused_and_named(tmp_path):
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _Evil()}))
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system"):
        engine.load_generator(evil)
    assert not os.path.exists("/tmp/PWNED_BY_PICKLE")

    evil_pt = tmp_path / "evil.pt"
    torch.save({"g_ema": {"x": torch.zeros(1)}, "payload": _Evil()}, evil_pt)
    with pytest.raises(CheckpointError, match="refusing to load"):
        engine.load_generator(evil_pt)
    assert not os.path.exists("/tmp/PWNED_BY_PICKLE")


def _stylegan3_like_pickle() -> bytes:
    """A pickle naming torch_utils.persistence._reconstruct_persistent_obj, as NVIDIA's do, made from plain dicts."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    sys.modules["torch_utils.persistence"] = mod
    sys.modules.setdefault("torch_utils", types.ModuleType("torch_utils"))

    class Obj:
        def __init__(self, class_name, state):
            self.meta = {"type": "class", "version": 6, "module_src": "raise SystemExit", "class_name": class_name,
                         "state": state}

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    try:
        syn = Obj("SynthesisNetwork", {"_modules": {"input": Obj("SynthesisInput", {}), "L0_36_512": Obj("L", {})},
                                       "img_resolution": 64})
        mapping = Obj("MappingNetwork", {"_modules": {}, "z_dim": 512, "w_dim": 512, "c_dim": 0})
        g = Obj("Generator", {"_modules": {"mapping": mapping, "synthesis": syn}})
        return pickle.dumps({"G_ema": g, "D": None})
    finally:
        del sys.modules["torch_utils.persistence"]
        del sys.modules["torch_utils"]


def test_stylegan3_is_not_supported(tmp_path):
    p = tmp_path / "sg3.pkl"
    p.write_bytes(_stylegan3_like_pickle())
    with pytest.raises(CheckpointError, match="StyleGAN3.*not supported"):
        engine.load_generator(p)


def test_foreign_files(tmp_path):
    st = tmp_path / "foreign.safetensors"
    save_file({"a": torch.zeros(2)}, str(st))
    with pytest.raises(CheckpointError, match="without a BlazeStudio model config"):
        engine.load_generator(st)
    pt = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, pt)
    with pytest.raises(CheckpointError, match="not a rosinality"):
        engine.load_generator(pt)
    txt = tmp_path / "notes.pkl"
    txt.write_text("hello world, not a model")
    with pytest.raises(CheckpointError, match="unknown file type"):
        engine.load_generator(txt)


def test_import_cli_errors(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    r = run_main("import", bad, "-o", tmp_path / "x.safetensors")
    assert r.returncode == 1
    assert r.stderr.startswith("error: bad.pkl") and "Traceback" not in r.stderr
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("res", [64, 128, 256])
def test_student_api_and_native_round_trip(tmp_path, res):
    teacher_cfg = ModelConfig(arch="stylegan2", resolution=res, mapping_layers=2,
                              channels={r: 32 for r in [2**i for i in range(2, res.bit_length())]})
    S = Generator(teacher_cfg.student()).eval()
    assert S.num_ws == teacher_cfg.num_ws == Generator(teacher_cfg).num_ws
    z = torch.randn(2, 512)
    with torch.no_grad():
        ws = S.mapping(z, psi=0.7)
        img = S.synthesis(ws)
        aux = S.synthesis(ws, return_aux=True)
    assert img.shape == (2, 3, res, res)
    assert [a.shape[-1] for a in aux] == [2**i for i in range(3, res.bit_length())]
    assert torch.equal(aux[-1], img)
    engine.save_generator(S, tmp_path / "s.safetensors")
    S2 = engine.load_generator(tmp_path / "s.safetensors")
    assert S2.is_student and S2.cfg.channels == S.cfg.channels
    with torch.no_grad():
        assert torch.equal(S2.synthesis(ws), img)


def test_student_uses_every_level_and_ws_shape_is_checked():
    S = Generator(ModelConfig(arch="blazestylegan", resolution=64)).eval()
    ws = S.mapping(torch.randn(1, 512))
    with torch.no_grad():
        base = S.synthesis(ws)
        # every W+ entry but the teacher's first conv at full resolution (num_ws - 3) steers the inference path
        for layer in [0, 1, 2, S.num_ws - 2, S.num_ws - 1]:
            w2 = ws.clone()
            w2[:, layer] += 3 * torch.randn(512)
            assert _max_err(S.synthesis(w2), base) > 1e-3, f"ws[{layer}] has no effect"
    with pytest.raises(ValueError, match="ws must be"):
        S.synthesis(ws[:, :5])
