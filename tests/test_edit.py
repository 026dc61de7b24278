"""Editing engine: directions (SeFa, GANSpace, fitted, imported), edits in W+, direction files, the edit session
(undo/redo, mixing, truncation, cached and coalesced rendering) and the directions / generate / sweep commands."""

import os
import pickle
import threading

import cv2
import numpy as np
import pytest
import torch
from conftest import run_main
from PIL import Image

import engine
from engine.edit import (
    Direction,
    DirectionSet,
    EditSession,
    apply_edits,
    fit_direction,
    ganspace,
    import_direction_file,
    layer_groups,
    load_directions,
    modulated_affines,
    parse_edit,
    sample_w,
    sefa,
    style_mix,
)
from engine.errors import UserError
from engine.io.latents import load_latent, save_latent
from engine.models.generator import Generator, seeds_to_z
from engine.render import to_uint8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast, and far faster when other jobs load the shared cores."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for the CLI subprocesses
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="module")
def teacher(nvidia_pkl):
    torch.set_grad_enabled(False)
    yield engine.load_generator(nvidia_pkl)
    torch.set_grad_enabled(True)


@pytest.fixture(scope="module")
def student(teacher):
    torch.manual_seed(0)
    S = Generator(teacher.cfg.student())
    S.mapping.load_state_dict(teacher.mapping.state_dict())
    return S.eval()


@pytest.fixture(scope="module")
def dirs(teacher):
    return sefa(teacher, num=6)


def _image_change(G, ws, edits):
    with torch.no_grad():
        return (G.synthesis(apply_edits(ws, edits)) - G.synthesis(ws)).pow(2).mean().item()


def test_layer_map_matches_forward(teacher, student):
    """Every affine listed for a W+ index really receives that entry of W+ in the forward pass."""
    for G, aux in ((teacher, False), (student, True)):
        seen = {}
        hooks = [fc.register_forward_hook(lambda m, inp, out, n=name, seen=seen: seen.__setitem__(n, inp[0].clone()))
                 for name, fc, _ in modulated_affines(G, aux_heads=aux)]
        ws = torch.randn(1, G.num_ws, G.w_dim)
        G.synthesis(ws, return_aux=aux)
        for h in hooks:
            h.remove()
        table = modulated_affines(G, aux_heads=aux)
        assert len(seen) == len(table)
        for name, _, idx in table:
            assert torch.equal(seen[name], ws[:, idx]), (G.cfg.arch, name, idx)
        assert {idx for *_, idx in table} == set(range(G.num_ws))
    # At inference the student ignores the W+ entry of an intermediate head's ToRGB; SeFa says so plainly.
    used = {idx for *_, idx in modulated_affines(student)}
    unused = sorted(set(range(student.num_ws)) - used)
    assert unused == [student.num_ws - 3]
    with pytest.raises(UserError, match="no modulated layer"):
        sefa(student, layers=(unused[0], unused[0]))


def test_edits_reversible_and_layer_local(teacher, dirs):
    ws = teacher.mapping(seeds_to_z([1, 2], teacher.z_dim))
    d = dirs[0]
    out = apply_edits(ws, [(d, 2.5, (3, 5))])
    assert torch.equal(out[:, :3], ws[:, :3]) and torch.equal(out[:, 6:], ws[:, 6:])
    assert torch.allclose(out[:, 3:6] - ws[:, 3:6], 2.5 * d.vector.expand(2, 3, -1), atol=1e-5)
    assert torch.equal(apply_edits(ws, [(d, 0.0)]), ws)
    assert torch.allclose(apply_edits(out, [(d, -2.5, (3, 5))]), ws, atol=1e-5)
    # A per-layer (W+) direction adds its own row on each layer of the range and nothing elsewhere.
    v = torch.randn(teacher.num_ws, teacher.w_dim)
    out = apply_edits(ws, [(Direction("plus", v, (2, 4)), -1.0)])
    assert torch.equal(out[:, 5:], ws[:, 5:]) and torch.equal(out[:, :2], ws[:, :2])
    assert torch.allclose(out[0, 2:5], ws[0, 2:5] - v[2:5])

    # In the session, +α then −α gives back bit-identical ws, whatever rounding the arithmetic did on the way.
    s = EditSession(teacher, dirs, prepare=False)
    s.set_seed(7)
    base = s.ws().clone()
    s.set_alpha(d.name, 1.7)
    s.set_layers(d.name, "middle")
    s.set_alpha(dirs[1].name, -0.3)
    assert not torch.equal(s.ws(), base)
    edited = s.ws()
    lo, hi = layer_groups(teacher.num_ws)["middle"]
    assert torch.equal(edited[:, :lo], apply_edits(base, [(dirs[1], -0.3)])[:, :lo])
    s.nudge(dirs[1].name, 0.3)
    s.nudge(d.name, -1.7)
    assert torch.equal(s.ws(), base)
    assert s.state.alphas == {}


