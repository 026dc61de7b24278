"""Inversion: the encoder (training, files, W-space checks), the projector, the Inverter and `main.py invert`.

The fixture teacher (nvidia-64) is a randomly initialised StyleGAN2: its images are structured noise whose raw
values reach ±20, so its pixel MSEs are ~100× those of a trained model. Thresholds below are relative to distances
measured on the same fixture, never absolute numbers for faces.
"""

import sys
import threading

import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, run_main
from PIL import Image

import engine
from engine.errors import UserError
from engine.faces import align_face
from engine.invert import Inverter, load_encoder, project, save_encoder
from engine.io.latents import load_latent, w_space_id
from engine.models.encoder import build_encoder, check_compatible
from engine.models.generator import seeds_to_z
from engine.models.perceptual import PerceptualLoss
from training.encoder import EncoderTrainConfig, EncoderTrainer

ASTRONAUT = FIXTURES / "images" / "astronaut.png"
HOPPER = FIXTURES / "images" / "grace_hopper.jpg"
ROSINALITY = FIXTURES / "stylegan2" / "rosinality-64" / "checkpoint.pt"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The suite shares 2 cores; torch's default 2 threads slow down many times over when the cores are busy.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread_subprocesses(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def G(nvidia_pkl):
    return engine.load_generator(nvidia_pkl)


@pytest.fixture(scope="module")
def perceptual():
    return PerceptualLoss()


@pytest.fixture(scope="module")
def trained(G, perceptual, tmp_path_factory):
    """A tiny encoder (64-px input, 64-wide heads) trained for 30 steps; its file, its losses and evaluations."""
    torch.manual_seed(0)
    E = build_encoder(G, input_size=64, hidden=64)
    # Latent loss only. On this random fixture the image losses pull the prediction away from the true codes: many
    # W+ codes render near-identical noise (the projector test finds close images at W distances no smaller than
    # w_avg's), so an image-matching encoder need not recover the codes. The CLI test runs the full loss.
    cfg = EncoderTrainConfig(batch=4, lr=1e-3, pixel_weight=0, perceptual_weight=0, eval_samples=16, seed=1)
    trainer = EncoderTrainer(G, E, cfg, perceptual=perceptual)
    before = trainer.evaluate()
    history = [trainer.step() for _ in range(30)]
    after = trainer.evaluate()
    path = tmp_path_factory.mktemp("encoder") / "tiny.safetensors"
    trainer.save(path, info={"model": "nvidia-64"})
    return {"path": path, "history": history, "before": before, "after": after, "trainer": trainer}


