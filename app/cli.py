"""`main.py app` (also plain `main.py`): the desktop editor.

`--screenshot PATH` opens the window, loads the model, waits for the first frame, writes a PNG of the whole window
(QWidget.grab) and exits; the README's screenshot is made with it (and docs/images/style_panel.png, with `--style`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def add_arguments(p):
    p.add_argument("--model", "-m", default=None,
                   help="model to open (.safetensors, NVIDIA .pkl, rosinality .pt); default: the bundled student")
    p.add_argument("--teacher", default=None, help="the student's StyleGAN2 teacher, for side-by-side comparison")
    p.add_argument("--encoder", default=None, help="inversion encoder for the model (default: the bundled one)")
    p.add_argument("--directions", default=None, help="direction set .npz (default: the bundled one)")
    p.add_argument("--photo", default=None, help="a photo to open for editing once the model is loaded")
    p.add_argument("--style", default=None, metavar="MODEL",
                   help="a stylized model (made by main.py stylize from the model) to show in the model's place")
    p.add_argument("--seed", type=int, default=None, help="seed to show first")
    p.add_argument("--side-by-side", action="store_true", help="show the teacher beside the student")
    p.add_argument("--screenshot", default=None, metavar="PATH",
                   help="render, save a PNG of the window to PATH and exit")
    p.add_argument("--size", default="1440x900", help="window size for --screenshot (default 1440x900)")
    p.add_argument("--settings", default=None, help="settings file (default: the user's BlazeStudio settings)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1: batch-1 renders are fastest and steadiest on one)")


def run(args) -> int:
    from engine.errors import UserError

    for name, path in (("model", args.model), ("teacher", args.teacher), ("encoder", args.encoder),
                       ("directions", args.directions), ("photo", args.photo), ("style", args.style)):
        if path is not None and not Path(path).exists():
            raise UserError(f"--{name} {path}: no such file")
    if args.screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    import torch

    from engine.runtime import APP_THREADS

    torch.set_num_threads(max(1, args.threads or APP_THREADS))
    torch.set_grad_enabled(False)

    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.theme import apply_dark_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("BlazeStudio")
    app.setOrganizationName("BlazeStudio")
    apply_dark_theme(app)
    if args.settings:
        settings = QSettings(args.settings, QSettings.IniFormat)
    elif args.screenshot:
        # A screenshot must not depend on (or change) the user's remembered layout.
        import tempfile

        settings = QSettings(str(Path(tempfile.mkdtemp(prefix="blazestudio-")) / "s.ini"), QSettings.IniFormat)
    else:
        settings = QSettings()
    win = MainWindow(settings)
    if args.seed is not None:
        win.seeds.panel.set_seed(args.seed)
    if args.screenshot:
        w, _, h = args.size.partition("x")
        try:
            win.resize(int(w), int(h))
        except ValueError:
            raise UserError(f"--size {args.size!r}: use WIDTHxHEIGHT, e.g. 1440x900") from None
    win.show()

    status = {"rc": 0}
    if args.screenshot:
        out = Path(args.screenshot)

        def shoot():
            win.view.clear_toast()  # transient messages are not part of the picture
            win.statusBar().clearMessage()
            app.processEvents()
            if args.style:
                win.side.ensureWidgetVisible(win.stylization.panel)
                app.processEvents()
            img = win.grab()
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                ok = img.save(str(out), "PNG")
            except OSError:
                ok = False
            if not ok:
                print(f"error: cannot write {out}", file=sys.stderr)
                status["rc"] = 1
            else:
                print(f"wrote {out} ({img.width()}x{img.height()})")
            win.close()
            app.quit()

        def ready():
            # Let the toast/panels settle, then grab.
            QTimer.singleShot(300, shoot)

        def failed(msg):
            print(f"error: {msg}", file=sys.stderr)
            status["rc"] = 1
            QTimer.singleShot(0, shoot)

        if args.style:
            styled = {}  # the first frame of the stylized model, not one of the base still on its way

            def shown(frame):
                if "version" in styled and frame.version >= styled["version"]:
                    styled.clear()
                    ready()

            win.editor.generatorChanged.connect(lambda _G: styled.update(version=win.editor.session.version))
            win.display.frameShown.connect(shown)
            win.editor.notified.connect(lambda text, level, _ms: failed(text) if level == "error" else None)
        elif args.photo:
            win.photoReady.connect(ready)
        else:
            win.frameShown.connect(ready, type=_single_shot())
        win.modelFailed.connect(failed)
        QTimer.singleShot(300_000, lambda: failed("timed out waiting for the first frame"))

    def start():
        if args.model:
            win.open_model(args.model, teacher=args.teacher, encoder=args.encoder, directions=args.directions)
        elif not win.open_default_model(teacher=args.teacher, encoder=args.encoder, directions=args.directions):
            if args.screenshot:
                print("note: the bundled model is missing; the screenshot shows the empty window",
                      file=sys.stderr)
                QTimer.singleShot(300, shoot)
            return
        if args.side_by_side:
            win.modelLoaded.connect(lambda: win.set_side_by_side(True))
        if args.photo:
            win.modelLoaded.connect(lambda: win.open_photo(args.photo))
        if args.style:
            win.modelLoaded.connect(lambda: win.stylization.load_stylized(args.style))

    QTimer.singleShot(0, start)
    rc = app.exec()
    return status["rc"] or rc


def _single_shot():
    from PySide6.QtCore import Qt

    return Qt.SingleShotConnection
