"""Phone numerics: what Core ML FP16 and TFLite's GPU delegate compute is emulated by running the network in float16
on the CPU. A trained student's demodulation sums reach 1e5–4e5, above float16's 65504; the layers scale styles and
weights first (demodulation cancels it), so float16 stays close to float32."""

import copy

import numpy as np
import pytest
import torch

import engine
import engine.assets
from engine.export.verify import HALF_MIN_PSNR, psnr
from engine.models.generator import Generator, seeds_to_z
from engine.nn.layers import DepthwiseModulatedConv, UpToRGB

FP16_MAX = 65504.0


def _half_psnrs(G, seeds=range(32), psi=1.0):
    with torch.no_grad():
        ws = G.mapping(seeds_to_z(seeds, G.z_dim), psi=psi)
        ref = G.synthesis(ws).numpy()
        out = copy.deepcopy(G).half().synthesis(ws.half()).float().numpy()
    return [psnr(out[i], ref[i]) for i in range(len(ref))]


def _raw_demodulation_sums(G, ws):
    """The unscaled Σ s²·w² of every modulated student layer (the formulation before the fix), in float32."""
    sums = []
    syn = G.synthesis
    for k, r in enumerate(syn.levels):
        for name, idx in ((f"conv{r}a", 2 * k - 1), (f"conv{r}b", 2 * k), (f"head{r}", 2 * k + 2)):
            layer = getattr(syn, name, None)
            if layer is None:
                continue
            s = layer.affine(ws[:, idx if r > 4 or name != "conv4b" else 0])
            dw, pw = layer.dw_weight.flatten(1), layer.pw_weight.flatten(1)
            if isinstance(layer, DepthwiseModulatedConv):
                table = (pw * pw) * (dw * dw).sum(1)[None, :]
            else:
                assert isinstance(layer, UpToRGB)
                table = (pw * pw) * (dw * dw).sum(1)[:, None]
            sums.append((s * s) @ table.t())
    return sums


def test_bundled_student_keeps_its_picture_in_float16():
    G = engine.load_generator()
    with torch.no_grad():
        ws = G.mapping(seeds_to_z(range(8), G.z_dim))
        biggest = max(float(t.max()) for t in _raw_demodulation_sums(G, ws))
    # The trained weights are the hard case: unscaled, these sums overflow half precision.
    assert biggest > FP16_MAX
    ps = _half_psnrs(G)
    assert min(ps) >= HALF_MIN_PSNR, f"worst {min(ps):.1f} dB, mean {np.mean(ps):.1f} dB"


@pytest.fixture(scope="module")
def overflowing_student(nvidia_pkl):
    """A small random student whose modulated weights are scaled up the way training grows them, so that the raw
    demodulation sums exceed 65504 (random initial weights stay far below it)."""
    T = engine.load_generator(nvidia_pkl)
    torch.manual_seed(0)
    S = Generator(T.cfg.student(channels={4: 64, 8: 64, 16: 32, 32: 32}))
    S.mapping.load_state_dict(T.mapping.state_dict())
    with torch.no_grad():
        for m in S.modules():
            if isinstance(m, (DepthwiseModulatedConv, UpToRGB)):
                m.pw_weight.mul_(12.0)
                m.dw_weight.mul_(4.0)
                m.affine.bias.fill_(3.0)  # large styles, as trained affines give
    return S.eval().requires_grad_(False)


def test_overflowing_weights_would_zero_channels_in_the_old_formulation(overflowing_student):
    S = overflowing_student
    with torch.no_grad():
        ws = S.mapping(seeds_to_z(range(4), S.z_dim))
        sums = _raw_demodulation_sums(S, ws)
    over = [float((t > FP16_MAX).float().mean()) for t in sums]
    assert max(over) > 0.5, over
    # In half precision the old coefficient rsqrt(Σ s²w²) is rsqrt(inf) = 0: those channels would be black.
    assert (sums[0].half().float().rsqrt() == 0).any()


def test_overflowing_weights_stay_within_bound_in_float16(overflowing_student):
    ps = _half_psnrs(overflowing_student, seeds=range(8))
    assert min(ps) >= HALF_MIN_PSNR, ps


def test_float32_output_is_unchanged_by_the_scaling(overflowing_student):
    """The scaling is exact algebra: the unscaled reference formula gives the same float32 picture."""
    S = overflowing_student
    layer = S.synthesis.conv8a
    x = torch.randn(2, layer.dw_weight.shape[0], 8, 8)
    w = torch.randn(2, S.w_dim)
    with torch.no_grad():
        got = layer(x, w, noise_mode="none")
        s = layer.affine(w)
        table = (layer.pw_weight.flatten(1) ** 2) * (layer.dw_weight.flatten(1) ** 2).sum(1)[None, :]
        d = ((s * s) @ table.t() + 1e-8).rsqrt()
        y = torch.nn.functional.conv2d(x * s[:, :, None, None], layer.dw_weight, padding=1,
                                       groups=layer.dw_weight.shape[0])
        y = torch.nn.functional.conv2d(y, layer.pw_weight) * d[:, :, None, None]
        want = torch.nn.functional.leaky_relu(y + layer.bias[None, :, None, None], 0.2) * 2**0.5
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_teacher_and_encoder_in_float16():
    T = engine.load_teacher()
    assert min(_half_psnrs(T, seeds=range(4))) >= HALF_MIN_PSNR
    from engine.models.encoder import load_encoder

    E = load_encoder(engine.assets.ENCODER)
    G = engine.load_generator()
    with torch.no_grad():
        imgs = G.synthesis(G.mapping(seeds_to_z(range(4), G.z_dim), psi=0.7)).clamp(-1, 1)
        ws32 = E(imgs)
        ws16 = copy.deepcopy(E).half()(imgs.half()).float()
        a, b = G.synthesis(ws32).numpy(), G.synthesis(ws16).numpy()
    assert min(psnr(b[i], a[i]) for i in range(4)) >= HALF_MIN_PSNR
