"""The desktop editor, driven through its real widgets (offscreen Qt) on the fixture teacher and a student built from
it: sliders, seeds, undo, photos (MediaPipe alignment, encoder, paste-back), the camera path (a video file standing in
for a webcam), the export dialog and `main.py app --screenshot`."""

import gc
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, run_main

pytest.importorskip("pytestqt")
from PySide6.QtCore import QSettings  # noqa: E402

import engine  # noqa: E402
from app.editor import Source  # noqa: E402
from engine.faces import load_image  # noqa: E402

TIMEOUT = 60_000  # ms; generous: two cores shared with other jobs


@pytest.fixture(autouse=True)
def _collect_on_the_ui_thread():
    """Earlier tests' windows die in reference cycles. Left to a collection that a worker thread's allocation sets off,
    their Qt objects would be deleted off the UI thread (a segfault, seen once in make test): collect them here."""
    gc.collect()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, nvidia_pkl):
    """teacher + student (with the teacher's mapping) + an encoder and SeFa directions beside them, as the app finds
    them next to a model file."""
    from engine.edit import sefa
    from engine.io.directions import save_directions
    from engine.models.encoder import build_encoder, save_encoder
    from engine.models.generator import Generator

    d = tmp_path_factory.mktemp("models")
    T = engine.load_generator(nvidia_pkl)
    torch.manual_seed(0)
    S = Generator(T.cfg.student())
    S.mapping.load_state_dict(T.mapping.state_dict())
    engine.save_generator(T, d / "teacher.safetensors")
    engine.save_generator(S, d / "student.safetensors", info={"teacher": "teacher.safetensors"})
    S = engine.load_generator(d / "student.safetensors")
    save_encoder(build_encoder(S, pretrained=False), d / "encoder.safetensors")
    save_directions(d / "directions.npz", sefa(S, num=4))
    return d


@pytest.fixture
def window(qtbot, tmp_path, model_dir):
    from app.main_window import MainWindow
    from app.theme import apply_dark_theme

    apply_dark_theme(qtbot_app())
    win = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    with qtbot.waitSignal(win.modelLoaded, timeout=TIMEOUT):
        win.open_model(str(model_dir / "student.safetensors"))
    qtbot.waitUntil(lambda: win.seeds.history.seeds() == [0], timeout=TIMEOUT)  # seed 0's frame is on screen
    yield win
    win.close()


def qtbot_app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance()


def shown(win) -> np.ndarray:
    """The main image on screen (the last pane)."""
    return win.view.panes()[-1].rgb.copy()


def wait_for_change(qtbot, win, before: np.ndarray):
    qtbot.waitUntil(lambda: win.view.panes() and not np.array_equal(shown(win), before), timeout=TIMEOUT)


def test_model_loads_with_teacher_directions_and_encoder(qtbot, window):
    from engine.render import to_uint8

    m = window.editor.models
    assert m.G.is_student and m.teacher is not None and not m.teacher.is_student
    assert m.encoder is not None and len(m.directions) == 4
    assert list(window.edits.panel.rows) == ["sefa0", "sefa1", "sefa2", "sefa3"]
    assert shown(window).shape == (64, 64, 3)
    assert window.seeds.history.seeds() == [0]
    # side by side: the teacher's render of the same W+ appears beside the student's
    window.model.panel.side_by_side.setChecked(True)
    qtbot.waitUntil(lambda: len(window.view.panes()) == 2, timeout=TIMEOUT)
    with torch.no_grad():
        expect = to_uint8(m.teacher.synthesis(window.editor.session.compute_ws()))[0]
    assert np.array_equal(window.view.panes()[0].rgb, expect)
    assert "Teacher" in window.view.panes()[0].title


