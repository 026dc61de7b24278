"""Measurements that back our claims: parameters, FLOPs (2 × multiply-accumulates) and CPU latency."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.models.config import ModelConfig, ffhq_teacher_channels
from engine.models.generator import Generator
from engine.runtime import prepare_for_cpu


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_params(G: Generator) -> int:
    """Synthesis parameters on the inference path (the student's auxiliary heads, used only in training, excluded)."""
    syn = G.synthesis
    if not G.is_student:
        return count_params(syn)
    last = f"head{syn.levels[-1]}."
    return sum(p.numel() for n, p in syn.named_parameters() if not (n.startswith("head") and not n.startswith(last)))


def synthesis_flops(G: Generator) -> int:
    """FLOPs of one synthesis pass at batch 1, counted by torch on the matmuls and convolutions (2 per MAC)."""
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        G.synthesis(ws, noise_mode="const")
    return int(counter.get_total_flops())


def latency_ms(fn, repeats: int = 20, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "repeats": repeats}


def bench_synthesis(G: Generator, repeats: int = 20) -> dict:
    G = prepare_for_cpu(G)
    ws = G.mapping(torch.randn(1, G.z_dim))
    with torch.inference_mode():
        lat = latency_ms(lambda: G.synthesis(ws, noise_mode="const"), repeats=repeats)
    flops = synthesis_flops(G)
    return {
        "arch": G.cfg.arch,
        "resolution": G.resolution,
        "synthesis_params": count_params(G.synthesis),
        "inference_params": inference_params(G),
        "flops": flops,
        "macs": flops // 2,
        **lat,
    }


def standard_configs() -> dict[str, ModelConfig]:
    """Teacher at the FFHQ-256 (stylegan2-ada 'paper256') and FFHQ-1024 ('stylegan2') configurations; students."""
    return {
        "teacher-256": ModelConfig(arch="stylegan2", resolution=256, channels=ffhq_teacher_channels(256, 16384)),
        "teacher-1024": ModelConfig(arch="stylegan2", resolution=1024, channels=ffhq_teacher_channels(1024, 32768)),
        "student-256": ModelConfig(arch="blazestylegan", resolution=256),
        "student-512": ModelConfig(arch="blazestylegan", resolution=512),
        "student-1024": ModelConfig(arch="blazestylegan", resolution=1024),
    }