def test_sefa_orthonormal_and_top_direction_moves_the_image(teacher, student, dirs):
    for dset in (dirs, sefa(teacher, layers=(3, 6), num=4), sefa(student, num=4)):
        V = torch.stack([d.vector for d in dset])
        assert torch.allclose(V @ V.T, torch.eye(len(V)), atol=1e-5)
        evs = [d.info["eigenvalue"] for d in dset]
        assert evs == sorted(evs, reverse=True) and evs[0] > evs[-1]
        assert all(d.slider[0] < 0 < d.slider[1] for d in dset)
    assert sefa(teacher, layers=(3, 6), num=2)[0].layers == (3, 6)
    # Deterministic: same model, same file contents.
    assert torch.equal(sefa(teacher, num=3)[0].vector, dirs[0].vector)

    # Measured: the top direction changes the image more than random unit directions moved as far.
    ws = teacher.mapping(seeds_to_z(range(4), teacher.z_dim), psi=0.7)
    top = _image_change(teacher, ws, [(dirs[0], 3.0)])
    gen = torch.Generator().manual_seed(0)
    rand = []
    for _ in range(5):
        r = torch.randn(teacher.w_dim, generator=gen)
        rand.append(_image_change(teacher, ws, [(Direction("r", r / r.norm(), (0, teacher.num_ws - 1)), 3.0)]))
    assert top > 1.5 * max(rand), (top, rand)


def test_ganspace_components(teacher):
    pcs = ganspace(teacher, num=5, samples=4000)
    V = torch.stack([d.vector for d in pcs])
    assert torch.allclose(V @ V.T, torch.eye(5), atol=1e-5)
    stds = [d.info["std"] for d in pcs]
    assert stds == sorted(stds, reverse=True)
    # On fresh samples, the variance along each component is as recorded and beats a random direction's.
    w = sample_w(teacher, 4000, seed=123, progress=False)
    proj = (w - w.mean(0)) @ V.T
    assert torch.allclose(proj.std(0), torch.tensor(stds), rtol=0.1)
    r = torch.randn(teacher.w_dim, generator=torch.Generator().manual_seed(1))
    assert ((w - w.mean(0)) @ (r / r.norm())).std() < 0.9 * stds[0]
    assert pcs[0].slider == pytest.approx((-3 * stds[0], 3 * stds[0]), abs=1e-3)


def test_fit_direction_from_labels(teacher):
    w = sample_w(teacher, 1500, seed=5, progress=False)
    hidden = torch.randn(teacher.w_dim, generator=torch.Generator().manual_seed(2))
    hidden /= hidden.norm()
    labels = ((w - w.mean(0)) @ hidden > 0).long()
    d = fit_direction(w, labels, "hidden")
    assert d.vector.norm() == pytest.approx(1, abs=1e-5)
    assert float(d.vector @ hidden) > 0.7 and d.info["train_accuracy"] > 0.95
    # Per-layer fit on W+ latents: zero outside its layers, still pointing at the labelled 1s.
    ws = w[:, None].repeat(1, teacher.num_ws, 1)
    d2 = fit_direction(ws, labels, "hidden+", per_layer=True, layers=(2, 4))
    assert d2.vector.shape == (teacher.num_ws, teacher.w_dim) and d2.layers == (2, 4)
    assert d2.vector[:2].abs().max() == 0 and d2.vector[5:].abs().max() == 0
    assert float(d2.vector[2:5].mean(0) @ hidden) > 0.3
    with pytest.raises(UserError, match="both kinds"):
        fit_direction(w[:10], torch.ones(10), "x")
    with pytest.raises(UserError, match="labels"):
        fit_direction(w[:10], torch.ones(9), "x")