def test_untrained_encoder_starts_at_w_avg(G):
    E = build_encoder(G, input_size=64, hidden=16).eval()
    with torch.no_grad():
        ws = E(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert ws.shape == (2, G.num_ws, G.w_dim)
    # The head's last layer starts near zero: offsets tiny compared with W's spread (~1 per dimension).
    assert (ws - G.w_avg).abs().max() < 0.05
    assert E.cfg.w_space_id == w_space_id(G) and E.cfg.resolution == 64 and E.cfg.num_ws == G.num_ws
    assert [i for a, b in E.cfg.groups for i in range(a, b)] == list(range(G.num_ws))


def test_encoder_training_lowers_latent_loss(trained):
    lat = [h["latent"] for h in trained["history"]]
    start, end = trained["before"]["eval_latent"], trained["after"]["eval_latent"]
    assert all(np.isfinite(lat))
    # Held-out codes (the same before and after): the untrained encoder answers w_avg for every image.
    assert end < 0.85 * start, (start, end)
    # Training batches end below the untrained loss as well (single batches of 4 are too noisy to compare).
    assert np.mean(lat[-10:]) < start, (start, lat)


def test_encoder_tells_images_apart(G):
    """The head reads the image, not just a bias: it fits 4 samples' codes below the best constant guess."""
    torch.manual_seed(0)
    E = build_encoder(G, input_size=64, hidden=64).train()
    with torch.no_grad():
        ws = G.mapping(seeds_to_z(range(4)))
        images = G.synthesis(ws).clamp(-1, 1)
    target = E.normalized(ws)
    constant = float((target - target.mean(0)).square().mean())  # the loss of the best image-blind prediction
    opt = torch.optim.Adam(E.parameters(), lr=3e-3)
    for _ in range(40):
        loss = (E.normalized(E(images)) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.85 * constant, (loss.item(), constant)


def test_encoder_file_round_trip_and_w_space_checks(G, trained, tmp_path):
    E = load_encoder(trained["path"])
    live = trained["trainer"].E.eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(E(x), live(x), atol=1e-5)
    assert E.cfg.info["steps"] == 30 and E.cfg.info["model"] == "nvidia-64"
    check_compatible(E, G)

    R = engine.load_generator(ROSINALITY)  # same shapes, another mapping network: another W space
    with pytest.raises(UserError, match="trained for another model"):
        check_compatible(E, R)
    with pytest.raises(UserError, match="trained for another model"):
        Inverter(R, E)

    gen_file = tmp_path / "generator.safetensors"
    engine.save_generator(G, gen_file)
    with pytest.raises(UserError, match="generator model, not an encoder"):
        load_encoder(gen_file)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="not an encoder"):
        load_encoder(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="no such encoder"):
        load_encoder(tmp_path / "missing.safetensors")


def test_projector_recovers_generator_samples(G, perceptual):
    with torch.no_grad():
        ws_true = G.mapping(seeds_to_z([100, 101]))
        target = G.synthesis(ws_true)
        others = G.synthesis(G.mapping(seeds_to_z([102, 103, 104, 105])))
        # How far apart two different samples are: the scale the recovered distance is judged against.
        pool = torch.cat([target, others])
        i, j = torch.triu_indices(len(pool), len(pool), offset=1)
        apart = float(perceptual(pool[i], pool[j]).min())
    ws0 = G.w_avg.expand(2, G.num_ws, -1).clone()
    # pixel_weight 0.1 instead of 1: this fixture's raw values make the MSE ~100× a trained model's, and 0.1 keeps
    # the pixel term about as strong beside the perceptual one as the default is on real faces.
    result = project(G, target, ws0, 80, perceptual=perceptual, pixel_weight=0.1, progress=False)
    with torch.no_grad():
        d = perceptual(G.synthesis(result.ws), target)
        d0 = perceptual(G.synthesis(ws0), target)
    assert apart > 0.5, apart
    # From w_avg (as far as an unrelated sample) to well within the spread between distinct samples.
    assert (d < 0.35 * apart).all(), (d, apart)
    assert (d < 0.4 * d0).all(), (d, d0)
    assert result.loss < result.start_loss and result.steps == 80 and not result.cancelled


def test_projector_on_a_photo_with_progress_and_cancel(G, perceptual):
    aligned = align_face(ASTRONAUT, size=64)
    inv = Inverter(G, None, perceptual)
    ws0 = inv.encode(aligned)
    assert torch.allclose(ws0, G.w_avg.expand_as(ws0))

    seen = []
    result = inv.project(aligned, ws0, steps=25, callback=lambda s, n, loss: seen.append((s, n, loss)))
    assert [s for s, _, _ in seen] == list(range(1, 26)) and all(n == 25 for _, n, _ in seen)
    assert result.loss < 0.7 * result.start_loss, (result.start_loss, result.loss)
    before, after = inv.metrics(aligned, ws0), inv.metrics(aligned, result.ws)
    assert after["psnr"] > before["psnr"] + 1, (before, after)

    # Codes from the live path (encoded under inference_mode), refined from inside inference_mode too.
    with torch.inference_mode():
        live = inv.encode(aligned)
        again = inv.project(aligned, live, steps=2)
    assert again.steps == 2 and torch.isfinite(again.ws).all()

    # A callback returning False stops at once; the best codes so far come back.
    stopped = inv.project(aligned, ws0, steps=25, callback=lambda s, n, loss: s < 3)
    assert stopped.steps == 3 and stopped.cancelled and stopped.loss <= stopped.start_loss

    # A threading.Event set from another thread stops a projection running in a worker thread.
    cancel, started, out = threading.Event(), threading.Event(), {}

    def work():
        out["r"] = inv.project(aligned, ws0, steps=10_000, cancel=cancel, callback=lambda s, n, l: started.set())

    t = threading.Thread(target=work)
    t.start()
    assert started.wait(60)
    cancel.set()
    t.join(60)
    assert not t.is_alive() and out["r"].cancelled and 1 <= out["r"].steps < 10_000


def test_invert_cli_end_to_end(G, trained, tmp_path):
    out = tmp_path / "face.npz"
    r = run_main("invert", ASTRONAUT, "--model", FIXTURES / "stylegan2/nvidia-64/network-snapshot.pkl",
                 "--encoder", trained["path"], "--steps", "8", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and "perceptual" in r.stdout
    ws, meta = load_latent(out, G)
    assert ws.shape == (1, G.num_ws, G.w_dim)
    al = meta["alignment"]
    assert al["image_size"] == list(Image.open(ASTRONAUT).size) and al["size"] == 64
    assert np.array(al["quad"]).shape == (4, 2) and np.array(al["matrix"]).shape == (2, 3)
    assert meta["model_info"]["w_space_id"] == w_space_id(G) and meta["encoder"]["file"] == "tiny.safetensors"
    assert meta["projector"]["steps"] == 8 and meta["projector"]["start"] == "encoder"
    m = meta["metrics"]
    assert 0 <= m["perceptual"] <= 4 and m["psnr"] > 0 and "psnr" in m["start"]
    # The projector returns the best codes it saw, so it never ends worse than the encoder's start.
    assert m["psnr"] >= m["start"]["psnr"] - 0.5

    pair = np.asarray(Image.open(out.with_suffix(".png")).convert("RGB"))
    assert pair.shape == (64, 128, 3)
    aligned = align_face(ASTRONAUT, size=64).image
    assert np.abs(pair[:, :64].astype(int) - aligned).max() <= 2
    with torch.no_grad():
        recon = ((G.synthesis(ws).clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).numpy()
    assert np.abs(pair[:, 64:].astype(float) - recon).max() <= 1


def test_invert_cli_refuses_an_encoder_of_another_w_space(trained, tmp_path):
    r = run_main("invert", ASTRONAUT, "--model", ROSINALITY, "--encoder", trained["path"], "--out",
                 tmp_path / "x.npz")
    assert r.returncode == 1 and "trained for another model" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.npz").exists()


def test_invert_cli_without_a_face(tmp_path, nvidia_pkl):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 240, 3), 140, np.uint8)).save(blank)
    r = run_main("invert", blank, "--model", nvidia_pkl, "--no-encoder", "--steps", "2", "--out", tmp_path / "x.npz")
    assert r.returncode == 1 and "no face" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.png").exists()


