"""Distillation (training/): the student learns, runs resume exactly, torchrun works, NaNs stop cleanly, the export
loads, and the discriminator speaks NVIDIA's parameter names. CPU only, fixture teachers, tiny settings."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import main as main_module
from engine import load_generator
from engine.errors import UserError
from engine.io.checkpoints import file_sha256
from engine.io.latents import w_space_id
from engine.models.perceptual import PerceptualLoss
from training.data import ImageStream, LatentSampler
from training.discriminator import (
    Discriminator,
    DiscriminatorConfig,
    ProjectedConfig,
    ProjectedDiscriminator,
    discriminator_for_teacher,
    minibatch_stddev,
)
from training.distill import DistillConfig, Distiller, NonFiniteLossError
from training.losses import DistillationLoss, FeatureMatching, discriminator_adversarial, generator_adversarial
from training.runlog import plot_losses, read_csv

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TEACHER = FIXTURES / "stylegan2" / "nvidia-64" / "network-snapshot.pkl"
IMAGES = FIXTURES / "images"


@pytest.fixture(autouse=True)
def _one_thread():
    # Two shared cores: one thread per test process keeps the suite's neighbours alive.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(out, **kw) -> DistillConfig:
    """Settings small enough for a CPU test: batch 2, heads compared at 32 px, no evaluation, no grids."""
    base = dict(
        teacher=str(TEACHER), out=str(out), steps=6, batch=2, perceptual_size=32, adv_weight=0.0, eval_every=0,
        eval_count=4, fd_count=0, sample_every=10**6, sample_count=2, ckpt_every=10**6, log_every=1, progress=False,
    )
    base.update(kw)
    return DistillConfig(**base)


def _flags(cfg_kw: dict) -> list[str]:
    out = []
    for k, v in cfg_kw.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


CLI_TINY = dict(batch=2, perceptual_size=32, eval_every=0, fd_count=0, log_every=1, sample_every=1000)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


# ---------------------------------------------------------------------------------------------------------------------
# Learning


def _held_out_loss(d: Distiller) -> float:
    """The training objective (perceptual + L1 over every head) on latents no step draws."""
    ws = d.latents.sample(8, step=10**9, device="cpu")
    with torch.no_grad():
        teacher = {im.shape[-1]: im for im in d.teacher.synthesis(ws, return_aux=True)}
        return float(d.loss(d.student.synthesis(ws, return_aux=True), teacher)["distill"])


def test_a_few_dozen_steps_bring_the_student_closer_to_the_teacher(tmp_path):
    d = Distiller(tiny(tmp_path / "run", steps=40, lr=5e-3, eval_count=8))
    before, before_eval = _held_out_loss(d), d.evaluate(use_ema=False)
    assert d.run() == "done"
    after, after_eval = _held_out_loss(d), d.evaluate(use_ema=False)
    assert after < 0.9 * before, (before, after)  # measured: -28 % (seeds 1, 2: -24 %, -21 %)
    assert after_eval["perceptual"] < before_eval["perceptual"], (before_eval, after_eval)
    rows = read_csv(tmp_path / "run" / "losses.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    first, last = (np.mean([float(r["loss"]) for r in rows[s]]) for s in (slice(0, 8), slice(-8, None)))
    assert last < first
    # The student carries its teacher's mapping (frozen) and so its W space.
    assert w_space_id(d.student) == w_space_id(d.teacher)
    assert not any(p.requires_grad for p in d.student.mapping.parameters())


def test_the_perceptual_term_is_the_engines_distance():
    """DistillationLoss computes the target features without gradients; the numbers must stay PerceptualLoss's."""
    p = PerceptualLoss(resize=0)
    loss = DistillationLoss(p, perceptual_size=32)
    g = torch.Generator().manual_seed(0)
    s = [torch.rand(2, 3, r, r, generator=g) * 2 - 1 for r in (16, 32)]
    t = [torch.rand(2, 3, r, r, generator=g) * 2 - 1 for r in (16, 32)]
    per_head = loss.perceptual_terms(s, t)
    up = F.interpolate(s[0], size=32, mode="bilinear", align_corners=False)
    up_t = F.interpolate(t[0], size=32, mode="bilinear", align_corners=False)
    torch.testing.assert_close(per_head[0], p(up, up_t).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_head[1], p(s[1], t[1]).mean(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Resume


def _states(d: Distiller) -> dict:
    return {"student": d.student.state_dict(), "ema": d.ema.state_dict(), "D": d.D.state_dict(),
            "opt_G": d.opt_G.state_dict()["state"], "opt_D": d.opt_D.state_dict()["state"]}


def _assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    else:
        assert a == b, path


def test_n_steps_then_resume_equals_2n_straight_and_the_export_is_a_student(tmp_path, capsys):
    # Adversarial from step 1 against the fixture photos, R1 every 2 steps: every piece of state is exercised.
    kw = dict(steps=6, adv_weight=0.1, adv_start=1, adv_ramp=2, d_reg_every=2, data=str(IMAGES), lr=5e-3,
              keep_every=3)
    straight = Distiller(tiny(tmp_path / "straight", **kw))
    assert straight.run() == "done"

    first = Distiller(tiny(tmp_path / "split", **kw))
    assert first.run(3) == "paused"
    assert first.step == 3
    with pytest.raises(Exception, match="--resume"):
        Distiller(tiny(tmp_path / "split", **kw))  # a run folder is never silently overwritten
    capsys.readouterr()
    resumed = Distiller(tiny(tmp_path / "split", **kw), resume=True)
    assert resumed.step == 3 and resumed.reals.taken == 2  # image batches used at steps 1 and 2
    assert "note: resuming" not in capsys.readouterr().out  # the same settings: nothing to say
    assert resumed.run() == "done"
    _assert_same(_states(straight), _states(resumed))
    assert [int(r["step"]) for r in read_csv(tmp_path / "split" / "losses.csv")] == list(range(1, 7))

    # The exported EMA student: one .safetensors that the engine loads as a student of this teacher.
    G = load_generator(tmp_path / "split" / "student.safetensors")
    assert G.is_student and G.resolution == 64
    assert G.cfg.info["teacher"]["sha256"] == file_sha256(TEACHER)
    assert w_space_id(G) == w_space_id(resumed.teacher)
    ws = resumed.sample_ws[:2].cpu()
    torch.testing.assert_close(G.synthesis(ws), resumed.ema.synthesis(ws), rtol=0, atol=1e-6)
    # Kept snapshots (keep_every=3), one on each side of the pause; the last is the exported student, and the FID
    # curve reads each one's step from its distillation record.
    from training.fid_curve import training_step

    kept = sorted((tmp_path / "split").glob("student_*.safetensors"))
    assert [p.name for p in kept] == ["student_000003.safetensors", "student_000006.safetensors"]
    early, last = (load_generator(p) for p in kept)
    assert [training_step(g.cfg.info, p) for g, p in zip((early, last), kept)] == [3, 6]
    torch.testing.assert_close(last.synthesis(ws), G.synthesis(ws), rtol=0, atol=0)
    assert not torch.equal(early.synthesis(ws), G.synthesis(ws))
    saved = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 6 and saved["data"] == {"taken": 5}

    # Resumed for longer with another ramp and lr: it goes on, and names what changed (and not the step count).
    capsys.readouterr()
    # A setting added to the trainer since the run began counts as the default the run had (here: off).
    ckpt = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["adv_untruncated"]
    torch.save(ckpt, tmp_path / "split" / "checkpoint.pt")
    longer = Distiller(tiny(tmp_path / "split", **{**kw, "steps": 8, "adv_ramp": 4, "lr": 1e-3, "d_lr": 4e-3,
                                                   "adv_untruncated": True}), resume=True)
    out = capsys.readouterr().out
    assert ("note: resuming with settings that differ from the run's: adv_ramp 2 → 4, adv_untruncated False → True"
            in out)
    assert "lr 0.005 → 0.001" in out and "steps" not in out
    # ... and trains at the new rates: the optimisers' saved state carries the old ones, which must not win.
    c = longer.cfg.d_reg_every / (longer.cfg.d_reg_every + 1)
    assert {g["lr"] for g in longer.opt_G.param_groups} == {1e-3}
    assert [g["lr"] for g in longer.opt_D.param_groups] == [pytest.approx(4e-3 * c)]
    assert longer.opt_G.state_dict()["state"], "the moments were restored"


def test_resume_after_kill_9_continues_at_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, str(ROOT / "main.py"), "distill", "--teacher", str(TEACHER), "--out", str(out),
            "--steps", "1000", "--ckpt-every", "2", "--no-progress", "--adv-weight", "0", *_flags(CLI_TINY)]
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 2 and step % 2 == 0
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "distill", "--out", str(out), "--resume",
                        "--steps", str(step + 2), "--no-progress"], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step + 2
    # Rows written after the checkpoint by the killed process were dropped and computed again, once.
    assert [int(r["step"]) for r in read_csv(out / "losses.csv")] == list(range(1, step + 3))
    assert load_generator(out / "student.safetensors").is_student
    assert not list(out.glob(".checkpoint.pt.*"))


