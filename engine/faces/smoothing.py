"""Temporal smoothing of webcam landmarks: the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012).

A low-pass filter whose cutoff rises with speed: a still face is smoothed hard (no jitter in the crop), a moving face
barely (no lag). Every element of the landmark array is filtered on its own, driven by real timestamps so a dropped
frame or a slow camera does not change the behaviour.
"""

from __future__ import annotations

import math
import time

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class LandmarkSmoother:
    """One-Euro filter over arrays of landmarks (any shape, e.g. 478 x 2).

    With `scale_invariant` (the default) speeds are measured in face sizes per second (the extent of the landmark
    set), so one setting works for a 480p webcam and a 4K one. Without it they are in input units per second.
    """

    def __init__(
        self,
        min_cutoff: float = 0.4,  # Hz: cutoff for a still face; lower = smoother, more lag when motion starts
        beta: float = 10.0,  # how fast the cutoff rises with speed; higher = less lag when moving
        d_cutoff: float = 1.0,  # Hz: cutoff of the speed estimate itself
        scale_invariant: bool = True,  # measure speed in face sizes (extent of the landmarks) per second
        reset_after: float = 0.5,  # seconds without a frame after which the history is dropped (face lost)
    ):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 and beta >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.scale_invariant = scale_invariant
        self.reset_after = float(reset_after)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float | None = None) -> np.ndarray:
        """Filter one observation taken at time t (seconds; the monotonic clock when None); returns the estimate."""
        x = np.asarray(x, np.float64)
        t = time.monotonic() if t is None else float(t)
        if (
            self._x is None
            or self._x.shape != x.shape
            or t - self._t > self.reset_after
            or t < self._t  # time went backwards: a new stream
        ):
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # same timestamp twice: nothing new can be said about speed
            return self._x.copy()
        speed = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (speed - self._dx)
        magnitude = np.abs(self._dx)
        if self.scale_invariant and x.ndim >= 2:
            extent = float(np.max(x.reshape(-1, x.shape[-1]).max(0) - x.reshape(-1, x.shape[-1]).min(0)))
            magnitude = magnitude / max(extent, 1e-6)
        cutoff = self.min_cutoff + self.beta * magnitude
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.copy()