def test_train_encoder_cli_checkpoints_resume_and_photos(tmp_path, nvidia_pkl):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.png").write_bytes(ASTRONAUT.read_bytes())
    (photos / "hopper.jpg").write_bytes(HOPPER.read_bytes())
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(photos / "wall.png")
    out = tmp_path / "enc.safetensors"
    common = ["--model", nvidia_pkl, "--out", out, "--batch", "2", "--input-size", "64", "--hidden", "16",
              "--eval-samples", "2", "--checkpoint-every", "1"]
    r = run_main("train-encoder", *common, "--steps", "2", "--data", photos)
    assert r.returncode == 0, r.stderr
    assert "2 aligned faces" in r.stdout and "1 without a face skipped" in r.stdout
    assert load_encoder(out).cfg.info["steps"] == 2 and out.with_name("enc.train.pt").exists()

    r = run_main("train-encoder", *common, "--steps", "3")
    assert r.returncode == 1 and "--resume" in r.stderr  # never overwrites a run silently

    r = run_main("train-encoder", "--model", nvidia_pkl, "--out", out, "--batch", "2", "--steps", "3", "--resume",
                 "--data", photos, "--lr", "5e-4")
    assert r.returncode == 0, r.stderr
    assert "resuming at step 2" in r.stdout
    # A lowered --lr is taken (and said), although the saved optimiser carries the old one; the rest stays the run's.
    assert "differ from the run's: backbone_lr 0.0001 → 5e-05, lr 0.001 → 0.0005" in r.stdout
    saved = torch.load(out.with_name("enc.train.pt"), weights_only=True)
    assert [g["lr"] for g in saved["optimizer"]["param_groups"]] == [5e-4, 5e-5]
    assert saved["train_config"]["eval_samples"] == 2
    E = load_encoder(out)
    assert E.cfg.info["steps"] == 3 and E.cfg.input_size == 64 and E.cfg.hidden == 16

    r = run_main("train-encoder", "--model", ROSINALITY, "--out", out, "--steps", "4", "--resume")
    assert r.returncode == 1 and "another model" in r.stderr


def test_train_encoder_stops_cleanly_on_sigterm(tmp_path, nvidia_pkl):
    """A scheduler's SIGTERM saves the state between steps (exit 130) and --resume carries on from it."""
    import signal
    import subprocess
    import time

    out = tmp_path / "enc.safetensors"
    cmd = [sys.executable, str(ROOT / "main.py"), "train-encoder", "--model", str(nvidia_pkl), "--out", str(out),
           "--batch", "2", "--input-size", "64", "--hidden", "16", "--eval-samples", "2", "--checkpoint-every", "2",
           "--steps", "100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not out.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert out.exists(), proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted at step" in stdout
    stopped = int(stdout.split("interrupted at step ")[1].split(";")[0])
    assert stopped >= 2
    r = run_main("train-encoder", "--model", nvidia_pkl, "--out", out, "--steps", stopped + 1, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming at step {stopped}" in r.stdout and load_encoder(out).cfg.info["steps"] == stopped + 1


def test_save_encoder_is_atomic_and_keeps_config(G, tmp_path):
    E = build_encoder(G, input_size=64, hidden=8)
    path = save_encoder(E, tmp_path / "e.safetensors", info={"note": "x"})
    again = load_encoder(path)
    assert again.cfg == E.cfg and [p.name for p in tmp_path.iterdir()] == ["e.safetensors"]


def test_encoder_warm_start_for_a_retrained_model(trained, G):
    """--init: a retrained model (another W space, same layout) starts from the earlier encoder's weights, with its
    own W statistics; a layout that does not fit is refused."""
    from engine.models.generator import Generator
    from training.encoder import warm_start

    torch.manual_seed(3)
    retrained = Generator(G.cfg)
    E = build_encoder(retrained, input_size=64, hidden=64, pretrained=False)
    warm_start(E, trained["path"], log=lambda *a: None)
    prev = load_encoder(trained["path"])
    assert E.cfg.w_space_id == w_space_id(retrained) != prev.cfg.w_space_id
    for k, v in prev.state_dict().items():
        if k in ("w_avg", "w_std"):
            assert not torch.equal(E.state_dict()[k], v)
        else:
            assert torch.equal(E.state_dict()[k], v), k
    with pytest.raises(engine.UserError, match="hidden"):
        warm_start(build_encoder(retrained, input_size=64, hidden=16, pretrained=False), trained["path"])
