"""`main.py invert IMAGE --out latent.npz`: align the face, encode it, optionally project, write the latent.

Writes the latent (engine.io.latents, with the alignment transform, the model's identity and the reconstruction
metrics in its metadata) and, beside it, a PNG with the aligned input on the left and the reconstruction on the right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.cli.common import add_model_argument, load_model
from engine.device import pick_device
from engine.errors import UserError

DEFAULT_STEPS = 100  # after an encoder: it only has to refine
DEFAULT_STEPS_FROM_AVG = 300  # from w_avg the projector does all the work


def add_arguments(p):
    p.add_argument("image", help="a photo with a face (JPEG, PNG, WebP, ...)")
    add_model_argument(p)
    p.add_argument("--encoder", "-e", default=None,
                   help="encoder .safetensors (default: the bundled encoder when it fits the model, else none)")
    p.add_argument("--no-encoder", action="store_true", help="start the projector from w_avg, even with an encoder")
    p.add_argument("--steps", type=int, default=None,
                   help=f"projector steps (default {DEFAULT_STEPS} after an encoder, {DEFAULT_STEPS_FROM_AVG} from "
                        "w_avg; 0 = encoder only)")
    p.add_argument("--lr", type=float, default=0.03, help="projector learning rate (W units)")
    p.add_argument("--pixel-weight", type=float, default=1.0, help="weight of the pixel MSE beside the perceptual loss")
    p.add_argument("--reg-weight", type=float, default=0.01, help="pull of the codes toward their start")
    p.add_argument("--perceptual", default="mobilenet_v2", choices=["mobilenet_v2", "lpips-vgg"],
                   help="the projector's perceptual loss, also used for the reported distance: mobilenet_v2 (default) "
                        "or lpips-vgg (LPIPS v0.1, the [metrics] extra)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu or cuda")
    p.add_argument("--out", "-o", required=True, help="the latent .npz; its comparison image goes beside it (.png)")
    p.add_argument("--image-out", default=None, help="where to write the comparison image (default: OUT with .png)")


def run(args) -> int:
    from engine.faces import align_face
    from engine.invert import Inverter
    from engine.io.checkpoints import file_sha256
    from engine.io.latents import save_latent, w_space_id
    from engine.render import save_image

    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"latent files end in .npz, not {out.suffix or '(none)'}: {out}")
    png = Path(args.image_out) if args.image_out else out.with_suffix(".png")
    if args.steps is not None and args.steps < 0:
        raise UserError("--steps must be 0 or more")
    device = pick_device(args.device)

    G = load_model(args.model).to(device)
    from engine.invert import pick_encoder

    E, note = pick_encoder(G, args.encoder, use=not args.no_encoder)
    if note:
        print(note)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS if E is not None else DEFAULT_STEPS_FROM_AVG

    aligned = align_face(args.image, size=G.resolution)
    if aligned.faces > 1:
        print(f"{aligned.faces} faces found; inverting the largest")
    inv = Inverter(G, E, perceptual=args.perceptual, lr=args.lr, pixel_weight=args.pixel_weight,
                   reg_weight=args.reg_weight)
    result = inv.invert(aligned, steps=steps, progress=True)

    m, m0 = result.metrics, result.start_metrics
    proj = result.projection
    model_path = getattr(G, "source_path", None)
    meta = {
        "source": str(args.image),
        "alignment": aligned.to_json(),
        "model_info": {
            "file": Path(model_path).name if model_path else None,
            "sha256": file_sha256(model_path) if model_path else None,
            "arch": G.cfg.arch,
            "resolution": G.resolution,
            "w_space_id": w_space_id(G),
        },
        "encoder": None if E is None else {
            "file": Path(E.source_path).name,
            "sha256": file_sha256(E.source_path),
            "input_size": E.cfg.input_size,
            "steps_trained": E.cfg.info.get("steps"),
        },
        "projector": {
            "start": "encoder" if E is not None else "w_avg",
            "steps": proj.steps if proj else 0,
            "requested_steps": steps,
            "noise_mode": "const",
            **inv.options,
            "perceptual": inv.perceptual.config,
        },
        "metrics": {**m, "start": m0},
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
    }
    save_latent(out, result.ws, G, **meta)
    recon = inv.render(result.ws)[0]
    save_image(np.concatenate([aligned.image, recon], axis=1), png)

    start = "encoder" if E is not None else "w_avg"
    print(f"wrote {out} and {png} (left: aligned input, right: reconstruction)")
    name = inv.perceptual.name
    print(f"{start}: perceptual ({name}) {m0['perceptual']:.4f}, PSNR {m0['psnr']:.2f} dB")
    if proj is not None:
        print(f"after {proj.steps} projector steps: perceptual ({name}) {m['perceptual']:.4f}, PSNR {m['psnr']:.2f} dB "
              f"({result.timings['project']:.1f} s)")
    return 0