# ---------------------------------------------------------------------------------------------------------------------
# Many processes


def test_torchrun_two_cpu_processes_write_one_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "main.py"), "distill",
            "--teacher", str(TEACHER), "--out", str(out), "--steps", "4", "--ckpt-every", "2", "--no-progress",
            "--adv-start", "0", "--adv-ramp", "1", *_flags(CLI_TINY)]
    r = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt" or p.name.startswith(".")) == ["checkpoint.pt"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4
    # Rank 0 alone logs: one row per step, and its startup line once.
    assert [int(r["step"]) for r in read_csv(out / "losses.csv")] == [1, 2, 3, 4]
    assert r.stdout.count("distilling ") == 1
    import json

    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert load_generator(out / "student.safetensors").is_student


# ---------------------------------------------------------------------------------------------------------------------
# Failure handling


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    d = Distiller(tiny(tmp_path / "run", steps=10))
    d.run(2)
    good = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    with torch.no_grad():
        d.student.synthesis.const.fill_(math.nan)  # weights blown up
    with pytest.raises(NonFiniteLossError) as e:
        d.run()
    msg = str(e.value)
    assert "step 2" in msg and "last good checkpoint (step 2)" in msg and "\n" not in msg
    kept = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert kept["step"] == 2
    _assert_same(kept["student"], good["student"])


