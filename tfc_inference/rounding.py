"""Rounding-probability functions for stochastic (Gumbel) annealing over integer latents.

A continuous latent v is rounded to one of a few nearby grid points k (its *candidates*), with probabilities that
depend only on the distances d_k = |v - k| and a temperature tau:

    P(k) = softmax_k( l(d_k) / tau ),

where l is a decreasing *log-weight* function of the distance.  With two candidates (floor and ceil, r = v - floor(v)):
the down candidate has d = r, the up one d = 1 - r.  The functions here:

* ``atanh`` (the paper's SGA):      l(d) = -atanh(d)
* ``linear``:                        l(d) = log(1 - d)            (at tau = 1: P(up) = r exactly)
* ``cosine``:                        l(d) = log(cos^2(pi d / 2))  (at tau = 1: P(up) = sin^2(pi r / 2))
* ``sigmoid_logit`` (scale a):       l(d) = log sigmoid(-a logit(d))  (at tau = 1: P(up) = sigmoid(a logit(r));
                                     a = 1 is ``linear``, larger a rounds more sharply)

All are exact at the grid (a latent on a grid point keeps it with probability 1: candidates at distance >= 1
get weight exactly 0), symmetric
(P(up | r) = P(down | 1 - r)), monotone in r, and as tau -> 0 put all mass on the nearest candidate; as tau grows,
the probabilities flatten towards uniform.  These alternatives to atanh follow the idea of Perugachi-Diaz, Gansekoele
and Bhulai (SGA+, NeurIPS 2024); the exact forms and the three-class variant below are this package's own.

*Three-class* rounding uses the candidates n - 1, n, n + 1 around n = round(v) and rescales distances by a
``width`` w (default 1.5, so the farther neighbour, at distance up to 1.5, keeps a small weight): l(d / w).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, Type

import tensorflow as tf

#: distances are clipped to [0, 1 - EPS] so every log-weight stays finite
EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class RoundingFunction:
    """Base class: ``log_weight(d)`` for distances d in [0, 1]; decreasing, finite after clipping."""

    name = "base"

    def log_weight(self, d: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def spec(self) -> str:
        """The string :func:`get` parses back into this object."""
        return self.name


@dataclasses.dataclass(frozen=True)
class Atanh(RoundingFunction):
    name = "atanh"

    def log_weight(self, d):
        return -tf.math.atanh(tf.clip_by_value(d, 0.0, 1.0 - EPS))


@dataclasses.dataclass(frozen=True)
class Linear(RoundingFunction):
    name = "linear"

    def log_weight(self, d):
        return tf.math.log(1.0 - tf.clip_by_value(d, 0.0, 1.0 - EPS))


@dataclasses.dataclass(frozen=True)
class Cosine(RoundingFunction):
    name = "cosine"

    def log_weight(self, d):
        # cos^2(pi d / 2) >= cos^2(pi (1 - EPS) / 2) ~ (pi EPS / 2)^2 > 0
        return 2.0 * tf.math.log(tf.cos(0.5 * math.pi * tf.clip_by_value(d, 0.0, 1.0 - EPS)))


@dataclasses.dataclass(frozen=True)
class SigmoidLogit(RoundingFunction):
    name = "sigmoid_logit"
    scale: float = 2.0

    def log_weight(self, d):
        d = tf.clip_by_value(d, EPS, 1.0 - EPS)
        logit = tf.math.log(d) - tf.math.log1p(-d)
        return tf.math.log_sigmoid(-self.scale * logit)

    def spec(self) -> str:
        return f"{self.name}(a={self.scale:g})"


FUNCTIONS: Dict[str, Type[RoundingFunction]] = {f.name: f for f in (Atanh, Linear, Cosine, SigmoidLogit)}


def get(spec) -> RoundingFunction:
    """A rounding function from a name or spec: ``atanh``, ``linear``, ``cosine``, ``sigmoid_logit``,
    ``sigmoid_logit(a=3)``; objects pass through."""
    if isinstance(spec, RoundingFunction):
        return spec
    if spec is None:
        return Atanh()
    m = re.fullmatch(r"\s*([a-z_-]+)\s*(?:\(\s*(?:a\s*=\s*)?([0-9.eE+-]+)\s*\))?\s*", str(spec))
    name = m.group(1).replace("-", "_") if m else None
    if name not in FUNCTIONS:
        raise ValueError(f"unknown rounding function {spec!r}; expected one of {sorted(FUNCTIONS)} "
                         f"(sigmoid_logit takes a scale: sigmoid_logit(a=2))")
    if m.group(2) is None:
        return FUNCTIONS[name]()
    if name != "sigmoid_logit":
        raise ValueError(f"rounding function {name!r} takes no parameter")
    scale = float(m.group(2))
    if not scale > 0:
        raise ValueError(f"sigmoid_logit scale must be > 0, got {scale}")
    return SigmoidLogit(scale)


def candidates(v: tf.Tensor, three_class: bool = False):
    """(base, steps, distances): the candidates of v are base + steps[k] (base gradient-free, steps [0, 1] or
    [-1, 0, 1] on the last axis) at distances |v - candidate|."""
    if three_class:
        base = tf.stop_gradient(tf.round(v))
        steps = tf.constant([-1.0, 0.0, 1.0])
    else:
        base = tf.stop_gradient(tf.floor(v))
        steps = tf.constant([0.0, 1.0])
    return base, steps, tf.abs((v - base)[..., None] - steps)


def tempered_logits(fn: RoundingFunction, v: tf.Tensor, tau, three_class: bool = False, width: float = 1.5):
    """(base, steps, logits l(d_k) / tau) for latents v; softmax of the logits gives P(base + steps[k])."""
    base, steps, dist = candidates(v, three_class)
    if three_class:
        dist = dist / width
    # a candidate at distance >= 1 (the far side when v sits exactly on the grid) gets probability exactly 0
    logits = tf.where(dist >= 1.0, -math.inf, fn.log_weight(dist) / tau)
    return base, steps, logits


def round_up_probability(fn, r, tau) -> tf.Tensor:
    """Two-class P(round up) for fractional parts r in [0, 1) (for plots and tests)."""
    r = tf.convert_to_tensor(r, tf.float32)
    _, _, logits = tempered_logits(get(fn), r, tau)
    return tf.nn.softmax(logits, axis=-1)[..., 1]