def test_direction_files(tmp_path, teacher, rosinality_pt, dirs):
    dset = DirectionSet.for_model(teacher, list(dirs)[:3])
    plus = torch.randn(teacher.num_ws, teacher.w_dim)
    dset.add(Direction("plus", plus, (1, 8), (-2.0, 5.0), "import", {"source": "x.npy"}))
    dset.rename("sefa1", "smile")
    with pytest.raises(UserError, match="already exists"):
        dset.rename("sefa0", "smile")
    p = dset.save(tmp_path / "dirs.npz")
    back = load_directions(p, teacher)
    assert back.names == ["sefa0", "smile", "sefa2", "plus"] and back.w_space_id == dset.w_space_id
    for a, b in zip(dset, back):
        assert torch.equal(a.vector, b.vector)
        assert (a.name, a.layers, a.slider, a.method) == (b.name, b.layers, b.slider, b.method)
    assert back["smile"].info["eigenvalue"] == pytest.approx(dirs[1].info["eigenvalue"])
    assert back["plus"].per_layer and back["plus"].info == {"source": "x.npy"}

    other = engine.load_generator(rosinality_pt)
    with pytest.raises(UserError, match="made for another model"):
        load_directions(p, other)
    with pytest.raises(UserError, match="made for another model"):
        EditSession(other, p, prepare=False)
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a direction file"):
        load_directions(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="outside"):
        dset.add(Direction("far", torch.zeros(teacher.w_dim), (0, teacher.num_ws)))

    # InterFaceGAN-style imports: a w vector (.npy), a [1, num_ws, w_dim] W+ array, a dict of tensors (.pt).
    v = np.random.RandomState(0).randn(1, teacher.w_dim).astype(np.float32)
    np.save(tmp_path / "smile.npy", v)
    (d,) = import_direction_file(tmp_path / "smile.npy", teacher, layers=(0, 4))
    assert d.name == "smile" and d.layers == (0, 4) and torch.equal(d.vector, torch.from_numpy(v[0]))
    np.save(tmp_path / "wplus.npy", np.zeros((1, teacher.num_ws, teacher.w_dim), np.float32))
    assert import_direction_file(tmp_path / "wplus.npy", teacher)[0].per_layer
    torch.save({"age": torch.ones(teacher.w_dim), "pose": torch.zeros(teacher.w_dim)}, tmp_path / "b.pt")
    assert [x.name for x in import_direction_file(tmp_path / "b.pt", teacher)] == ["age", "pose"]
    np.save(tmp_path / "short.npy", np.zeros(100, np.float32))
    with pytest.raises(UserError, match="expected"):
        import_direction_file(tmp_path / "short.npy", teacher)
    # A .pt that would run code on load is refused, and nothing runs.
    marker = tmp_path / "RAN"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(UserError, match="not a direction vector file"):
        import_direction_file(tmp_path / "evil.pt", teacher)
    assert not marker.exists()


def test_session_undo_redo_mixing_truncation(teacher, dirs):
    s = EditSession(teacher, dirs, prepare=False)
    s.set_seed(1)
    base = s.ws().clone()
    src = teacher.mapping(seeds_to_z([2], teacher.z_dim))
    assert s.set_mix(2, (3, 6))
    mixed = s.ws()
    assert torch.equal(mixed[:, 3:7], src[:, 3:7])
    assert torch.equal(mixed[:, :3], base[:, :3]) and torch.equal(mixed[:, 7:], base[:, 7:])
    assert s.set_psi(0.5)
    assert torch.allclose(s.ws(), teacher.mapping.truncate(mixed, 0.5), atol=1e-6)
    assert not s.set_psi(0.5)  # no change, no history entry
    s.set_alpha("sefa0", 1.0)
    s.set_alpha("sefa0", 2.0)
    after = s.ws().clone()
    assert s.history()[1:] == ["seed 1", "mix 3-6 from seed 2", "ψ 0.50", "sefa0 +1.00", "sefa0 +2.00"]

    states = []
    while s.can_undo:
        states.append(s.ws().clone())
        s.undo()
    assert not s.undo() and len(states) == 5
    while s.can_redo:
        s.redo()
    assert torch.equal(s.ws(), after) and not s.redo()
    s.undo()
    s.undo()
    assert torch.equal(s.ws(), states[2])
    s.set_alpha("sefa1", -1.0)  # a new change drops the redo branch
    assert not s.can_redo and s.undo_text == "sefa1 -1.00"

    # A slider drag with merge=True is one undo step.
    n = len(s.history())
    for a in np.linspace(0.1, 2.0, 10):
        s.set_alpha("sefa2", a, merge=True)
    assert len(s.history()) == n + 1 and s.alpha("sefa2") == pytest.approx(2.0)
    s.undo()
    assert s.alpha("sefa2") == 0

    assert s.reset()
    assert torch.equal(s.ws(), base) and s.state.mix is None and s.state.psi == 1.0
    s.undo()
    assert s.alpha("sefa1") == -1.0 and s.state.mix is not None

    # Renaming a direction keeps its amounts, in the current state and in the history.
    s.rename_direction("sefa1", "smile")
    assert s.alpha("smile") == -1.0
    s.undo()
    s.redo()
    assert s.alpha("smile") == -1.0 and "sefa1" not in s.directions
    with pytest.raises(UserError, match="no direction named"):
        s.set_alpha("sefa1", 1.0)

    # A group of changes is one undo step; a drag right after it does not merge into it.
    before, last = s.ws().clone(), s.undo_text
    with s.group("two sliders"):
        s.set_alpha("smile", 0.5)
        with s.group("inner"):
            s.set_alpha("sefa2", 1.5)
    grouped = s.ws().clone()
    assert s.history()[-2:] == [last, "two sliders"] and s.undo_text == "two sliders"
    n = len(s.history())
    s.set_alpha("sefa2", 1.0, merge=True)
    assert len(s.history()) == n + 1
    s.undo()
    assert torch.equal(s.ws(), grouped)
    s.undo()
    assert torch.equal(s.ws(), before) and s.alpha("sefa2") == 0
    s.redo()
    assert torch.equal(s.ws(), grouped)