def test_ctrl_c_finishes_the_step_saves_and_stops(tmp_path):
    import threading

    d = Distiller(tiny(tmp_path / "run", steps=1000))

    def interrupt():
        while d.step < 2:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    def found(signum, frame):  # what was installed before the run; it must not see the run's Ctrl-C
        raise AssertionError("the run did not catch Ctrl-C itself")

    outer = signal.signal(signal.SIGINT, found)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        assert d.run() == "stopped"
        assert 2 <= d.step < 1000
        saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        assert saved["step"] == d.step
        _assert_same(saved["student"], d.student.state_dict())
        assert signal.getsignal(signal.SIGINT) is found  # the handler found before the run is put back
    finally:
        signal.signal(signal.SIGINT, outer)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_flag_puts_back_the_handler_it_found(signum):
    """Whatever handled the signal before (Python's default, SIG_IGN in a job started with `&` from a script, a host
    program's own) handles it again after a run; during the run the signal only asks it to stop."""
    from training.loop import StopFlag

    outer = signal.getsignal(signum)
    try:
        for before in (signal.SIG_IGN, signal.SIG_DFL, signal.default_int_handler, lambda *a: None):
            signal.signal(signum, before)
            with StopFlag() as stop:
                assert not stop.requested
                os.kill(os.getpid(), signum)
                deadline = time.monotonic() + 5
                while not stop.requested and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert stop.requested
            assert signal.getsignal(signum) is before
    finally:
        signal.signal(signum, outer)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main_module.main(["distill", "--out", str(tmp_path / "x")]) == 1
    assert "--teacher" in capsys.readouterr().err
    assert main_module.main(["distill", "--out", str(tmp_path / "none"), "--resume"]) == 1
    assert "no run to resume" in capsys.readouterr().err
    assert main_module.main(["distill", "--teacher", str(TEACHER), "--out", str(tmp_path / "y"),
                             "--resolution", "128"]) == 1
    assert "resolution" in capsys.readouterr().err
    student = tmp_path / "student.safetensors"
    from engine import Generator, save_generator
    from engine.models.config import ModelConfig

    save_generator(Generator(ModelConfig(resolution=64).student()), student)
    assert main_module.main(["distill", "--teacher", str(student), "--out", str(tmp_path / "z")]) == 1
    assert "StyleGAN2 teacher" in capsys.readouterr().err


def test_config_file_then_flags(tmp_path):
    import argparse
    import json

    from training.cli_distill import add_arguments, build_config

    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"teacher": "t.pkl", "steps": 50, "lr": 0.001, "betas": [0.5, 0.9]}))
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = build_config(p.parse_args(["--config", str(cfg_file), "--out", "o", "--steps", "70", "--vgg", "v.pth"]))
    assert (cfg.teacher, cfg.out, cfg.steps, cfg.lr, cfg.betas) == ("t.pkl", "o", 70, 0.001, (0.5, 0.9))
    assert cfg.perceptual == "vgg16" and cfg.vgg == "v.pth" and cfg.batch == DistillConfig().batch
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg
    cfg_file.write_text(json.dumps({"teacher": "t.pkl", "learning_rate": 1}))
    with pytest.raises(Exception, match="learning_rate"):
        build_config(p.parse_args(["--config", str(cfg_file)]))


# ---------------------------------------------------------------------------------------------------------------------
# Data streams


