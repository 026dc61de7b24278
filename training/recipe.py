"""The recipe that produced the bundled demo models in assets/ (see assets/MODEL_CARD.md).

No pretrained StyleGAN can be downloaded here, so the default models are grown from a face source that installs from
PyPI: the DCGAN of `gan-face-generate==1.1.1` (z ∈ R^100 → 64×64 faces, trained on DigiFace-1M synthetic faces,
non-commercial research licence). It is used only as a data source for this recipe (`pip install --no-deps
gan-face-generate==1.1.1`), never at app run time.

Stages, each one command, each resumable (re-run the same command to continue from its last checkpoint):

    python -m training.recipe teacher    --out runs/demo-teacher      # 1. StyleGAN2 teacher: regression, then polish
    python -m training.recipe student    --out runs/demo-student      # 2. BlazeStyleGAN student distilled from it
    python -m training.recipe encoder    --out runs/demo-encoder      # 3. inversion encoder
    python -m training.recipe directions --out runs/demo-directions   # 4. SeFa/GANSpace directions, named by hand
    python -m training.recipe publish                                 # copy the results into assets/

Stage 1 uses paired regression: teacher and source share z (the teacher's mapping sees z, the source sees the same z
normalised the way the mapping normalises it), so the teacher is trained like a supervised network to reproduce the
source image for each z (pixel L1 + perceptual), which is far cheaper than adversarial training from scratch. From
--adv-start on, an adversarial polish adds training/'s discriminator judging against source samples (regression terms
kept, so each z stays tied to its source face) to put back the texture a regression fit averages away.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from engine.device import pick_device
from engine.errors import UserError, report_errors
from engine.io.checkpoints import atomic_write, save_generator
from engine.metrics.sources import FaceSource
from engine.models.config import ModelConfig
from engine.models.generator import Generator, seeds_to_z
from engine.render import make_grid, save_image, to_uint8
from training.discriminator import DISCRIMINATOR_KINDS
from training.loop import StopFlag, ema_update, lazy_r1_step

ROOT = Path(__file__).resolve().parent.parent

# The demo teacher: StyleGAN2 at 64×64 with the source's 100-d z, a 4-layer mapping and a light channel plan so the
# file stays under 25 MB and a CPU can train it.
TEACHER_CONFIG = dict(
    arch="stylegan2",
    resolution=64,
    z_dim=100,
    w_dim=512,
    mapping_layers=4,
    channels={4: 256, 8: 256, 16: 192, 32: 128, 64: 64},
    conv_clamp=256.0,
)
# The polish's discriminator: narrower than NVIDIA's plan, since it only has to judge 64×64 texture on a CPU.
POLISH_D_CHANNELS = {4: 256, 8: 256, 16: 128, 32: 64, 64: 32}
R1_EVERY = 16  # lazy R1, as in StyleGAN2


# The face source: engine.metrics.sources.FaceSource (imported above), where `main.py eval` also finds it as its
# default data.


# ---------------------------------------------------------------------------------------------------------------------
# Stage 1: teacher


# Teacher-stage options a resumed run may change without changing what it trains.
_TEACHER_BOOKKEEPING = {"out", "steps", "init", "save_every", "keep_every", "threads", "device"}


def _run_args(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "fn"}


def _note_changed_settings(config_path: Path, args) -> None:
    """On resume, name the options that differ from the ones the run was last started with (its config.json)."""
    from training.runlog import resume_note

    try:
        saved = json.loads(config_path.read_text()).get("args") or {}
    except (OSError, ValueError, AttributeError):
        return  # no record (or a damaged one): nothing to compare with
    note = resume_note(saved, _run_args(args), _TEACHER_BOOKKEEPING)
    if note:
        print(note, file=sys.stderr)


def fit_teacher(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = FaceSource(device)
    cfg = ModelConfig(**TEACHER_CONFIG, info={"recipe": "training.recipe teacher"})
    G = Generator(cfg).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    from engine.models.perceptual import PerceptualLoss

    lpips = PerceptualLoss("mobilenet_v2", resize=0).to(device)
    # Adversarial polish: a regression fit is the conditional mean of what the teacher cannot yet tell apart, so it
    # comes out blurred; a discriminator on source samples puts back texture while the regression terms keep each z
    # tied to its source face.
    from training.discriminator import Discriminator, DiscriminatorConfig
    from training.losses import discriminator_adversarial, generator_adversarial

    d_channels = {r: max(16, int(c * args.d_width)) for r, c in POLISH_D_CHANNELS.items()}
    D = Discriminator(DiscriminatorConfig(resolution=64, channels=d_channels)).to(device)
    opt_D = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.0, 0.99))
    # StyleGAN's 0.01 learning-rate multiplier on the mapping network keeps GAN training stable, but in a supervised fit
    # it freezes z → w near its random start and the synthesis can only learn the mean face: boost it.
    groups = [
        {"params": list(G.synthesis.parameters()), "lr": args.lr},
        {"params": list(G.mapping.parameters()), "lr": mapping_lr(args, 0)},
    ]
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if ckpt_path.exists():
        st = torch.load(ckpt_path, map_location=device, weights_only=True)
        G.load_state_dict(st["G"])
        G_ema.load_state_dict(st["G_ema"])
        try:
            opt.load_state_dict(st["opt"])
        except ValueError:
            print("optimiser layout changed; continuing with fresh optimiser state", file=sys.stderr)
        # Checkpoints from before the polish have no discriminator, and a run resumed with another --d-width has one
        # of another shape: the discriminator then starts fresh.
        d_shapes = {k: tuple(v.shape) for k, v in st.get("D", {}).items()}
        if d_shapes and d_shapes == {k: tuple(v.shape) for k, v in D.state_dict().items()}:
            D.load_state_dict(st["D"])
            opt_D.load_state_dict(st["opt_D"])
        elif d_shapes:
            print("discriminator width changed; it starts fresh", file=sys.stderr)
        step = st["step"]
        torch.set_rng_state(st["rng"])
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)
        _note_changed_settings(out / "config.json", args)
    elif args.init:
        # Continue from published weights (e.g. assets/teacher.safetensors) when the run folder is gone.
        from engine.io.checkpoints import load_generator

        prev = load_generator(args.init)
        G.load_state_dict(prev.state_dict())
        G_ema.load_state_dict(prev.state_dict())
        step = int(prev.cfg.info.get("steps", 0))
        print(f"initialised from {args.init} (step {step})", file=sys.stderr)
    run_doc = {"stage": "teacher", "args": _run_args(args), "model": cfg.to_dict()}
    (out / "config.json").write_text(json.dumps(run_doc, indent=1))
    fixed_z = torch.randn(16, 100, generator=torch.Generator().manual_seed(123)).to(device)
    fixed_src = source(fixed_z)

    @torch.no_grad()
    def refresh_w_avg():
        G_ema.mapping.w_avg.copy_(G_ema.mapping(torch.randn(4096, 100, device=device))[:, 0].mean(0))

    def save():
        state = {"G": G.state_dict(), "G_ema": G_ema.state_dict(), "opt": opt.state_dict(), "step": step,
                 "rng": torch.get_rng_state(), "D": D.state_dict(), "opt_D": opt_D.state_dict()}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        save_generator(G_ema, out / "teacher.safetensors", info={"steps": step})

    # Ctrl-C / SIGTERM finish the step and save; the previous handlers come back afterwards (this also runs
    # inside other programs, e.g. tests).
    with StopFlag(tqdm.write) as stop:
        log = open(out / "losses.csv", "a", newline="")
        writer = csv.writer(log)
        if log.tell() == 0:
            writer.writerow(["step", "l1", "lpips", "total", "seconds", "g_adv", "d_loss", "adv_weight"])
        bar = tqdm(total=args.steps, initial=step, desc="teacher", unit="step")
        t0 = time.time()
        while step < args.steps and not stop.requested:
            # Learning rates come from this command line, never a checkpoint, and the mapping's changes at the polish.
            for group, lr in zip(opt.param_groups, (args.lr, mapping_lr(args, step))):
                group["lr"] = lr
            z = torch.randn(args.batch, 100, device=device)
            target = source(z)
            ws = G.mapping(z)
            img = G.synthesis(ws, noise_mode="const")
            l1 = (img - target).abs().mean()
            lp = lpips(img, target).mean()
            adv_w = polish_weight(args, step)
            # During the polish the regression can be weakened: at full weight it pulls every z back to the blurred
            # conditional mean that the discriminator is trying to sharpen away.
            loss = (args.regression_weight if adv_w > 0 else 1.0) * (l1 + args.lpips_weight * lp)
            g_adv = d_loss = torch.zeros(())
            if adv_w > 0:
                D.requires_grad_(False)
                g_adv = generator_adversarial(D(img))
                loss = loss + adv_w * g_adv
            if not torch.isfinite(loss):
                raise UserError(f"teacher fit diverged at step {step} (loss {loss.item()}); last checkpoint kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(G.parameters(), 10.0)
            opt.step()
            if adv_w > 0:
                D.requires_grad_(True)
                d_loss = discriminator_adversarial(D(img.detach()), D(target))
                opt_D.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_D.step()
                if step % R1_EVERY == 0:
                    lazy_r1_step(D, D.parameters(), opt_D, target, args.r1_gamma, R1_EVERY)
            ema_update(G_ema, G, min(args.ema, (1 + step) / (10 + step)), buffers=True)
            step += 1
            bar.update(1)
            bar.set_postfix(l1=f"{l1.item():.3f}", lpips=f"{lp.item():.3f}", adv=f"{g_adv.item():.2f}")
            values = (l1.item(), lp.item(), loss.item())
            writer.writerow([step, *(f"{v:.5f}" for v in values), f"{time.time() - t0:.1f}",
                             f"{g_adv.item():.5f}", f"{d_loss.item():.5f}", f"{adv_w:g}"])
            if step % args.save_every == 0 or step == args.steps:
                refresh_w_avg()
                with torch.no_grad():
                    pics = torch.cat([fixed_src, G_ema.synthesis(G_ema.mapping(fixed_z))])
                save_image(make_grid(to_uint8(pics), cols=16), out / f"samples_{step:06d}.png")
                save()
                if args.keep_every and step % args.keep_every == 0:
                    # Snapshots to choose from afterwards by FID (`main.py eval --teacher ...`).
                    import shutil

                    shutil.copyfile(out / "teacher.safetensors", out / f"teacher_{step:06d}.safetensors")
                log.flush()
        refresh_w_avg()
        save()
        log.close()
        bar.close()
        print(f"teacher at step {step}: {out / 'teacher.safetensors'}")
    return 130 if stop.requested else 0


def mapping_lr(args, step: int) -> float:
    """The mapping network's learning rate: boosted for the regression; during the polish, plain, so that z → w (the
    W space that the student, encoder and directions are built on) stays put while the synthesis sharpens."""
    boost = args.mapping_lr_boost if step < args.adv_start or args.adv_weight <= 0 else args.polish_mapping_lr_boost
    return args.lr * boost


def polish_weight(args, step: int) -> float:
    """Weight of the teacher's adversarial term: 0 until --adv-start, then a linear ramp over --adv-ramp steps."""
    if args.adv_weight <= 0 or step < args.adv_start:
        return 0.0
    return args.adv_weight * min(1.0, (step - args.adv_start + 1) / max(1, args.adv_ramp))