def test_slider_changes_pixels_and_undo_restores(qtbot, window):
    before = shown(window)
    row = window.edits.panel.rows["sefa0"]
    row.slider.setValue(row.slider.maximum())
    wait_for_change(qtbot, window, before)
    assert window.editor.session.state.alphas["sefa0"] == pytest.approx(row._hi)
    after = shown(window)
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 1

    window.undo()
    qtbot.waitUntil(lambda: np.array_equal(shown(window), before), timeout=TIMEOUT)
    assert row.alpha() == 0  # the widget follows the session
    window.redo()
    qtbot.waitUntil(lambda: np.array_equal(shown(window), after), timeout=TIMEOUT)
    assert row.alpha() == pytest.approx(row._hi)

    # the layer range narrows the edit: only W+ layers 0-1 move, so the image changes again
    row.last.setValue(1)
    wait_for_change(qtbot, window, after)
    assert window.editor.session.edit_layers("sefa0") == (0, 1)
    # reset puts the seed's own image back
    row.reset.click()
    qtbot.waitUntil(lambda: np.array_equal(shown(window), before), timeout=TIMEOUT)


def test_reset_all_is_one_undo_step(qtbot, window):
    rows = list(window.edits.panel.rows.values())[:2]
    for row in rows:
        before = shown(window)
        row.slider.setValue(row.slider.maximum())
        wait_for_change(qtbot, window, before)
    edited = shown(window)
    window.reset_all()
    wait_for_change(qtbot, window, edited)
    assert all(r.alpha() == 0 for r in rows)
    window.undo()  # both sliders come back at once
    qtbot.waitUntil(lambda: np.array_equal(shown(window), edited), timeout=TIMEOUT)
    assert all(r.alpha() == pytest.approx(r._hi) for r in rows)
    window.reset_all()


def test_seed_change_rerenders_and_fills_history(qtbot, window):
    before = shown(window)
    window.seeds.panel.seed.setValue(7)
    wait_for_change(qtbot, window, before)
    qtbot.waitUntil(lambda: window.seeds.history.seeds() == [0, 7], timeout=TIMEOUT)
    from engine.models.generator import seeds_to_z
    from engine.render import to_uint8

    G = window.editor.models.G
    with torch.no_grad():
        expect = to_uint8(G.synthesis(G.mapping(seeds_to_z([7], G.z_dim), psi=0.7)))[0]
    # The editor may render through a verified fast runtime (engine.runtime.fast_synthesis), which reproduces
    # G.synthesis up to float rounding, not bit for bit.
    from engine.render import psnr

    assert psnr(shown(window) / 127.5 - 1, expect / 127.5 - 1) > 40
    assert np.abs(shown(window).astype(int) - expect.astype(int)).max() <= 8
    # ψ slider re-renders too; clicking a history thumbnail goes back to that seed
    seven = shown(window)
    window.seeds.panel.psi.setValue(30)
    wait_for_change(qtbot, window, seven)
    window.seeds.history.seedChosen.emit(0)
    qtbot.waitUntil(lambda: window.seeds.panel.seed.value() == 0, timeout=TIMEOUT)
    window.undo()  # back to seed 7 at ψ 0.3
    qtbot.waitUntil(lambda: window.seeds.panel.seed.value() == 7, timeout=TIMEOUT)


def test_style_mixing_changes_pixels(qtbot, window):
    before = shown(window)
    window.edits.mix_panel.seed.setValue(3)
    window.edits.mix_panel.enabled.setChecked(True)
    wait_for_change(qtbot, window, before)
    st = window.editor.session.state
    assert st.mix is not None and st.mix.layers == window.edits.mix_panel.layers()
    window.edits.mix_panel.enabled.setChecked(False)
    qtbot.waitUntil(lambda: np.array_equal(shown(window), before), timeout=TIMEOUT)


