"""Few-shot stylization on the bundled model, with exemplars made from the fixture photos by OpenCV's
non-photorealistic filters: the style moves the samples' texture statistics toward the exemplar, the W space stays,
the file is an ordinary model that records its sources, runs resume, and drawings without a detectable face go
through --aligned."""

import cv2
import numpy as np
import pytest
import torch
from conftest import run_main

import engine
from engine.edit.stylize import (
    StyleOptions,
    Stylizer,
    blend_generators,
    face_detection_rate,
    gram_distance,
    prepare_exemplar,
    stylize,
)
from engine.errors import NoFaceError
from engine.models.generator import seeds_to_z

QUICK = StyleOptions(steps=12, invert_steps=4, batch=2)


@pytest.fixture(scope="module")
def kit():
    from engine.invert import Inverter, pick_encoder

    G = engine.load_generator()
    E, _ = pick_encoder(G)
    return G, Inverter(G, E)


@pytest.fixture(scope="module")
def exemplars(tmp_path_factory, fixtures):
    d = tmp_path_factory.mktemp("styles")
    img = cv2.imread(str(fixtures / "images" / "astronaut.png"))
    _, colour = cv2.pencilSketch(img, sigma_s=60, sigma_r=0.07, shade_factor=0.05)
    cv2.imwrite(str(d / "pencil.png"), colour)
    z = img.reshape(-1, 3).astype(np.float32)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    _, lab, cen = cv2.kmeans(z, 5, None, crit, 1, cv2.KMEANS_PP_CENTERS)
    cv2.imwrite(str(d / "poster.png"), cen.astype(np.uint8)[lab.flatten()].reshape(img.shape))
    return d


@pytest.fixture(scope="module")
def styled(kit, exemplars):
    G, inv = kit
    out, st = stylize(G, [exemplars / "pencil.png"], inv, QUICK, progress=False)
    return out, st