def test_session_renders_teacher_and_student_with_cache(teacher, student, dirs):
    s = EditSession({"student": student, "teacher": teacher}, dirs)
    s.set_seed(4)
    s.set_alpha("sefa0", 2.0)
    f = s.render()
    assert set(f.images) == {"student", "teacher"} and s.render_counts == {"student": 1, "teacher": 1}
    with torch.inference_mode():
        for name, G in (("student", student), ("teacher", teacher)):
            ref = to_uint8(G.synthesis(s.ws()))[0]
            assert np.abs(f.images[name].astype(int) - ref).max() <= 1
    assert f.side_by_side().shape == (64, 64 * 2 + 4, 3)
    # Nothing changed: no network runs. Back to the same ws via undo + redo: still none.
    f2 = s.render()
    s.undo()
    s.redo()
    f3 = s.render()
    assert s.render_counts == {"student": 1, "teacher": 1} and f2.ms == f3.ms == {"student": 0.0, "teacher": 0.0}
    assert f3.images["teacher"] is f.images["teacher"] and not f3.images["teacher"].flags.writeable
    s.set_alpha("sefa0", 1.0)
    s.render("student")
    assert s.render_counts == {"student": 2, "teacher": 1}
    s.close()


def test_session_tells_observers_and_post_processes(teacher, student):
    """Events (no Qt) are what the editor's parts follow; the post-process is how a photo gets its face back."""
    s = EditSession({"main": student, "teacher": teacher}, sefa(teacher, num=3))
    seen = []
    s.events.connect("changed", lambda st: seen.append((dict(st.alphas), st.base_info.get("seed"))))
    s.events.connect("directions", lambda d: seen.append(list(d.names)))
    s.set_seed(3)
    s.set_alpha("sefa0", 1.0)
    s.set_alpha("sefa0", 1.0)  # nothing changes: nothing is announced
    with s.group("two sliders"):  # announced once, when the group ends
        s.set_alpha("sefa1", 0.5)
        s.set_alpha("sefa2", -0.5)
    s.undo()
    s.rename_direction("sefa0", "smile")
    with s.batch():  # separate undo steps, announced once
        s.set_psi(0.5)
        s.set_seed(4)
    assert s.history()[-3:] == ["sefa0 +1.00", "ψ 0.50", "seed 4"]
    assert seen == [({}, 3), ({"sefa0": 1.0}, 3), ({"sefa0": 1.0, "sefa1": 0.5, "sefa2": -0.5}, 3),
                    ({"sefa0": 1.0}, 3), ["smile", "sefa1", "sefa2"], ({"smile": 1.0}, 4)]

    frames = []
    s.events.connect("frame", frames.append)
    s.set_postprocess(lambda f: {"mirrored": f.main[:, ::-1]})
    f = s.wait_for_frame(s.request_render(), timeout=30)
    assert s.wait_idle(30) and frames == [f]
    assert f.main is f.images["main"] and f.teacher is f.images["teacher"] and f.main_ms == f.ms["main"] > 0
    assert np.array_equal(f.extra["mirrored"], f.main[:, ::-1])
    s.render_on_change(True, "main")  # as the editor does: every announced change asks for a frame by itself
    s.set_alpha("sefa1", 1.5)
    assert s.wait_for_frame(s.version, timeout=30).version == s.version
    assert s.wait_idle(30) and len(frames) == 2 and set(frames[-1].images) == {"main"}
    s.render_on_change(False)
    s.set_alpha("sefa1", 0.0)
    assert s.wait_idle(30) and len(frames) == 2
    # The current edits (not ψ, not the base) on another latent: what the webcam's frames get.
    ws = teacher.mapping(seeds_to_z([8], teacher.z_dim))
    assert torch.equal(s.edit_latent(ws), apply_edits(ws, [(s.directions["smile"], 1.0)]))

    # Carried over to other models: the same state and post-process, its history starting there, versions going on.
    t = s.with_models({"main": student})
    assert torch.equal(t.ws(), s.ws()) and not t.can_undo and t.version > s.version
    assert "mirrored" in t.render().extra and "teacher" not in t.render().images
    assert s.can_undo
    s.clear_history()
    assert not s.can_undo and s.history() == ["start"] and s.alpha("smile") == 1.0
    s.close()
    t.close()


