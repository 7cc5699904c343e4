"""Temperature annealing schedules tau(t) for Stochastic Gumbel Annealing and deterministic annealing.

All schedules here are exponential decays capped above by ``tau0`` and below by ``tau_min``:

    tau(t) = clip(tau0 * exp(-rate * (t - t0)), tau_min, tau0)

* ``paper``:     tau(t) = min(0.5, exp(-c t)), c = 0.001 (the paper's Section 3.2 formula).  This is the form above
  with tau0 = 0.5 and t0 = ln(2) / c (about 693 steps for c = 0.001).
* ``improved``:  tau0 = 0.5 held flat for t0 = 700 steps, then decaying with c = 0.001; what the official code
  actually ran (supplement, Figure S3): ~0.14 at step 2000.  For another budget of T steps, ``get("improved",
  T)`` stretches it in time (t0 = 0.35 T, c = 2 / T): flat for the first 35%, ~0.14 at the end, so a short run
  still ends nearly discrete.  At T = 2000 it is exactly the official schedule.

A schedule is a small immutable object, callable on a step (Python int or int tensor) inside ``tf.function``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class ExponentialSchedule:
    """tau(t) = clip(tau0 * exp(-rate * (t - t0)), tau_min, tau0)."""

    tau0: float = 0.5
    rate: float = 1e-3
    t0: float = 700.0
    tau_min: float = 1e-8
    name: str = "improved"

    def __call__(self, step):
        import tensorflow as tf
        t = tf.cast(step, tf.float32)
        tau = self.tau0 * tf.exp(-self.rate * (t - self.t0))
        return tf.clip_by_value(tau, self.tau_min, self.tau0)

    def numpy(self, step) -> np.ndarray:
        """The same schedule in numpy (for plots and tests)."""
        tau = self.tau0 * np.exp(-self.rate * (np.asarray(step, np.float64) - self.t0))
        return np.clip(tau, self.tau_min, self.tau0)


def paper(rate: float = 1e-3) -> ExponentialSchedule:
    """The paper's tau(t) = min(0.5, exp(-rate * t))."""
    return ExponentialSchedule(tau0=0.5, rate=rate, t0=math.log(2.0) / rate, name=f"paper(c={rate:g})")


def improved(tau0: float = 0.5, rate: float = 1e-3, t0: float = 700.0) -> ExponentialSchedule:
    """tau0 for t0 steps, then exponential decay at ``rate`` (the official code's schedule)."""
    return ExponentialSchedule(tau0=tau0, rate=rate, t0=t0, name=f"improved(tau0={tau0:g},c={rate:g},t0={t0:g})")


def constant(tau: float) -> ExponentialSchedule:
    return ExponentialSchedule(tau0=tau, rate=0.0, t0=0.0, tau_min=tau, name=f"constant({tau:g})")


SCHEDULES = {"paper": paper, "improved": improved}


def improved_for(iterations: int) -> ExponentialSchedule:
    """The improved schedule stretched to a budget of ``iterations`` steps (identical at 2000)."""
    if iterations == 2000 or iterations <= 0:
        return improved()
    scale = iterations / 2000.0
    return improved(rate=1e-3 / scale, t0=700.0 * scale)


def get(schedule: Union[str, ExponentialSchedule, None], iterations: int = 2000) -> ExponentialSchedule:
    """A schedule by name (``paper``, ``improved``) or passed through; ``None`` means ``improved``.

    ``improved`` is stretched to the budget of ``iterations`` steps (see the module docstring); ``paper`` is
    always the paper's formula.
    """
    if schedule is None or schedule == "improved":
        return improved_for(iterations)
    if isinstance(schedule, ExponentialSchedule):
        return schedule
    try:
        return SCHEDULES[schedule]()
    except KeyError:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {sorted(SCHEDULES)}") from None