def test_style_moves_texture_toward_the_exemplar_and_keeps_the_w_space(kit, styled):
    from engine.io.latents import w_space_id

    G, _ = kit
    S, st = styled
    assert st.step == QUICK.steps and st.history[-1] < st.history[0]
    assert w_space_id(S) == w_space_id(G)
    ex = torch.from_numpy(st.exemplars[0].image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ws = G.mapping(seeds_to_z(range(8), G.z_dim), psi=0.7)
        base, sty = G.synthesis(ws), S.synthesis(ws)
    assert gram_distance(sty, ex) < 0.8 * gram_distance(base, ex)
    # Still faces: the mesh finds them.
    assert face_detection_rate(S, range(12)) >= 0.75
    info = S.cfg.info["stylized"]
    assert info["styles"][0]["pixels_sha256"] == st.exemplars[0].sha256 and info["steps"] == QUICK.steps
    assert info["styles"][0]["file_sha256"] is not None


def test_strength_blends_base_and_style(kit, styled):
    G, _ = kit
    S, _ = styled
    with torch.no_grad():
        ws = G.mapping(seeds_to_z([1], G.z_dim))
        assert torch.allclose(blend_generators(G, S, 0.0).synthesis(ws), G.synthesis(ws), atol=1e-5)
        assert torch.allclose(blend_generators(G, S, 1.0).synthesis(ws), S.synthesis(ws), atol=1e-5)
        blend = blend_generators(G, S, 0.5)
        # A blend is neither file: it claims no path, and records its strength.
        assert blend.source_path == "" and blend.cfg.info["stylized"]["strength"] == 0.5
        half = blend.synthesis(ws)
        assert not torch.allclose(half, G.synthesis(ws)) and not torch.allclose(half, S.synthesis(ws))


def test_stop_and_resume(kit, exemplars, tmp_path):
    G, inv = kit
    ex = [prepare_exemplar(exemplars / "poster.png", inv, invert_steps=QUICK.invert_steps)]
    state = tmp_path / "s.safetensors.stylize-state.pt"
    st = Stylizer(G, ex, QUICK, state_path=state)
    assert st.run(should_stop=lambda: st.step >= 5, progress=False) == "stopped" and st.step == 5
    assert state.exists()
    again = Stylizer(G, ex, QUICK, state_path=state)
    assert again.try_resume() and again.step == 5
    assert again.run(progress=False) == "done" and again.step == QUICK.steps
    # A state file from another run is refused with one line, never silently mixed in.
    other = Stylizer(G, ex, StyleOptions(steps=20, invert_steps=4, batch=2), state_path=state)
    with pytest.raises(engine.UserError, match="belongs to another stylization"):
        other.try_resume()


def test_resumed_run_takes_the_codes_from_its_state_and_a_stop_while_inverting_keeps_nothing(kit, exemplars,
                                                                                              tmp_path):
    G, inv = kit
    out = tmp_path / "poster.safetensors"
    state = tmp_path / "poster.safetensors.stylize-state.pt"
    opts = StyleOptions(steps=6, invert_steps=4, batch=2)
    # Stopped while the style image is being inverted: nothing trained, no state, no model.
    styled, st = stylize(G, [exemplars / "poster.png"], inv, opts, out=out, should_stop=lambda: True,
                         progress=False)
    assert styled is None and st is None and not state.exists() and not out.exists()

    calls = []

    class Counting:  # the real inverter, counting projector runs
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def project(self, *a, **k):
            calls.append(1)
            return self.inner.project(*a, **k)

    counting = Counting(inv)
    styled, st = stylize(G, [exemplars / "poster.png"], counting, opts, out=out,
                         callback=lambda step, total, loss: step < 3, progress=False)
    assert styled is None and st.step == 3 and state.exists() and len(calls) == 1
    first_codes = st.ws.cpu().clone()
    calls.clear()
    styled, st = stylize(G, [exemplars / "poster.png"], counting, opts, out=out, progress=False)
    assert styled is not None and st.step == opts.steps and out.exists() and not state.exists()
    assert calls == [], "the resumed run inverted the style image again"
    assert torch.equal(st.ws.cpu(), first_codes)


def test_a_drawing_without_a_detectable_face_needs_aligned(kit, tmp_path):
    G, inv = kit
    drawing = tmp_path / "doodle.png"
    pic = np.full((300, 300, 3), 235, np.uint8)
    cv2.circle(pic, (150, 150), 100, (40, 40, 40), 3)
    cv2.imwrite(str(drawing), pic)
    with pytest.raises(NoFaceError, match="--aligned"):
        prepare_exemplar(drawing, inv, invert_steps=0)
    ex = prepare_exemplar(drawing, inv, aligned=True, invert_steps=0)
    assert ex.aligned and ex.image.shape == (G.resolution, G.resolution, 3)


def test_stylize_cli(tmp_path, exemplars):
    out = tmp_path / "pencil.safetensors"
    r = run_main("stylize", "--style", exemplars / "pencil.png", "--steps", "4", "--invert-steps", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    assert out.exists() and (tmp_path / "pencil_preview.png").exists()
    assert "style distance to the exemplars" in r.stdout and "finds a face in" in r.stdout
    assert not (tmp_path / "pencil.safetensors.stylize-state.pt").exists()
    S = engine.load_generator(out)
    assert S.cfg.info["stylized"]["name"] == "pencil"
    r = run_main("stylize", "--style", tmp_path / "missing.png", "--out", out)
    assert r.returncode == 1 and "no such style image" in r.stderr
    # Never over an input: the model being stylized, or the bundled one.
    before = out.read_bytes()
    r = run_main("stylize", "--style", exemplars / "pencil.png", "--model", out, "--out", out)
    assert r.returncode == 1 and "is an input model" in r.stderr and out.read_bytes() == before
    from engine.assets import STUDENT

    r = run_main("stylize", "--style", exemplars / "pencil.png", "--out", STUDENT)
    assert r.returncode == 1 and "is an input model" in r.stderr
