"""generate / bench CLIs, latent files, and the student's size budget."""

import json

import numpy as np
import pytest
import torch
from conftest import run_main
from PIL import Image

import engine
from engine.bench import count_params, inference_params, synthesis_flops
from engine.errors import UserError
from engine.io.latents import load_latent, save_latent
from engine.models.config import ModelConfig
from engine.models.generator import Generator, seeds_to_z


def test_generate_grid_and_latents(tmp_path, nvidia_pkl, rosinality_pt):
    out, ws_out = tmp_path / "grid.png", tmp_path / "ws.npz"
    r = run_main("generate", "--model", nvidia_pkl, "--seeds", "0-5", "--psi", "0.7", "--out", out,
                 "--ws-out", ws_out, "--cols", "3")
    assert r.returncode == 0, r.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2, 3)
    G = engine.load_generator(nvidia_pkl)
    ws, meta = load_latent(ws_out, G)
    assert meta["seeds"] == list(range(6)) and meta["psi"] == 0.7
    with torch.no_grad():
        expected = G.mapping(seeds_to_z(range(6)), psi=0.7)
        assert (ws - expected).abs().max() < 1e-5
        tile = ((G.synthesis(ws[4:5]).clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).numpy()
    # seed 4 sits in row 1, column 1 of the 3-column grid
    assert np.abs(grid[2 + 66 : 2 + 66 + 64, 2 + 66 : 2 + 66 + 64].astype(float) - tile).max() <= 1

    # the latent re-renders to the same pixels; a rosinality model (another W space) refuses it
    out2 = tmp_path / "again.png"
    assert run_main("generate", "--model", nvidia_pkl, "--latent", ws_out, "--out", out2, "--cols", "3").returncode == 0
    assert np.array_equal(np.asarray(Image.open(out2)), grid)
    r = run_main("generate", "--model", rosinality_pt, "--latent", ws_out, "--out", tmp_path / "x.png")
    assert r.returncode == 1 and "made for another model" in r.stderr


def test_generate_bad_input(tmp_path, nvidia_pkl):
    r = run_main("generate", "--model", nvidia_pkl, "--seeds", "5-2", "--out", tmp_path / "x.png")
    assert r.returncode == 1 and "bad seed list" in r.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = run_main("generate", "--model", nvidia_pkl, "--seeds", "1", "--out", "/proc/nope/x.png")
    assert r.returncode == 1 and "cannot write" in r.stderr


def test_latent_file_checks(tmp_path):
    G = Generator(ModelConfig(arch="stylegan2", resolution=16, mapping_layers=1, channels={4: 8, 8: 8, 16: 8}))
    ws = G.mapping(torch.randn(2, 512)).detach()
    p = save_latent(tmp_path / "a.npz", ws, G, seeds=[1, 2])
    ws2, meta = load_latent(p, G)
    assert torch.equal(ws2, ws) and meta["seeds"] == [1, 2]
    # a student built on the same mapping accepts it; another mapping does not
    S = Generator(G.cfg.student())
    S.mapping.load_state_dict(G.mapping.state_dict())
    load_latent(p, S)
    other = Generator(G.cfg)
    with pytest.raises(UserError, match="another model"):
        load_latent(p, other)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a latent file"):
        load_latent(tmp_path / "bad.npz")
    with pytest.raises(UserError, match=r"\.npz"):
        save_latent(tmp_path / "a.txt", ws, G)


def test_student_256_budget():
    """The paper's budget for the 256 synthesis network: ≤ 2.0 M parameters, ≤ 1.3 GFLOPs (2 × MACs)."""
    S = Generator(ModelConfig(arch="blazestylegan", resolution=256))
    T = Generator(ModelConfig(arch="stylegan2", resolution=256))
    assert count_params(S.synthesis) <= 2.0e6
    assert inference_params(S) < count_params(S.synthesis)
    flops = synthesis_flops(S)
    assert 0.3e9 < flops <= 1.3e9
    assert synthesis_flops(T) > 20 * flops


def test_bench_cli_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = run_main("bench", "--only", "student-256", "--repeats", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    s = res["student-256"]
    assert s["flops"] == 2 * s["macs"] and s["median_ms"] > 0 and s["synthesis_params"] <= 2.0e6