def test_image_stream_resumes_at_the_same_batch():
    a = ImageStream(IMAGES, 32, batch=3, seed=1)
    batches = [a.next() for _ in range(3)]
    assert batches[0].shape == (3, 3, 32, 32) and -1 <= batches[0].min() and batches[0].max() <= 1
    b = ImageStream(IMAGES, 32, batch=3, seed=1)
    b.load_state_dict({"taken": 2})
    assert torch.equal(b.next(), batches[2])
    # Loading in a worker process gives the same batches, also from a restored position.
    w = ImageStream(IMAGES, 32, batch=3, seed=1, workers=1)
    assert torch.equal(w.next(), batches[0])
    w.load_state_dict({"taken": 2})
    assert torch.equal(w.next(), batches[2])
    # Two ranks see different images; the stream visits every image once per epoch.
    r0 = ImageStream(IMAGES, 32, batch=1, seed=1, rank=0, world=2).dataset
    r1 = ImageStream(IMAGES, 32, batch=1, seed=1, rank=1, world=2).dataset
    assert {r0.position(0)[0], r1.position(1)[0]} == {0, 1}


def test_latents_are_mixed_and_truncated_reproducibly():
    from engine.io.checkpoints import build_generator, read_checkpoint

    G = build_generator(*read_checkpoint(TEACHER)[:2])
    s = LatentSampler(G.mapping, seed=3, mix_prob=1.0, trunc_prob=0.0)
    ws = s.sample(8, step=5, device="cpu")
    assert torch.equal(ws, s.sample(8, step=5, device="cpu"))
    assert not torch.equal(ws, s.sample(8, step=6, device="cpu"))
    # Every sample mixes two ws: its first and last entries differ.
    assert all(not torch.allclose(w[0], w[-1]) for w in ws)
    plain = LatentSampler(G.mapping, seed=3, mix_prob=0.0, trunc_prob=1.0, psi_min=0.0).sample(4, 0, "cpu")
    d_avg = (plain[:, 0] - G.w_avg).norm(dim=1)
    full = LatentSampler(G.mapping, seed=3, mix_prob=0.0, trunc_prob=0.0).sample(4, 0, "cpu")
    assert (d_avg < (full[:, 0] - G.w_avg).norm(dim=1)).all()  # truncated toward w_avg


# ---------------------------------------------------------------------------------------------------------------------
# Discriminator


