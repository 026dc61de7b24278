"""The bundled demo models and the recipe that made them."""

import torch

import engine
from engine import assets
from engine.io.directions import load_directions
from engine.io.latents import w_space_id
from engine.models.encoder import check_compatible, load_encoder


def test_bundled_models_belong_together():
    S, T = engine.load_generator(), engine.load_teacher()
    assert S.is_student and not T.is_student
    assert (S.resolution, S.num_ws) == (T.resolution, T.num_ws) == (64, 10)
    assert w_space_id(S) == w_space_id(T)  # the student carries its teacher's mapping
    dirs = load_directions(assets.DIRECTIONS, S)
    # Sliders named by what they measurably do (training/recipe.py's directions stage), with that record kept.
    assert {"smile", "mouth open", "eyes open", "head turn", "nod", "lighting"} <= set(dirs.names)
    assert all(d.info["held_out"][d.info["attribute"]]["same_way"] >= 0.9 for d in dirs)
    check_compatible(load_encoder(assets.ENCODER), S)
    for f in (assets.TEACHER, assets.STUDENT, assets.ENCODER, assets.DIRECTIONS):
        assert f.stat().st_size <= 25e6, f


def test_bundled_student_is_close_to_its_teacher():
    S, T = engine.load_generator(), engine.load_teacher()
    z = torch.from_numpy(__import__("numpy").random.RandomState(1).randn(8, T.z_dim)).float()
    with torch.no_grad():
        ws = T.mapping(z)
        t, s = T.synthesis(ws), S.synthesis(ws)
        other = T.synthesis(ws.roll(1, dims=0))  # a different face
    err, baseline = (s - t).abs().mean(), (other - t).abs().mean()
    assert err < 0.5 * baseline, (err, baseline)
    assert t.std() > 0.2  # not a constant image