def test_photo_is_aligned_inverted_and_pasted_back(qtbot, window, fixtures, tmp_path):
    path = fixtures / "images" / "astronaut.png"
    photo = load_image(path)
    with qtbot.waitSignal(window.photoReady, timeout=TIMEOUT):
        window.open_photo(str(path))
    panes = window.view.panes()
    assert [p.title for p in panes] == ["Original", "Edited"]
    assert np.array_equal(panes[0].rgb, photo)
    # Edit transfer (the default): with every slider at 0 the edited photo is the photo, bit for bit.
    assert window.photo.panel.mode.currentData() == "transfer"
    result = panes[1].rgb
    assert np.array_equal(result, photo)
    assert "1 face found" in window.photo.panel.info.text()

    # sliders edit the photo's latent; the edited photo follows, and only around the face
    row = window.edits.panel.rows["sefa0"]
    row.slider.setValue(row.slider.minimum())
    wait_for_change(qtbot, window, result)
    result = shown(window)
    diff = np.abs(result.astype(int) - photo.astype(int)).sum(-1)
    assert diff.max() > 0 and diff[:40, :40].max() == 0 and diff[-40:, -40:].max() == 0

    # regenerate: the generator's rendition is pasted in (the face is replaced, the corners are not)
    window.photo.panel.mode.setCurrentIndex(window.photo.panel.mode.findData("regenerate"))
    assert window.editor.edit_mode == "regenerate" and window.camera.panel.mode.currentData() == "regenerate"
    wait_for_change(qtbot, window, result)
    regen = shown(window)
    diff = np.abs(regen.astype(int) - photo.astype(int)).sum(-1)
    quad = window.editor.photo.aligned.quad
    cx, cy = quad.mean(0).astype(int)
    assert diff[cy - 20 : cy + 20, cx - 20 : cx + 20].mean() > 10
    assert diff[:40, :40].max() == 0 and diff[-40:, -40:].max() == 0

    # "Tune to photo": a copy of the generator tuned to the face renders it from then on
    window.photo.panel.tune_steps.setValue(10)
    window.photo.panel.tune.click()
    qtbot.waitUntil(lambda: "tuned 10 steps" in window.photo.panel.info.text(), timeout=TIMEOUT)
    assert window.editor.photo.tuned is not None
    wait_for_change(qtbot, window, regen)
    window.photo.panel.mode.setCurrentIndex(window.photo.panel.mode.findData("transfer"))
    # save the pasted result
    out = tmp_path / "result.png"
    window.photo.save_result(str(out))
    assert np.array_equal(load_image(out), shown(window))

    # refinement (projector) runs with progress and can be cancelled; the best codes so far are kept
    ws0 = window.editor.photo.ws.clone()
    window.photo.panel.steps.setValue(10)
    window.refine_photo(10)
    qtbot.waitUntil(lambda: not window.photo.panel.progress.isVisible(), timeout=TIMEOUT)
    assert not torch.equal(window.editor.photo.ws, ws0)

    # a photo without a face is a message, not a crash
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    window.open_photo(str(blank))
    qtbot.waitUntil(lambda: "no face" in window.photo.panel.info.text(), timeout=TIMEOUT)
    assert "no face" in window.view.toast_text()


def test_no_camera_gives_a_message(qtbot, window):
    window.start_camera(None)  # nothing found by the probe
    assert "No camera" in window.view.toast_text()
    assert window.camera.live is None and not window.camera.panel.start.isChecked()
    window.start_camera(7)  # an index with no device behind it
    qtbot.waitUntil(lambda: "no camera at index 7" in window.view.toast_text(), timeout=TIMEOUT)
    assert window.camera.live is None and not window.camera.panel.start.isChecked()
    assert window.editor.source is Source.SEED


def _make_video(path, fixtures, frames=24):
    a = load_image(fixtures / "images" / "astronaut.png")
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for i in range(frames):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        dx = 100 + int(20 * np.sin(i / 4))
        canvas[40:440, dx : dx + 400] = cv2.resize(a, (400, 400))
        w.write(np.ascontiguousarray(canvas[:, :, ::-1]))
    w.release()
    return path