class SourceStream:
    """Source samples as the "real" images of the distillation's adversarial term; resumable by count."""

    def __init__(self, source: FaceSource, batch: int, seed: int = 7):
        self.source, self.batch, self.seed, self.taken = source, batch, seed, 0

    def next(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.taken)
        self.taken += 1
        z = torch.randn(self.batch, self.source.z_dim, generator=g)
        return self.source(z)

    def state_dict(self) -> dict:
        return {"taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.taken = int(state["taken"])


def distill_student(args) -> int:
    """Stage 2: the engine's distillation trainer, with the face source as the adversarial term's real images."""
    from training.distill import DistillConfig, Distiller

    out = Path(args.out)
    resume = (out / "checkpoint.pt").exists()
    # A warm start (--init) turns the EMA's ramp-up off (Distiller); a resume keeps what its run began with, --init
    # given again or not.
    ema_rampup = DistillConfig.load(out / "config.json").ema_rampup if resume else DistillConfig.ema_rampup
    cfg = DistillConfig(
        teacher=str(args.teacher),
        out=str(out),
        init=None if resume else args.init,
        steps=args.steps,
        batch=args.batch,
        adv_start=args.adv_start,
        adv_ramp=args.adv_ramp,
        adv_weight=args.adv_weight,
        adv_untruncated=args.adv_untruncated,
        d_width=args.d_width,
        d_warmup=args.d_warmup,
        d_kind=args.d_kind,
        fm_weight=args.fm_weight,
        lr=args.lr,
        d_lr=args.d_lr,
        ema_kimg=args.ema_kimg,
        ema_rampup=ema_rampup,
        sample_every=args.save_every,
        ckpt_every=args.save_every,
        keep_every=args.keep_every,
        eval_every=args.save_every * 4 if args.eval_every is None else args.eval_every,
        device=args.device,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    reals = SourceStream(FaceSource(), args.batch) if args.adv_start < args.steps or args.fm_weight > 0 else None
    trainer = Distiller(cfg, resume=resume, real_source=reals)
    status = trainer.run()
    trainer.export()
    trainer.close()
    print(f"student ({status}): {out / 'student.safetensors'}")
    return 0 if status == "done" else 130


def train_encoder_stage(args) -> int:
    """Stage 3: the inversion encoder, trained on the teacher's samples (the teacher's and student's W space is one)."""
    from engine.io.checkpoints import load_generator
    from training.encoder import state_path, train_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) / "encoder.safetensors"
    G = load_generator(args.teacher)
    resume = state_path(out).exists()
    train_encoder(G, out, steps=args.steps, batch=args.batch, resume=resume, device=args.device,
                  checkpoint_every=args.save_every, init=None if resume else args.init)
    print(f"encoder: {out}")
    return 0


# What a bundled slider is called after the attribute it measurably moves most (engine.edit.attributes).
SLIDER_LABELS = {
    "smile": "smile", "mouth_open": "mouth open", "eyes_open": "eyes open", "yaw": "head turn", "pitch": "nod",
    "roll": "head tilt", "brightness": "lighting", "warmth": "warmth", "saturation": "colourfulness",
    "background": "background light", "hair_brightness": "hair lightness", "hair_warmth": "hair warmth",
}
# A bundled slider must move its attribute the same way on this share of held-out faces, by at least this many
# standard deviations of the attribute across faces, between −⅔ and +⅔ of its range (issue #13's goals).
KEEP_SAME_WAY, KEEP_STD = 0.9, 1.0


def directions_stage(args) -> int:
    """Stage 4: directions named by what they measurably do. One direction is fitted per face-mesh and pixel
    attribute (engine.edit.labelled); SeFa and GANSpace candidates are described by the same measures. Fitted
    directions that meet the goals are kept; an unsupervised candidate is kept when it meets them for an attribute
    no kept direction covers yet. Each is named after its main attribute; the final set is described once more for
    the model card (describe.png / .md / .json)."""
    import numpy as np

    from engine.edit import DirectionSet, ganspace, sefa
    from engine.edit.labelled import (
        HELD_OUT_SEED,
        describe,
        fit_attribute_directions,
        heatmap,
        report_markdown,
        sample_attributes,
    )
    from engine.io.checkpoints import load_generator
    from engine.io.directions import Direction, save_directions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    S = load_generator(args.model)
    held = range(HELD_OUT_SEED, HELD_OUT_SEED + args.held_out)
    samples = sample_attributes(S, args.samples)
    fitted = fit_attribute_directions(S, samples, tuple(SLIDER_LABELS), check_seeds=held)
    save_directions(out / "all_attributes.npz", fitted)
    candidates = DirectionSet.for_model(S)
    candidates.extend(sefa(S, num=args.num))
    candidates.extend(ganspace(S, num=args.num, samples=20000))
    save_directions(out / "all_unsupervised.npz", candidates)
    described = describe(S, candidates, samples, held)
    (out / "candidates.json").write_text(json.dumps(described, indent=1, default=float))

    def good(table: dict, attr: str) -> bool:
        v = table[attr]
        return bool(np.isfinite(v["median_std"]) and v["same_way"] >= KEEP_SAME_WAY and v["median_std"] >= KEEP_STD)

    named = DirectionSet.for_model(S)
    covered = set()
    for d in fitted:
        attr = d.info["attribute"]
        if good(d.info["held_out"], attr):
            named.add(Direction(SLIDER_LABELS[attr], d.vector, d.layers, d.slider, d.method, d.info))
            covered.add(attr)
    for d in candidates:
        r = described[d.name]
        attr = r["main_attribute"]
        table = r["attributes"]
        if attr is None or attr in covered or attr not in SLIDER_LABELS:
            continue
        # A candidate may move its attribute the other way: flip it so that + means more.
        sign = 1.0 if table[attr]["median_std"] > 0 else -1.0
        flipped = {**table[attr], "median_std": abs(table[attr]["median_std"])}
        if not good({attr: flipped}, attr):
            continue
        named.add(Direction(SLIDER_LABELS[attr], sign * d.vector, tuple(r["proposed_layers"]), d.slider, d.method,
                            {**d.info, "attribute": attr, "from": d.name, "described": table}))
        covered.add(attr)
    save_directions(out / "directions.npz", named)
    final = describe(S, named, samples, held)
    from engine.render import save_image

    save_image(heatmap(final), out / "describe.png")
    (out / "describe.md").write_text(report_markdown(final))
    (out / "describe.json").write_text(json.dumps(final, indent=1, default=float))
    print(f"directions: {out / 'directions.npz'} ({', '.join(named.names)}); describe.png/.md beside it")
    return 0


def samples_grid(T: Generator, S: Generator, source: FaceSource, seeds: int, fid: dict | None = None,
                 samples: int = 0):
    """Source | teacher | student for seeds 0…seeds-1 (same z, ψ = 1: the source has no truncation, so this is the
    comparable row), each row labelled with its FID against the source when `fid` (evaluate()'s "fid") is given."""
    from training.runlog import label_rows

    z = seeds_to_z(list(range(seeds)), T.z_dim)
    with torch.no_grad():
        ws = T.mapping(z)
        rows = [source(z), T.synthesis(ws), S.synthesis(ws)]
    grid = make_grid(to_uint8(torch.cat(rows)), cols=seeds)
    labels = [["source"], ["teacher"], ["student"]]
    if fid:
        floor = fid.get("data_vs_data")
        labels = [["source", *([f"floor {floor:.1f}"] if floor is not None else [])],
                  ["teacher", f"FID {fid['teacher_vs_data']:.1f}"],
                  ["student", f"FID {fid['student_vs_data']:.1f}", f"({fid['student_vs_teacher']:.1f} vs T)"]]
        if samples:
            labels[0] += ["(FID over", f"{samples} samples)"]
    return label_rows(grid, labels, tile=T.resolution)


def refresh_samples(args) -> int:
    """Re-render assets/samples.png from the bundled models and the FIDs that publish measured (metrics.json)."""
    from engine import assets
    from engine.io.checkpoints import load_generator

    try:
        metrics = json.loads((assets.ASSETS / "metrics.json").read_text())["metrics"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read {assets.ASSETS / 'metrics.json'}: {e}") from None
    fid = metrics.get("fid")
    if fid is None and "fid_teacher_vs_source" in metrics:  # metrics.json as publish wrote it before "fid" was nested
        fid = {"teacher_vs_data": metrics["fid_teacher_vs_source"],
               "student_vs_data": metrics["fid_student_vs_source"],
               "student_vs_teacher": metrics["fid_student_vs_teacher"]}
    T, S = load_generator(assets.TEACHER), load_generator(assets.STUDENT)
    out = Path(args.out) if args.out else assets.ASSETS / "samples.png"
    samples = metrics.get("fid_samples") or metrics.get("samples", 0)  # the first: older files' FID sample count
    grid = samples_grid(T, S, FaceSource(), args.grid_seeds, fid, samples)
    print(f"wrote {save_image(grid, out)}")
    return 0


def publish(args) -> int:
    """Copy the stage outputs into assets/, render the sample grid and measure the model card's metrics (the table of
    `main.py eval`: FID with the NVlabs Inception against the face source, LPIPS-VGG and PSNR against the teacher)."""
    import shutil

    from engine import assets
    from engine.io.checkpoints import file_sha256, load_generator
    from engine.metrics.evaluate import DATA_SEED0, FeatureCache, default_cache_dir, evaluate, format_table
    from engine.metrics.sources import SourceSamples

    if args.threads:
        torch.set_num_threads(args.threads)
    files = {
        assets.TEACHER: Path(args.teacher),
        assets.STUDENT: Path(args.student),
        assets.ENCODER: Path(args.encoder),
        assets.DIRECTIONS: Path(args.directions),
    }
    for src in files.values():
        if not src.exists():
            raise UserError(f"{src} is missing; run the earlier stages first")
    T, S = load_generator(files[assets.TEACHER]), load_generator(files[assets.STUDENT])
    source = FaceSource()

    # The same evaluation as `main.py eval` with its defaults (features cached by file hash, so running that command
    # on the published files afterwards costs nothing), plus the floor: the source against a second draw of itself.
    n = args.metric_samples
    with torch.no_grad():
        result = evaluate(S, T, SourceSamples(source, n, DATA_SEED0), samples=n, seed=0,
                          cache=FeatureCache(default_cache_dir()), floor=True)
    pair = result["student_vs_teacher"]
    metrics = {
        "samples": n,
        "fid": result["fid"],
        "student_vs_teacher_lpips_vgg": pair["lpips_vgg"],
        "student_vs_teacher_psnr_db": pair["psnr_db"],
        "params_flops": {k: {"inference_params": m["inference_params"], "flops": m["flops"]}
                         for k, m in result["models"].items()},
        "fid_metric": result["metrics"]["fid"],
        "lpips_metric": result["metrics"]["lpips"],
    }
    for dst, src in files.items():
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
    save_image(samples_grid(T, S, source, args.grid_seeds, result["fid"], n), assets.ASSETS / "samples.png")
    sizes = {dst.name: {"bytes": dst.stat().st_size, "sha256": file_sha256(dst)} for dst in files}
    (assets.ASSETS / "metrics.json").write_text(json.dumps({"metrics": metrics, "files": sizes}, indent=1))
    print(format_table(result))
    print(f"published to {assets.ASSETS}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recipe", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("teacher", help="fit the StyleGAN2 teacher to the face source (paired regression)")
    t.add_argument("--out", default="runs/demo-teacher")
    t.add_argument("--steps", type=int, default=8000)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--lpips-weight", type=float, default=1.0)
    t.add_argument("--init", default=None, help="start from these teacher weights when there is no checkpoint")
    t.add_argument("--mapping-lr-boost", type=float, default=30.0, help="× lr for the mapping network (regression)")
    t.add_argument("--polish-mapping-lr-boost", type=float, default=1.0, help="× lr for the mapping during the polish")
    t.add_argument("--ema", type=float, default=0.995)
    t.add_argument("--adv-start", type=int, default=5860, help="step at which the adversarial polish begins")
    t.add_argument("--adv-ramp", type=int, default=300, help="steps over which its weight ramps up")
    t.add_argument("--adv-weight", type=float, default=0.5, help="weight of the polish (0: regression only)")
    t.add_argument("--r1-gamma", type=float, default=0.05)
    t.add_argument("--regression-weight", type=float, default=1.0,
                   help="weight of the L1 + perceptual regression once the polish is on (1: as strong as before it)")
    t.add_argument("--d-width", type=float, default=1.0, help="× the polish discriminator's channel widths")
    t.add_argument("--save-every", type=int, default=250)
    t.add_argument("--keep-every", type=int, default=0, help="also keep teacher_STEP.safetensors every N steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.set_defaults(fn=fit_teacher)

    st = sub.add_parser("student", help="distil the BlazeStyleGAN student from the teacher")
    st.add_argument("--teacher", default="runs/demo-teacher/teacher.safetensors")
    st.add_argument("--out", default="runs/demo-student")
    st.add_argument("--steps", type=int, default=20000)
    st.add_argument("--batch", type=int, default=8)
    st.add_argument("--init", default=None, help="start the student's synthesis from this earlier student")
    st.add_argument("--adv-start", type=int, default=4000)
    st.add_argument("--adv-ramp", type=int, default=2000)
    st.add_argument("--adv-weight", type=float, default=0.05, help="weight of the adversarial term against the source")
    st.add_argument("--adv-untruncated", action="store_true",
                    help="the adversarial term sees only untruncated student faces (half of each batch)")
    st.add_argument("--d-width", type=float, default=1.0,
                    help="× the discriminator's widths (the teacher's); a resume that changes it starts a new one")
    st.add_argument("--d-kind", choices=DISCRIMINATOR_KINDS, default="stylegan2",
                    help="the discriminator: StyleGAN2's on pixels, or heads on a frozen ImageNet MobileNetV2 "
                         "(learns in hundreds of steps, not thousands)")
    st.add_argument("--d-warmup", type=int, default=0,
                    help="steps before --adv-start that train the discriminator alone, the student held (use it with "
                         "--init, whose discriminator is not kept)")
    st.add_argument("--fm-weight", type=float, default=0.0,
                    help="feature matching: weight of the MobileNetV2 feature mean and covariance of untruncated "
                         "samples against the source's (0: off)")
    st.add_argument("--lr", type=float, default=2e-3, help="student learning rate (a resume takes a changed one)")
    st.add_argument("--d-lr", type=float, default=2e-3, help="discriminator learning rate")
    st.add_argument("--ema-kimg", type=float, default=10.0,
                    help="half-life of the exported EMA student, in thousands of images")
    st.add_argument("--save-every", type=int, default=250)
    st.add_argument("--keep-every", type=int, default=0, help="also keep student_STEP.safetensors every N steps")
    st.add_argument("--eval-every", type=int, default=None,
                    help="measure against the teacher (eval.csv) every N steps; default 4 × --save-every, 0: never")
    st.add_argument("--threads", type=int, default=None)
    st.add_argument("--device", default="auto")
    st.set_defaults(fn=distill_student)

    e = sub.add_parser("encoder", help="train the inversion encoder on teacher samples")
    e.add_argument("--teacher", default="runs/demo-teacher/teacher.safetensors")
    e.add_argument("--out", default="runs/demo-encoder")
    e.add_argument("--steps", type=int, default=10000)
    e.add_argument("--init", default=None, help="start from this earlier encoder (same layout) when there is no run")
    e.add_argument("--batch", type=int, default=8)
    e.add_argument("--save-every", type=int, default=250)
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.set_defaults(fn=train_encoder_stage)

    d = sub.add_parser("directions", help="directions fitted to measured attributes, and SeFa/GANSpace candidates, "
                                          "named by what they measurably do")
    d.add_argument("--model", default="runs/demo-teacher/teacher.safetensors",
                   help="teacher or student: they share one W space (SeFa uses this model's style affines)")
    d.add_argument("--out", default="runs/demo-directions")
    d.add_argument("--num", type=int, default=16, help="SeFa and GANSpace candidates each")
    d.add_argument("--samples", type=int, default=2000, help="measured faces the attribute directions are fitted on")
    d.add_argument("--held-out", type=int, default=100, help="held-out faces every direction is measured on")
    d.set_defaults(fn=directions_stage)

    pb = sub.add_parser("publish", help="copy the results into assets/ with the sample grid and metrics")
    pb.add_argument("--teacher", default="runs/demo-teacher/teacher.safetensors")
    pb.add_argument("--student", default="runs/demo-student/student.safetensors")
    pb.add_argument("--encoder", default="runs/demo-encoder/encoder.safetensors")
    pb.add_argument("--directions", default="runs/demo-directions/directions.npz")
    pb.add_argument("--grid-seeds", type=int, default=10)
    pb.add_argument("--metric-samples", type=int, default=2000, help="samples per model and of the source")
    pb.add_argument("--threads", type=int, default=None)
    pb.set_defaults(fn=publish)
    sm = sub.add_parser("samples", help="re-render samples.png (source | teacher | student, labelled with FID) from "
                                        "the bundled models and metrics.json")
    sm.add_argument("--grid-seeds", type=int, default=10)
    sm.add_argument("--out", default=None, help="where to write it (default: assets/samples.png)")
    sm.set_defaults(fn=refresh_samples)
    args = p.parse_args(argv)
    # on Ctrl-C the stage has saved its checkpoint on the way out
    return report_errors(args.fn, args, interrupted="interrupted; run the same command again to continue")


if __name__ == "__main__":
    sys.exit(main())