def test_request_render_coalesces_and_never_blocks(teacher, student, dirs):
    entered, release = threading.Event(), threading.Event()
    frames = []

    def blocker(frame):
        entered.set()
        release.wait(10)

    with EditSession({"student": student, "teacher": teacher}, dirs) as s:
        s.set_seed(5)
        first = s.request_render(blocker)
        assert entered.wait(10)  # the worker is now busy (inside the callback)
        counts = dict(s.render_counts)
        for i in range(10):
            s.set_alpha("sefa0", 0.2 * (i + 1), merge=True)
            s.request_render(frames.append)
            assert s.latest_frame().version == first  # answers at once with the last finished frame
        release.set()
        assert s.wait_idle(10)
        # Ten requests, one render of the newest state; every callback got that frame.
        assert {k: v - counts[k] for k, v in s.render_counts.items()} == {"student": 1, "teacher": 1}
        assert len(frames) == 10 and all(f is frames[-1] for f in frames)
        assert frames[-1].version == s.version and torch.equal(frames[-1].ws, s.ws())
        assert s.wait_for_frame(timeout=1) is frames[-1]
        # A failure reaches the caller in the frame; the worker keeps serving.
        s.request_render(frames.append, which="nope")
        s.wait_idle(10)
        assert "no model named" in frames[-1].error
        s.set_alpha("sefa0", -1.0)
        v = s.request_render()
        assert s.wait_for_frame(v, timeout=10).error is None


def test_session_latent_files(tmp_path, teacher, rosinality_pt, dirs):
    s = EditSession(teacher, dirs, prepare=False)
    s.set_seed(9)
    s.set_psi(0.7)
    s.set_alpha("sefa2", -1.5)
    s.set_layers("sefa2", (0, 3))
    p = s.save_latent(tmp_path / "edited.npz")
    ws, meta = load_latent(p, teacher)
    assert torch.equal(ws, s.ws())
    assert meta["edits"] == {"sefa2": {"alpha": -1.5, "layers": [0, 3]}} and meta["base"] == {"seed": 9}
    t = EditSession(teacher, dirs, prepare=False)
    t.load_latent(p)
    assert torch.equal(t.ws(), ws) and t.state.base_info["latent"] == str(p)
    other = EditSession(engine.load_generator(rosinality_pt), prepare=False)
    with pytest.raises(UserError, match="made for another model"):
        other.load_latent(p)
    with pytest.raises(UserError, match="W\\+"):
        s.set_base(torch.zeros(3, teacher.w_dim))


def test_parse_edit():
    assert parse_edit("smile=+2.0") == ("smile", 2.0, None)
    assert parse_edit("a=b=-1.5@4-7") == ("a=b", -1.5, "4-7")
    with pytest.raises(UserError, match="NAME=AMOUNT"):
        parse_edit("smile")
    ws = torch.zeros(1, 10, 4)
    src = torch.ones(1, 10, 4)
    out = style_mix(ws, src, (2, 5))
    assert out[0, :, 0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]