def _nvidia_d_record(res=64, channels=None, seed=0) -> tuple[dict, dict]:
    """What read_checkpoint returns as extras["D"] for stylegan2-ada-pytorch's resnet D (names and shapes written out
    from NVIDIA's networks.py: blocks b{R}…b8 with fromrgb at the top, conv0, conv1 (down), skip (down, no bias);
    epilogue b4 with mbstd, conv on C+1 channels, fc from C·4·4, out to 1), with random weights."""
    channels = channels or {64: 16, 32: 32, 16: 64, 8: 64, 4: 64}
    g = torch.Generator().manual_seed(seed)
    shapes = {f"b{res}.fromrgb.weight": (channels[res], 3, 1, 1), f"b{res}.fromrgb.bias": (channels[res],)}
    r = res
    while r > 4:
        c, o = channels[r], channels[r // 2]
        shapes.update({f"b{r}.conv0.weight": (c, c, 3, 3), f"b{r}.conv0.bias": (c,),
                       f"b{r}.conv1.weight": (o, c, 3, 3), f"b{r}.conv1.bias": (o,), f"b{r}.skip.weight": (o, c, 1, 1)})
        r //= 2
    c = channels[4]
    shapes.update({"b4.conv.weight": (c, c + 1, 3, 3), "b4.conv.bias": (c,), "b4.fc.weight": (c, c * 16),
                   "b4.fc.bias": (c,), "b4.out.weight": (1, c), "b4.out.bias": (1,)})
    state = {k: torch.randn(s, generator=g) * (0.1 if k.endswith("bias") else 1) for k, s in shapes.items()}
    f = torch.tensor([1.0, 3, 3, 1])
    f = torch.outer(f, f) / 64
    for k in list(shapes):  # NVIDIA's blocks and layers also persist their resample filters
        if k.endswith(".weight"):
            state[k.rsplit(".", 2)[0] + ".resample_filter"] = f.clone()
    kwargs = {"c_dim": 0, "img_resolution": res, "img_channels": 3, "architecture": "resnet", "channel_base": 1024,
              "channel_max": 64, "conv_clamp": 256, "epilogue_kwargs": {"mbstd_group_size": 4}}
    return {"state": state, "init_kwargs": kwargs}, shapes


def _reference_d(state: dict, img: torch.Tensor, clamp=256.0) -> torch.Tensor:
    """NVIDIA's D written out plainly (slowly) from its definition, to check ours computes the same function."""
    f = torch.tensor([1.0, 3, 3, 1])
    f = torch.outer(f, f) / 64

    def conv(x, name, down=False, act=True, gain=1.0, bias=True):
        w = state[f"{name}.weight"]
        w = w / math.sqrt(w[0].numel())
        if down:
            p = w.shape[-1] // 2 + 1
            x = F.pad(x, [p, p, p, p])
            x = F.conv2d(x, f.expand(x.shape[1], 1, 4, 4), groups=x.shape[1])
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=w.shape[-1] // 2)
        if bias:
            x = x + state[f"{name}.bias"].view(1, -1, 1, 1)
        if act:
            x = F.leaky_relu(x, 0.2) * math.sqrt(2) * gain
            return x.clamp(-clamp * gain, clamp * gain)
        return x * gain

    res = img.shape[-1]
    x = conv(img, f"b{res}.fromrgb")
    r = res
    while r > 4:
        y = conv(x, f"b{r}.skip", down=True, act=False, gain=math.sqrt(0.5), bias=False)
        x = conv(conv(x, f"b{r}.conv0"), f"b{r}.conv1", down=True, gain=math.sqrt(0.5)) + y
        r //= 2
    n = x.shape[0]
    g = min(4, n)
    s = x.reshape(g, n // g, *x.shape[1:])
    s = (s - s.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=[1, 2, 3])  # [n/g]
    x = torch.cat([x, s.repeat(g).view(n, 1, 1, 1).expand(n, 1, 4, 4)], dim=1)
    x = conv(x, "b4.conv").flatten(1)
    fc_w, out_w = state["b4.fc.weight"], state["b4.out.weight"]
    x = F.leaky_relu(x @ (fc_w / math.sqrt(fc_w.shape[1])).t() + state["b4.fc.bias"], 0.2) * math.sqrt(2)
    return x @ (out_w / math.sqrt(out_w.shape[1])).t() + state["b4.out.bias"]


def test_untruncated_fakes_are_the_only_ones_the_discriminator_sees(tmp_path):
    # The sampler: the first k codes of a step are exactly its untruncated draws, the others are unchanged.
    from engine.io.checkpoints import build_generator, read_checkpoint

    G = build_generator(*read_checkpoint(TEACHER)[:2])
    s = LatentSampler(G.mapping, seed=3, mix_prob=0.5, trunc_prob=1.0, psi_min=0.0)
    every, kept = s.sample(6, step=2, device="cpu"), s.sample(6, step=2, device="cpu", untruncated=3)
    never = LatentSampler(G.mapping, seed=3, mix_prob=0.5, trunc_prob=0.0).sample(6, step=2, device="cpu")
    torch.testing.assert_close(kept[:3], never[:3], rtol=0, atol=0)
    torch.testing.assert_close(kept[3:], every[3:], rtol=0, atol=0)
    assert not torch.allclose(every[:3], never[:3])

    # The trainer: every sample truncated, yet D is shown only the untruncated first half of each batch, as fakes in
    # its own phase and in the student's.
    d = Distiller(tiny(tmp_path / "run", steps=2, batch=4, adv_weight=0.1, adv_start=0, adv_ramp=1, trunc_prob=1.0,
                       psi_min=0.0, adv_untruncated=True))
    seen = []
    d.D.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    ws = d.latents.sample(4, step=0, device="cpu", untruncated=2)
    expected = d.student.synthesis(ws, noise_mode="const").detach()
    d.train_step()
    fakes = [x for x in seen if x.shape[0] == 2]
    # The student's phase, D's fakes; D's reals and the R1 step's (step 0), whole batches.
    assert sorted(x.shape[0] for x in seen) == [2, 2, 4, 4]
    for x in fakes:
        torch.testing.assert_close(x, expected[:2], rtol=0, atol=1e-5)


def test_the_discriminator_warms_up_alone_before_the_adversarial_term(tmp_path):
    # Steps 0-1: pure distillation; 2-3: D alone (the student and its EMA untouched); from 4: both.
    d = Distiller(tiny(tmp_path / "run", steps=5, batch=2, adv_weight=0.1, adv_start=4, adv_ramp=1, d_warmup=2))
    assert [d.d_warming_at(s) for s in range(6)] == [False, False, True, True, False, False]
    d.train_step()
    d.train_step()
    student, ema = copy.deepcopy(d.student.state_dict()), copy.deepcopy(d.ema.state_dict())
    D0 = copy.deepcopy(d.D.state_dict())
    for _ in range(2):
        v = d.train_step()
        assert "d_loss" in v and "grad_norm" not in v and v["adv_weight"] == 0
    _assert_same(d.student.state_dict(), student)
    _assert_same(d.ema.state_dict(), ema)
    assert any(not torch.equal(D0[k], t) for k, t in d.D.state_dict().items()), "D trained"
    v = d.train_step()
    assert v["adv_weight"] > 0 and "g_adv" in v and "grad_norm" in v
    assert any(not torch.equal(student[k], t) for k, t in d.student.state_dict().items()), "the student trains again"


def _crops(path: Path, n: int, g: torch.Generator, size: int = 64) -> torch.Tensor:
    im = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
    out = []
    for _ in range(n):
        s = int(torch.randint(min(im.shape[1:]) // 2, min(im.shape[1:]), (1,), generator=g))
        y, x = (int(torch.randint(0, im.shape[i] - s + 1, (1,), generator=g)) for i in (1, 2))
        out.append(F.interpolate(im[None, :, y : y + s, x : x + s], size=(size, size), mode="area"))
    return torch.cat(out)


def test_feature_matching_pulls_the_samples_statistics_toward_the_real_images():
    g = torch.Generator().manual_seed(0)
    fm = FeatureMatching(momentum=0.5)
    with pytest.raises(RuntimeError, match="set_statistics"):
        fm(torch.zeros(2, 3, 32, 32))
    with torch.no_grad():
        reals = torch.cat([_crops(IMAGES / name, 8, g) for name in sorted(os.listdir(IMAGES))])
        fm.set_statistics("real", fm.features(reals))
    x = torch.empty(4, 3, 32, 32).uniform_(-0.2, 0.2, generator=g).requires_grad_(True)

    def distance() -> dict[str, float]:  # the samples' own statistics against the target, not the running ones
        with torch.no_grad():
            fm.set_statistics("fake", fm.features(x))
            return {k: float(v) for k, v in fm(x).items()}

    before = distance()
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(8):
        opt.zero_grad()
        fm(x)["fm"].backward()
        opt.step()
    after = distance()
    # Measured: mean term 480 → 388, total 7,721 → 7,621 (the covariance of 4 samples against 16 moves slowly).
    assert after["fm_mean"] < 0.9 * before["fm_mean"] and after["fm"] < before["fm"], (before, after)
    assert math.isclose(after["fm"], after["fm_mean"] + after["fm_cov"], rel_tol=1e-5)


def test_feature_matching_in_a_run_reads_the_real_images_once_and_resumes_with_its_statistics(tmp_path):
    with pytest.raises(UserError, match="give --data"):
        Distiller(tiny(tmp_path / "none", fm_weight=1e-3))
    kw = dict(steps=2, fm_weight=1e-3, fm_batch=2, fm_count=4, data=str(IMAGES), ckpt_every=2)
    d = Distiller(tiny(tmp_path / "run", **kw))
    assert d.D is None and not d.fm.ready
    assert d.run() == "done"
    taken = d.reals.state_dict()["taken"]
    assert taken == 2  # fm_count 4 real images at batch 2, read once for the target; no discriminator reads any
    rows = read_csv(tmp_path / "run" / "losses.csv")
    assert len(rows) == 2 and all(float(r["fm"]) > 0 for r in rows)
    assert all(math.isclose(float(r["fm"]), float(r["fm_mean"]) + float(r["fm_cov"]), rel_tol=1e-4) for r in rows)
    again = Distiller(tiny(tmp_path / "run", **{**kw, "steps": 3}), resume=True)
    assert again.fm.ready, "the statistics come back from the checkpoint"
    for name in ("real_mean", "real_cov", "fake_mean", "fake_cov", "counts"):
        torch.testing.assert_close(getattr(again.fm, name), getattr(d.fm, name), rtol=0, atol=0)
    v = again.train_step()
    assert v["fm"] > 0 and again.reals.state_dict()["taken"] == taken


def test_a_projected_discriminator_trains_only_its_heads_and_tells_images_apart_within_steps():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    D = ProjectedDiscriminator(ProjectedConfig(resolution=32)).train()
    assert not D.backbone.training, "the backbone's BatchNorm keeps its ImageNet statistics"
    frozen = copy.deepcopy(D.backbone.state_dict())
    opt = torch.optim.Adam([p for p in D.parameters() if p.requires_grad], lr=2e-3, betas=(0.0, 0.99))
    assert len(opt.param_groups[0]["params"]) == len(list(D.heads.parameters()))
    photos = [_crops(IMAGES / name, 8, g, size=32) for name in sorted(os.listdir(IMAGES))]
    real = torch.cat([p[:4] for p in photos])
    fake = F.avg_pool2d(real, 3, stride=1, padding=1)  # the same photos, blurred: what a soft generator makes
    losses = []
    for _ in range(30):
        loss = discriminator_adversarial(D(fake), D(real))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Measured: 1.42 → 0.008 over 30 steps (a new pixel D stayed at 1.39 for 800 steps on the demo student).
    assert losses[0] > 1.2 and np.mean(losses[-5:]) < 0.5, losses
    held_out = torch.cat([p[4:] for p in photos])  # crops no step saw
    assert float(D(held_out).mean()) > float(D(F.avg_pool2d(held_out, 3, stride=1, padding=1)).mean())
    _assert_same(D.backbone.state_dict(), frozen)
    # In the generator's phase D is frozen, and its gradient still reaches the image.
    D.requires_grad_(False)
    x = fake[:2].clone().requires_grad_(True)
    generator_adversarial(D(x)).backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None or not p.requires_grad for p in D.backbone.parameters())
    D.requires_grad_(True)
    assert not any(p.requires_grad for p in D.backbone.parameters())


def test_a_run_with_a_projected_discriminator_resumes_with_it_and_a_change_of_kind_starts_another(tmp_path, capsys):
    kw = dict(steps=2, adv_weight=0.1, adv_start=0, adv_ramp=1, ckpt_every=2, d_kind="projected", data=str(IMAGES))
    first = Distiller(tiny(tmp_path / "run", **kw))
    assert isinstance(first.D, ProjectedDiscriminator) and first.d_origin.startswith("discriminator: projected")
    assert first.run() == "done"
    rows = read_csv(tmp_path / "run" / "losses.csv")
    assert all(float(r["d_loss"]) > 0 for r in rows) and "projected" in json.loads(
        (tmp_path / "run" / "config.json").read_text())["discriminator"]["kind"]
    again = Distiller(tiny(tmp_path / "run", **{**kw, "steps": 3}), resume=True)
    assert "from the checkpoint" in again.d_origin
    torch.testing.assert_close(again.D.state_dict(), first.D.state_dict(), rtol=0, atol=0)
    assert again.opt_D.state_dict()["state"], "D's optimiser moments come back too"
    assert again.run() == "done"
    pixel = Distiller(tiny(tmp_path / "run", **{**kw, "steps": 4, "d_kind": "stylegan2"}), resume=True)
    assert pixel.d_origin == "discriminator: new (stylegan2; the run's was projected)"
    assert isinstance(pixel.D, Discriminator) and pixel.run() == "done"


def test_a_warm_start_begins_from_an_earlier_student_and_keeps_its_ema(tmp_path):
    first = Distiller(tiny(tmp_path / "a", steps=2))
    assert first.run() == "done"
    earlier = tmp_path / "a" / "student.safetensors"
    with pytest.raises(UserError, match="a teacher"):
        Distiller(tiny(tmp_path / "wrong", init=str(TEACHER)))
    assert not (tmp_path / "wrong").exists(), "a wrong file leaves no run folder behind"
    d = Distiller(tiny(tmp_path / "b", steps=3, init=str(earlier)))
    start = load_generator(earlier).synthesis.state_dict()
    _assert_same(d.student.synthesis.state_dict(), start)
    _assert_same(d.ema.synthesis.state_dict(), start)
    saved = json.loads((tmp_path / "b" / "config.json").read_text())["distill"]
    assert saved["init"] == str(earlier) and saved["ema_rampup"] is None
    assert d.run() == "done"
    # Resumed from its config.json (what `main.py distill --resume` does), the run keeps the EMA it began with.
    cfg = DistillConfig.load(tmp_path / "b" / "config.json")
    cfg.steps = 4
    again = Distiller(cfg, resume=True)
    assert again.cfg.ema_rampup is None and again.run() == "done"


def test_a_resume_with_a_wider_discriminator_starts_a_new_one(tmp_path, capsys):
    kw = dict(steps=2, adv_weight=0.1, adv_start=0, adv_ramp=1, ckpt_every=2)
    first = Distiller(tiny(tmp_path / "run", **kw))
    assert first.run() == "done"
    narrow = dict(first.D.cfg.channels)
    capsys.readouterr()
    wider = Distiller(tiny(tmp_path / "run", **{**kw, "steps": 3, "d_width": 2.0}), resume=True)
    out = capsys.readouterr().out
    assert "d_width 1.0 → 2.0" in out and wider.d_origin.startswith("discriminator: new, randomly initialised")
    assert wider.D.cfg.channels == {r: min(2 * c, 512) for r, c in narrow.items()}
    assert {id(p) for g in wider.opt_D.param_groups for p in g["params"]} == {id(p) for p in wider.D.parameters()}
    assert not wider.opt_D.state_dict()["state"], "a new D starts with fresh moments"
    assert wider.run() == "done"
    # Resumed again at that width, the run keeps its (now wider) D; so it does when a larger channel base changes
    # nothing under the teacher's cap.
    again = Distiller(tiny(tmp_path / "run", **{**kw, "steps": 4, "d_width": 2.0, "d_channel_base": 2**20}),
                      resume=True)
    assert "from the checkpoint" in again.d_origin and again.D.cfg.channels == wider.D.cfg.channels
    torch.testing.assert_close(again.D.state_dict(), wider.D.state_dict(), rtol=0, atol=0)


def test_discriminator_loads_nvidia_names_and_computes_nvidias_function():
    record, shapes = _nvidia_d_record()
    D = Discriminator.from_nvidia(record)
    own = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    assert own == shapes  # every NVIDIA parameter, nothing else
    assert D.cfg.conv_clamp == 256 and D.cfg.source == "nvidia"
    img = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(D(img), _reference_d(record["state"], img), rtol=1e-4, atol=1e-4)

    chosen, origin = discriminator_for_teacher({"D": record}, 64)
    assert chosen.cfg.source == "nvidia" and "teacher" in origin
    fresh, origin = discriminator_for_teacher({}, 64, channels={4: 32, 8: 32, 16: 32, 32: 16, 64: 8})
    assert fresh.cfg.source == "new" and "none" in origin and fresh.cfg.channels[64] == 8
    record["init_kwargs"]["architecture"] = "skip"
    assert discriminator_for_teacher({"D": record}, 64)[0].cfg.source == "new"  # not reproduced: start fresh


def test_rosinality_discriminator_is_the_same_function_under_other_names():
    record, _ = _nvidia_d_record(seed=2)
    s = record["state"]
    ros = {"convs.0.0.weight": s["b64.fromrgb.weight"], "convs.0.1.bias": s["b64.fromrgb.bias"],
           "final_conv.0.weight": s["b4.conv.weight"], "final_conv.1.bias": s["b4.conv.bias"],
           "final_linear.0.weight": s["b4.fc.weight"], "final_linear.0.bias": s["b4.fc.bias"],
           "final_linear.1.weight": s["b4.out.weight"], "final_linear.1.bias": s["b4.out.bias"]}
    for i, r in enumerate((64, 32, 16, 8)):
        p = f"convs.{i + 1}"
        ros.update({f"{p}.conv1.0.weight": s[f"b{r}.conv0.weight"], f"{p}.conv1.1.bias": s[f"b{r}.conv0.bias"],
                    f"{p}.conv2.1.weight": s[f"b{r}.conv1.weight"], f"{p}.conv2.2.bias": s[f"b{r}.conv1.bias"],
                    f"{p}.skip.1.weight": s[f"b{r}.skip.weight"], f"{p}.conv2.0.kernel": torch.ones(4, 4)})
    D = Discriminator.from_rosinality(ros)
    assert D.cfg.source == "rosinality" and D.cfg.conv_clamp is None
    img = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(D(img), _reference_d(s, img, clamp=math.inf), rtol=1e-4, atol=1e-4)


def test_minibatch_stddev_groups_and_odd_batches():
    x = torch.randn(6, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    y = minibatch_stddev(x, group_size=4)  # 6 is not a multiple of 4: groups of 3
    assert y.shape == (6, 5, 4, 4)
    # Sample i is in group i mod 2 with samples i+2, i+4.
    expect = x[0::2].std(dim=0, unbiased=False).mean()
    torch.testing.assert_close(y[0, 4, 0, 0], expect, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y[2, 4], y[0, 4])
    assert minibatch_stddev(torch.randn(5, 2, 4, 4), 4).shape == (5, 3, 4, 4)
    D = Discriminator(DiscriminatorConfig(resolution=16, channels={4: 8, 8: 8, 16: 8}))
    assert D(torch.randn(3, 3, 16, 16)).shape == (3, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Logs


def test_loss_plot_without_matplotlib(tmp_path):
    csv = tmp_path / "losses.csv"
    lines = ["step,loss,perceptual,g_adv"] + [f"{i},{2 / i},{1 / i},{'' if i < 5 else 0.7}" for i in range(1, 30)]
    csv.write_text("\n".join(lines) + "\n")
    png = plot_losses(csv, tmp_path / "losses.png", ["loss", "perceptual", "g_adv", "d_loss"], "t", backend="pil")
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] >= 3 * 300  # three panels (d_loss has no values)
    blue = (img[..., 2] > 150) & (img[..., 0] < 80)
    assert blue.sum() > 200  # the smoothed curves are drawn