def test_video_as_camera_live_edit_and_snapshot(qtbot, window, fixtures, tmp_path):
    video = _make_video(tmp_path / "cam.avi", fixtures)
    frames = []
    row = window.edits.panel.rows["sefa0"]
    row.slider.setValue(row.slider.minimum())  # transfer shows the camera's own face, so give it an edit to show
    window.open_paths([str(video)])  # drag & drop of a video starts it as the camera
    assert window.camera.live is not None
    window.camera.live.frame.connect(lambda lf, fps: frames.append(lf))
    qtbot.waitUntil(lambda: any(f.face for f in frames), timeout=TIMEOUT)
    lf = next(f for f in frames if f.face)
    assert lf.output.shape == (480, 640, 3) and not np.array_equal(lf.output, lf.frame)
    assert set(lf.timings) >= {"align", "encode", "render", "transfer"}  # the frame's own face, edited
    assert [p.title for p in window.view.panes()][0] == "Camera"
    with qtbot.waitSignal(window.photoReady, timeout=TIMEOUT):
        window.camera_snapshot()
    assert window.camera.live is None and window.editor.source is Source.PHOTO
    assert window.editor.photo.rgb.shape == (480, 640, 3)


def test_camera_lost_midstream_gives_a_message(qtbot, window, fixtures, tmp_path, monkeypatch):
    """A camera that stops delivering frames (unplugged) ends the live view with a message, not a crash."""
    import engine.live

    video = _make_video(tmp_path / "cam.avi", fixtures, frames=8)

    class Unplugged:
        """The capture of a camera that is pulled out after three frames."""

        def __init__(self, cap):
            self.cap, self.n = cap, 0

        def grab(self):
            self.n += 1
            return self.cap.grab() if self.n <= 3 else False

        def retrieve(self):
            return self.cap.retrieve()

        def release(self):
            self.cap.release()

    class FlakyCamera(engine.live.FrameSource):
        def __init__(self, source, **kw):
            super().__init__(source, **kw)
            self.is_file, self.max_failures = False, 3  # behave as a camera, not a looping file
            self.cap = Unplugged(self.cap)

    monkeypatch.setattr(engine.live, "FrameSource", FlakyCamera)
    window.start_camera(str(video))
    qtbot.waitUntil(lambda: "stopped sending frames" in window.view.toast_text(), timeout=TIMEOUT)
    qtbot.waitUntil(lambda: window.camera.live is None, timeout=TIMEOUT)
    assert not window.camera.panel.start.isChecked() and window.editor.source is Source.SEED


def test_export_dialog_writes_verified_files(qtbot, window, tmp_path):
    pytest.importorskip("onnxruntime")
    import copy

    from app.dialogs import ExportDialog

    # What the editor shows is what is exported: here a stand-in of the same W space (as the Style panel sets one).
    G = window.editor.models.G
    S = copy.deepcopy(G)
    with torch.no_grad():
        for name, p in S.synthesis.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05)
    window.editor.render_with(S)
    try:
        dlg = ExportDialog(window, window.editor)
        qtbot.addWidget(dlg)
        assert dlg.stylized and dlg.out_path.text().endswith("-stylized-export")
        for key, cb in dlg.formats.items():
            cb.setChecked(key == "onnx")
        out = tmp_path / "export"
        dlg.out_path.setText(str(out))
        dlg.show()
        dlg.run_button.click()
        qtbot.waitUntil(lambda: dlg.outcome is not None or "✗" in dlg.result.text() or dlg.run_button.isEnabled()
                        and dlg.result.text(), timeout=120_000)
    finally:
        window.editor.render_with(None)
    assert dlg.outcome is not None, dlg.result.text()
    m = dlg.outcome
    assert m["verification"]["passed"] and "verified" in dlg.result.text()
    assert (out / "synthesis.onnx").exists() and (out / "manifest.json").exists()
    assert m["directions"] is not None  # the slider set travels with the export
    ref = np.load(out / "reference.npz")
    with torch.no_grad():
        ws = torch.from_numpy(ref["ws"][:1])
        shown, base = S.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert np.abs(ref["image"][:1] - shown.numpy()).max() < 1e-3 < np.abs(ref["image"][:1] - base.numpy()).max()