def test_cli_directions_generate_sweep(tmp_path, nvidia_pkl, rosinality_pt, teacher, student):
    d = tmp_path / "dirs.npz"
    r = run_main("directions", "--model", nvidia_pkl, "--method", "sefa", "--layers", "0-5", "--num", "4",
                 "--names", "smile", "--out", d)
    assert r.returncode == 0, r.stderr
    r = run_main("directions", "--model", nvidia_pkl, "--method", "ganspace", "--num", "2", "--samples", "2000",
                 "--append", "--rename", "pc1=light", "--out", d)
    assert r.returncode == 0, r.stderr
    dset = load_directions(d, teacher)
    assert dset.names == ["smile", "sefa1", "sefa2", "sefa3", "pc0", "light"]
    assert dset["smile"].layers == (0, 5) and dset["light"].method == "ganspace"
    assert torch.equal(dset["smile"].vector, sefa(teacher, layers=(0, 5), num=1)[0].vector)

    # generate: a latent file edited on the command line matches the same edit done in the engine.
    lat = save_latent(tmp_path / "l.npz", teacher.mapping(seeds_to_z([3], teacher.z_dim), psi=0.7), teacher)
    out = tmp_path / "edited.png"
    r = run_main("generate", "--model", nvidia_pkl, "--latent", lat, "--directions", d, "--edit", "smile=+2.0",
                 "--edit", "light=-1@3-4", "--out", out)
    assert r.returncode == 0, r.stderr
    ws, _ = load_latent(lat, teacher)
    ws = apply_edits(ws, [(dset["smile"], 2.0), (dset["light"], -1.0, (3, 4))])
    ref = to_uint8(teacher.synthesis(ws))[0]
    got = np.asarray(Image.open(out))
    assert np.abs(got.astype(int) - ref).max() <= 1
    assert np.abs(got.astype(int) - to_uint8(teacher.synthesis(load_latent(lat)[0]))[0]).max() > 10
    r = run_main("generate", "--model", nvidia_pkl, "--seeds", "1", "--directions", d, "--edit", "nope=1",
                 "--out", out)
    assert r.returncode == 1 and "no direction named 'nope'" in r.stderr

    # sweep: GIF and mp4 read back with the requested number of frames; the mp4 shows student | teacher.
    gif = tmp_path / "sweep.gif"
    r = run_main("sweep", "--model", nvidia_pkl, "--seed", "3", "--directions", d, "--edit", "smile",
                 "--range", "-3:3", "--frames", "12", "--out", gif)
    assert r.returncode == 0, r.stderr
    with Image.open(gif) as im:
        assert im.n_frames == 12 and im.size == (64, 64)
    sp = engine.save_generator(student, tmp_path / "student.safetensors")
    mp4 = tmp_path / "sweep.mp4"
    r = run_main("sweep", "--model", sp, "--compare", nvidia_pkl, "--latent", lat, "--directions", d, "--edit",
                 "light", "--frames", "10", "--bounce", "--out", mp4)
    assert r.returncode == 0, r.stderr
    cap = cv2.VideoCapture(str(mp4))
    n, shape = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, shape = n + 1, frame.shape
    cap.release()
    assert n == 10 and shape == (64, 64 * 2, 3)

    # Directions of another model are refused with a clear message.
    r = run_main("sweep", "--model", rosinality_pt, "--seed", "1", "--directions", d, "--edit", "smile",
                 "--out", tmp_path / "x.gif")
    assert r.returncode == 1 and "made for another model" in r.stderr and "Traceback" not in r.stderr


def test_renderer_stand_in_keeps_the_models_fast_path():
    """A stand-in (a style) renders in the loaded model's place; switching back finds the loaded model's fast path
    again instead of building it anew, and every frame comes from the model set at that moment."""
    import copy

    from engine.edit.renderer import Renderer

    G = engine.load_generator()
    S = copy.deepcopy(G)
    with torch.no_grad():
        for name, p in S.synthesis.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05)
    r = Renderer({"main": G}, fast="torch")
    try:
        ws = G.mapping(seeds_to_z([0], G.z_dim))
        base = r.render(ws, 1).main
        fast = r._fast["main"]
        assert fast is not None and r.runtimes["main"] != "pytorch"
        r.set_model("main", S)
        frame = r.render(ws, 2)
        styled = frame.main
        assert frame.generators["main"] is S  # what a post-process pairs its "before" render with
        assert np.abs(styled.astype(int) - base.astype(int)).mean() > 1
        r.set_model("main", G)
        assert r._fast["main"] is fast  # the same object: nothing was rebuilt
        assert np.array_equal(r.render(ws, 3).main, base)
    finally:
        r.close()