def test_recipe_teacher_stage_runs_and_resumes(tmp_path, capsys):
    from training.recipe import FaceSource, main

    src = FaceSource()
    img = src(torch.randn(2, 100))
    assert img.shape == (2, 3, 64, 64) and -1 <= img.min() and img.max() <= 1
    out = tmp_path / "teacher"
    # Regression first, then the adversarial polish from step 1 on (full weight at once).
    args = ["teacher", "--out", str(out), "--steps", "2", "--batch", "2", "--save-every", "1", "--threads", "1",
            "--adv-start", "1", "--adv-ramp", "1"]
    assert main(args) == 0
    G = engine.load_generator(out / "teacher.safetensors")
    assert G.cfg.info["steps"] == 2 and G.z_dim == 100
    d_before = torch.load(out / "checkpoint.pt", weights_only=True)["D"]
    args[4] = "3"
    capsys.readouterr()
    assert main(args) == 0
    assert engine.load_generator(out / "teacher.safetensors").cfg.info["steps"] == 3
    assert "note: resuming" not in capsys.readouterr().err  # longer, otherwise the same: nothing to say
    d_after = torch.load(out / "checkpoint.pt", weights_only=True)["D"]
    # the discriminator was resumed and trained on, not started afresh
    moved = [(d_after[k] - d_before[k]).abs().max() for k in d_before if d_before[k].is_floating_point()]
    assert 0 < max(moved) < 0.5
    import csv

    rows = list(csv.DictReader((out / "losses.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["adv_weight"]) == 0 and float(rows[0]["g_adv"]) == 0
    assert all(float(r["adv_weight"]) == 0.5 and float(r["g_adv"]) > 0 for r in rows[1:])
    # the polish keeps the W space put: the mapping's learning rate drops from ×30 to ×1
    groups = torch.load(out / "checkpoint.pt", weights_only=True)["opt"]["param_groups"]
    assert [g["lr"] for g in groups] == [2e-3, 2e-3]

    # Resumed with another ramp than the run was started with: it goes on, and says so.
    args[4], args[-1] = "4", "3"
    assert main(args) == 0
    assert "note: resuming with settings that differ from the run's: adv_ramp 1 → 3" in capsys.readouterr().err


def test_recipe_puts_signal_handlers_back(tmp_path):
    import signal

    from training.recipe import main

    before = signal.getsignal(signal.SIGINT)
    assert main(["teacher", "--out", str(tmp_path / "t"), "--steps", "1", "--batch", "2", "--threads", "1"]) == 0
    assert signal.getsignal(signal.SIGINT) is before


def test_samples_grid_is_labelled_with_fid(tmp_path):
    """`training.recipe samples` re-renders the model card's grid with each row's FID written beside it."""
    import cv2

    from training.recipe import main

    out = tmp_path / "samples.png"
    assert main(["samples", "--out", str(out), "--grid-seeds", "3"]) == 0
    img = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    tile, pad = 64, 2
    assert img.shape == (3 * (tile + pad) + pad, 96 + 3 * (tile + pad) + pad)
    strip = img[:, :96]
    for row in range(3):  # a label beside each row: source, teacher, student
        band = strip[pad + row * (tile + pad): pad + row * (tile + pad) + tile]
        assert (band < 128).sum() > 20, row
    assert (img[:, 96:] < 250).mean() > 0.5  # and faces beside them
    # the teacher's label carries its FID: more ink than the bare name
    from training.recipe import FaceSource, samples_grid

    S, T = engine.load_generator(), engine.load_teacher()
    fid = {"teacher_vs_data": 63.2, "student_vs_data": 62.5, "student_vs_teacher": 11.0}
    ink = [(samples_grid(T, S, FaceSource(), 2, f)[pad + tile + pad: 2 * (tile + pad), :96] < 128).sum()
           for f in (None, fid)]
    assert ink[1] > 1.5 * ink[0], ink


def test_the_recipe_continues_the_bundled_teacher(tmp_path):
    """The teacher's regression goes on from the bundled file on a fresh machine (MODEL_CARD.md): `--init` continues
    its step count and its weights, not a fresh start."""
    from training.recipe import main

    T = engine.load_teacher()
    step = int(T.cfg.info["steps"])
    assert not T.is_student and step >= 12_987
    out = tmp_path / "teacher"
    assert main(["teacher", "--out", str(out), "--init", str(assets.TEACHER), "--steps", str(step + 1), "--batch",
                 "2", "--adv-weight", "0", "--threads", "1"]) == 0
    G = engine.load_generator(out / "teacher.safetensors")
    assert G.cfg.info["steps"] == step + 1
    z = torch.randn(2, T.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # one small step on from the committed weights
        a, b = T.synthesis(T.mapping(z)), G.synthesis(G.mapping(z))
    assert (a - b).abs().mean() < 0.05


def test_a_warm_started_student_keeps_its_ema(tmp_path):
    """`recipe student --init` continues the bundled student: its exported EMA copy moves by EMA steps, not by the
    raw generator's (an EMA ramp-up meant for a new student would make it the raw generator)."""
    import json

    from training.recipe import main

    # A teacher given as --init: one line, and no run folder left behind.
    assert main(["student", "--teacher", str(assets.TEACHER), "--init", str(assets.TEACHER), "--out",
                 str(tmp_path / "wrong")]) == 1
    assert not (tmp_path / "wrong").exists()

    S = engine.load_generator()
    out = tmp_path / "student"
    assert main(["student", "--teacher", str(assets.TEACHER), "--init", str(assets.STUDENT), "--out", str(out),
                 "--steps", "2", "--batch", "2", "--adv-start", "100", "--eval-every", "0", "--threads", "1"]) == 0
    ema = engine.load_generator(out / "student.safetensors")
    raw = torch.load(out / "checkpoint.pt", weights_only=True)["student"]
    z = torch.randn(2, S.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = S.mapping(z)
        before, after = S.synthesis(ws, noise_mode="const"), ema.synthesis(ws, noise_mode="const")
        S.load_state_dict(raw)
        moved = S.synthesis(ws, noise_mode="const")
    ema_shift, raw_shift = (after - before).abs().mean(), (moved - before).abs().mean()
    assert raw_shift > 0.005, "two steps at the full rate move the raw generator"
    assert ema_shift < raw_shift / 100, (ema_shift, raw_shift)
    assert json.loads((out / "config.json").read_text())["distill"]["ema_rampup"] is None
    # Resumed without --init, the run keeps the EMA it began with.
    assert main(["student", "--teacher", str(assets.TEACHER), "--out", str(out), "--steps", "3", "--batch", "2",
                 "--adv-start", "100", "--eval-every", "0", "--threads", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["distill"]["ema_rampup"] is None