def test_sweep_dialog_writes_a_gif(qtbot, window, tmp_path):
    from PIL import Image

    from app.dialogs import SweepDialog

    dlg = SweepDialog(window, window.editor, window.edits.names, str(tmp_path))
    qtbot.addWidget(dlg)
    dlg.frames.setValue(6)
    out = tmp_path / "sweep.gif"
    dlg.out_path.setText(str(out))
    dlg.run_button.click()
    qtbot.waitUntil(lambda: dlg.outcome is not None or "error" in dlg.result.text(), timeout=TIMEOUT)
    with Image.open(out) as im:
        assert im.n_frames == 6 and im.size == (64, 64)


def test_latent_round_trip(qtbot, window, tmp_path):
    row = window.edits.panel.rows["sefa1"]
    before = shown(window)
    row.slider.setValue(row.slider.maximum() // 2)
    wait_for_change(qtbot, window, before)
    edited = shown(window)
    path = tmp_path / "edited.npz"
    window.files.save_latent(str(path))
    window.set_seed(3)
    wait_for_change(qtbot, window, edited)
    window.open_npz(str(path))
    qtbot.waitUntil(lambda: np.array_equal(shown(window), edited), timeout=TIMEOUT)
    assert window.editor.source is Source.LATENT and row.alpha() == 0  # the file holds the edited W+ itself


def test_empty_state_and_bad_model(qtbot, tmp_path):
    from app.main_window import MainWindow

    win = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(win)
    win.show()
    assert win.view.is_empty_state() and not win.act_save_image.isEnabled()
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a model")
    with qtbot.waitSignal(win.modelFailed, timeout=TIMEOUT):
        win.open_model(str(bad))
    assert "could not open the model" in win.view.toast_text() and win.view.is_empty_state()
    win.close()


def test_screenshot_command_writes_png(tmp_path, model_dir):
    out = tmp_path / "shot.png"
    r = run_main("app", "--model", model_dir / "student.safetensors", "--screenshot", out, "--size", "1000x700",
                 "--side-by-side", timeout=300)
    assert r.returncode == 0, r.stderr
    img = load_image(out)
    assert img.shape == (700, 1000, 3)
    assert img.std() > 10  # a real window, not a blank grab


@pytest.mark.skipif(not shutil.which("xvfb-run"), reason="Xvfb is not installed (apt-get install xvfb)")
def test_real_window_under_xvfb(tmp_path, model_dir):
    out = tmp_path / "xvfb.png"
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["QT_QPA_PLATFORM"] = "xcb"
    r = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, str(ROOT / "main.py"), "app", "--model",
         str(model_dir / "student.safetensors"), "--screenshot", str(out), "--size", "1280x800"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    if r.returncode != 0 and "could not connect to display" in r.stderr + r.stdout:
        pytest.skip("Xvfb could not start here")
    assert r.returncode == 0, r.stderr
    assert load_image(out).shape == (800, 1280, 3)


def test_rename_and_save_directions(qtbot, window, tmp_path):
    from engine.io.directions import load_directions

    row = window.edits.panel.rows["sefa2"]
    row.slider.setValue(row.slider.maximum())
    qtbot.waitUntil(lambda: "sefa2" in window.editor.session.state.alphas, timeout=TIMEOUT)
    window.edits.rename("sefa2", "smile")
    assert list(window.edits.panel.rows) == ["sefa0", "sefa1", "smile", "sefa3"]
    assert window.editor.session.state.alphas == {"smile": pytest.approx(row._hi)}
    assert window.edits.panel.rows["smile"].alpha() == pytest.approx(row._hi)
    window.edits.rename("smile", "sefa0")  # a duplicate name is refused with a message
    assert "already exists" in window.view.toast_text() and "smile" in window.edits.panel.rows
    path = tmp_path / "mine.npz"
    window.edits.save_directions(path)
    assert load_directions(path, window.editor.models.G).names == ["sefa0", "sefa1", "smile", "sefa3"]


def test_hold_still_toggles_lock_attributes(qtbot, window):
    """A set with fitted attribute boundaries shows one 'Hold still' toggle per attribute; a toggle locks that
    attribute for every slider (its boundary projected out), undo unlocks it, and the picture follows."""
    from engine.io.directions import Direction, DirectionSet

    s = window.editor.session
    G = window.editor.models.G
    v = s.directions["sefa0"].vector + s.directions["sefa1"].vector  # overlaps sefa0: locking it bends sefa0
    yaw = Direction("yaw", v / v.norm(), (0, G.num_ws - 1), (-3, 3), "attributes", {"attribute": "yaw"})
    window.edits.add_directions(DirectionSet.for_model(G, [yaw]), "fitted")
    qtbot.waitUntil(lambda: "yaw" in window.edits.panel.lock_buttons, timeout=TIMEOUT)
    row = window.edits.panel.rows["sefa0"]
    row.slider.setValue(row.slider.maximum())
    qtbot.waitUntil(lambda: "sefa0" in s.state.alphas, timeout=TIMEOUT)
    s.wait_idle(timeout=30)
    qtbot.waitUntil(lambda: window.display.last_frame is not None
                    and window.display.last_frame.version >= s.version, timeout=TIMEOUT)
    free = shown(window)
    window.edits.panel.lock_buttons["yaw"].click()
    assert s.state.locks == ("yaw",)
    wait_for_change(qtbot, window, free)
    d = s.edit_terms()[0][0]
    assert abs(float(d.vector @ (v / v.norm()))) < 1e-5
    window.undo()
    assert s.state.locks == () and not window.edits.panel.lock_buttons["yaw"].isChecked()


def test_keyboard_shortcuts(qtbot, window):
    from PySide6.QtCore import Qt

    window.activateWindow()
    # Activation is asynchronous; a shortcut only fires in the active window, so wait for it (slow under load).
    qtbot.waitUntil(window.isActiveWindow, timeout=TIMEOUT)
    window.view.setFocus()
    before = shown(window)
    qtbot.keyClick(window.view, Qt.Key_N)
    qtbot.waitUntil(lambda: window.seeds.panel.seed.value() == 1, timeout=TIMEOUT)
    wait_for_change(qtbot, window, before)
    qtbot.keyClick(window.view, Qt.Key_Z, Qt.ControlModifier)
    qtbot.waitUntil(lambda: window.seeds.panel.seed.value() == 0, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: np.array_equal(shown(window), before), timeout=TIMEOUT)
    qtbot.keyClick(window.view, Qt.Key_T)  # teacher | student side by side
    qtbot.waitUntil(lambda: len(window.view.panes()) == 2, timeout=TIMEOUT)


def test_bench_app_paths_run_on_a_small_model(model_dir):
    """The engine-only measurements behind `main.py bench --app` (here on the 64 px fixture pair, briefly)."""
    from engine.bench_app import bench_slider, bench_webcam, make_camera_video
    from engine.models.encoder import load_encoder

    S = engine.load_generator(model_dir / "student.safetensors")
    s = bench_slider(S, steps=4, drag_seconds=0.5, pause=0.01)
    assert s["step_median_ms"] > 0 and s["drag_frames"] >= 1
    assert s["drag_frames"] <= s["drag_requests"]  # merged, never more frames than requests
    w = bench_webcam(S, load_encoder(model_dir / "encoder.safetensors"), seconds=1.0, warmup=0.3,
                     serial_seconds=0.3)
    assert set(w["modes"]) == {"overlapped", "serial"} and w["mode"] in w["modes"]
    assert all(m["frames"] > 0 and m["faces_found_fraction"] > 0.5 for m in w["modes"].values())
    assert set(w["stage_median_ms"]) == {"align", "encode", "edit", "render", "transfer"}
    assert w["regenerate_fps"] > 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        video = make_camera_video(f"{tmp}/v.avi", seconds=0.2)
        cap = cv2.VideoCapture(str(video))
        ok, frame = cap.read()
        cap.release()
        assert ok and frame.shape == (480, 640, 3)


def test_open_teacher_later_and_refuse_a_foreign_one(qtbot, window, model_dir, tmp_path, rosinality_pt):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(model_dir / "student.safetensors", alone / "student.safetensors")
    with qtbot.waitSignal(window.modelLoaded, timeout=TIMEOUT):
        window.open_model(str(alone / "student.safetensors"))
    qtbot.waitUntil(lambda: window.seeds.history.seeds() == [0], timeout=TIMEOUT)
    assert window.editor.models.teacher is None and not window.model.panel.side_by_side.isEnabled()
    window.open_teacher(str(rosinality_pt))  # another model's W space
    qtbot.waitUntil(lambda: "not this student's teacher" in window.view.toast_text(), timeout=TIMEOUT)
    assert window.editor.models.teacher is None
    assert not window.edits.panel.rows  # nothing beside the lone student: no directions either
    window.open_teacher(str(model_dir / "teacher.safetensors"))
    qtbot.waitUntil(lambda: len(window.view.panes()) == 2, timeout=TIMEOUT)
    assert window.view.panes()[0].title.startswith("Teacher")


def _style_images(fixtures, tmp_path):
    """A pencil sketch of a fixture photo (a style image with a face), and a doodle no face detector finds."""
    img = cv2.imread(str(fixtures / "images" / "astronaut.png"))
    _, colour = cv2.pencilSketch(img, sigma_s=60, sigma_r=0.07, shade_factor=0.05)
    cv2.imwrite(str(tmp_path / "pencil.png"), colour)
    doodle = np.full((200, 200, 3), 235, np.uint8)
    cv2.circle(doodle, (100, 100), 70, (40, 40, 40), 3)
    cv2.imwrite(str(tmp_path / "doodle.png"), doodle)
    return tmp_path / "pencil.png", tmp_path / "doodle.png"


def test_style_panel_stylizes_blends_saves_and_refuses(qtbot, window, fixtures, tmp_path, model_dir, rosinality_pt):
    """Stylize a few steps off the UI thread, show it (seeds and photos follow; transfer switches to regenerate),
    strength 0 is the base model, save it (never over the model), load it back, refuse another W space."""
    from engine.render import psnr, to_uint8

    style, ed = window.stylization, window.editor
    panel = style.panel
    pencil, doodle = _style_images(fixtures, tmp_path)
    base = shown(window)

    # a drawing without a detectable face: one line naming --aligned; the images stay
    style.set_images([doodle])
    style.stylize(steps=2, batch=1, invert_steps=1)
    qtbot.waitUntil(lambda: not panel.progress.isVisible(), timeout=TIMEOUT)
    assert "--aligned" in panel.status.text() and panel.images.count() == 1 and style.styled is None

    style.set_images([pencil])
    panel.steps.setValue(3)
    assert ed.edit_mode == "transfer"
    style.stylize(batch=1, invert_steps=2)
    assert panel.progress.isVisible() and panel.cancel.isVisible()
    qtbot.waitUntil(lambda: style.styled is not None, timeout=TIMEOUT)
    assert panel.styled.isChecked() and ed.generator is not ed.models.G
    wait_for_change(qtbot, window, base)
    assert "stylized" in window.view.panes()[-1].title
    assert "steps/s" in panel.status.text() and "regenerate" in panel.status.text()
    assert ed.edit_mode == "regenerate"  # edit transfer would keep the photo's own pixels: no style
    with torch.no_grad():
        expect = to_uint8(style.styled.synthesis(ed.session.compute_ws()))[0] / 127.5 - 1
    qtbot.waitUntil(lambda: psnr(shown(window) / 127.5 - 1, expect) > 40, timeout=TIMEOUT)

    # strength 0: the stylized weights blended all the way back to the base model's
    panel.strength.setValue(0)
    qtbot.waitUntil(lambda: psnr(shown(window) / 127.5 - 1, base / 127.5 - 1) > 40, timeout=TIMEOUT)
    assert "0 %" in panel.status.text()
    panel.strength.setValue(100)
    qtbot.waitUntil(lambda: psnr(shown(window) / 127.5 - 1, expect) > 40, timeout=TIMEOUT)
    panel.base.click()
    assert ed.generator is ed.models.G
    qtbot.waitUntil(lambda: psnr(shown(window) / 127.5 - 1, base / 127.5 - 1) > 40, timeout=TIMEOUT)

    # save: never over the model being edited; then load it back
    model = model_dir / "student.safetensors"
    before = model.read_bytes()
    style.save_stylized(model)
    assert "model being edited" in panel.status.text() and model.read_bytes() == before
    out = tmp_path / "pencil-styled.safetensors"
    style.save_stylized(out)
    qtbot.waitUntil(lambda: "Saved" in panel.status.text(), timeout=TIMEOUT)
    assert engine.load_generator(out).cfg.info["stylized"]["name"] == "pencil"
    style.load_stylized(rosinality_pt)  # another model's W space
    qtbot.waitUntil(lambda: "another W space" in panel.status.text(), timeout=TIMEOUT)
    assert style.name == "pencil" and not panel.styled.isChecked()
    # the same network and W space, but stylized from other weights (its recorded base hash): refused too
    from engine.io.checkpoints import save_generator

    other = engine.load_generator(out)
    info = dict(other.cfg.info)
    info["stylized"] = {**info["stylized"], "base_sha256": "0" * 64}
    other.cfg.info = info
    save_generator(other, tmp_path / "other-base.safetensors")
    style.load_stylized(tmp_path / "other-base.safetensors")
    qtbot.waitUntil(lambda: "stylized from another model" in panel.status.text(), timeout=TIMEOUT)
    style.styled = None
    style.load_stylized(out)
    qtbot.waitUntil(lambda: style.styled is not None and panel.styled.isChecked(), timeout=TIMEOUT)
    wait_for_change(qtbot, window, shown(window))

    # the camera renders with the stylized model too, and follows the switch while it runs
    frames = []
    window.start_camera(str(_make_video(tmp_path / "cam.avi", fixtures, frames=8)))
    window.camera.live.frame.connect(lambda lf, fps: frames.append(lf))
    qtbot.waitUntil(lambda: any(f.face for f in frames), timeout=TIMEOUT)
    pipeline = window.camera.live.runner.pipeline
    assert pipeline.G is ed.generator and pipeline.mode == "regenerate"
    panel.base.click()
    assert pipeline.G is ed.models.G
    window.camera.stop_camera()


def test_style_panel_cancel_stops_cleanly(qtbot, window, fixtures, tmp_path):
    style = window.stylization
    panel = style.panel
    pencil, _ = _style_images(fixtures, tmp_path)
    style.set_images([pencil])
    panel.steps.setValue(5000)
    style.stylize(batch=1, invert_steps=1)
    qtbot.waitUntil(lambda: "stylizing" in panel.progress.format(), timeout=TIMEOUT)
    panel.cancel.click()
    qtbot.waitUntil(lambda: not panel.progress.isVisible(), timeout=TIMEOUT)
    assert "Cancelled" in panel.status.text() and style.styled is None
    assert window.editor.generator is window.editor.models.G and panel.stylize.isEnabled()
