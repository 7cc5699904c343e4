"""Discretizers: how a continuous latent u becomes a (relaxed) point of the grid ``offset + Z`` during inference.

Every iterative inference method optimizes the same rate-distortion objective; they differ only in the map from
the continuous variable u to the value fed to the decoder and the entropy model.  With v = u - offset,
f = floor(v) and r = v - f in [0, 1):

* ``SGA`` [M1] (Stochastic Gumbel Annealing): round down or up with tempered probabilities

      logits = [-atanh(r), -atanh(1 - r)] / tau,

  (atanh arguments clipped to 1 - 1e-5), and sample the choice with the Gumbel-softmax relaxation at the same
  temperature: w = softmax((logits + g) / tau), g ~ Gumbel(0, 1)^2; the value is offset + f + w_up.
  As tau -> 0 the sample becomes hard: offset + round(v) with probability -> 1 (the nearer neighbour wins).
  Other rounding-probability functions (linear, cosine, sigmoid-scaled logit) and three-class rounding plug in
  through :mod:`~tfc_inference.rounding` (``SGA(rounding=..., three_class=...)``): the value is then the
  Gumbel-softmax-weighted sum of the candidate grid points.
* ``DeterministicAnnealing`` [A4]: the expectation of the same tempered rounding: offset + f + P(up).
* ``MAP`` [A1]: u itself (continuous); rounded only at the end.
* ``STE`` [A2]: offset + round(v), gradient passed straight through.
* ``UniformNoise`` [A3]: u + n, n ~ U(-1/2, 1/2), as in training.

Randomness uses stateless ops keyed by (seed, step), so a run is exactly repeatable, and every image of a batch
gets the same draw, so batched and one-by-one optimization agree.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfc_inference import rounding as rounding_lib

ATANH_CLIP = 1.0 - 1e-5


def sga_logits(r: tf.Tensor, tau) -> tf.Tensor:
    """Logits [down, up] (last axis) of SGA's tempered rounding for fractional parts r in [0, 1)."""
    down = -tf.math.atanh(tf.clip_by_value(r, -ATANH_CLIP, ATANH_CLIP)) / tau
    up = -tf.math.atanh(tf.clip_by_value(1.0 - r, -ATANH_CLIP, ATANH_CLIP)) / tau
    return tf.stack([down, up], axis=-1)


def sga_round_up_probability(r: tf.Tensor, tau) -> tf.Tensor:
    """P(round up) = softmax(logits)[up] of SGA's tempered rounding."""
    return tf.nn.softmax(sga_logits(r, tau), axis=-1)[..., 1]


def _per_image_uniform(shape, seed, minval, maxval) -> tf.Tensor:
    """Uniform noise of ``shape`` [B, ...] where every image of the batch gets the same draw, so a batch is
    optimized exactly as its images would be one by one."""
    shape = tf.convert_to_tensor(shape)
    one = tf.random.stateless_uniform(tf.concat([[1], shape[1:]], 0), seed, minval=minval, maxval=maxval)
    return tf.broadcast_to(one, shape)


def _gumbel(shape, seed) -> tf.Tensor:
    u = _per_image_uniform(shape, seed, 1e-20, 1.0)
    return -tf.math.log(-tf.math.log(u))


@dataclasses.dataclass(frozen=True)
class Discretizer:
    """Base class.  ``__call__(u, offset, tau, seed)`` returns the relaxed value; ``seed`` is an int32 [2] tensor."""

    name = "base"
    #: Adam learning rate the paper used with this method.
    default_learning_rate = 0.005
    #: Return the best discrete point seen (early stopping) instead of the final one, as the paper did for A1/A2.
    keep_best = False
    uses_temperature = False

    def __call__(self, u, offset, tau, seed):
        raise NotImplementedError

    def describe(self) -> str:
        """Name plus non-default options (for records and progress bars)."""
        return self.name


@dataclasses.dataclass(frozen=True)
class SGA(Discretizer):
    """Stochastic Gumbel Annealing; ``rounding`` picks the rounding-probability function (default the paper's
    atanh), ``three_class`` rounds among round(v) - 1, round(v), round(v) + 1 instead of floor / ceil."""

    name = "sga"
    uses_temperature = True
    rounding: rounding_lib.RoundingFunction = dataclasses.field(default_factory=rounding_lib.Atanh)
    three_class: bool = False

    def __call__(self, u, offset, tau, seed):
        base, steps, logits = rounding_lib.tempered_logits(self.rounding, u - offset, tau, self.three_class)
        w = tf.nn.softmax((logits + _gumbel(tf.shape(logits), seed)) / tau, axis=-1)
        return offset + base + tf.reduce_sum(w * steps, axis=-1)

    def describe(self) -> str:
        return self.name + ("" if self.rounding.name == "atanh" and not self.three_class else
                            f"[{self.rounding.spec()}{', 3-class' if self.three_class else ''}]")


@dataclasses.dataclass(frozen=True)
class DeterministicAnnealing(SGA):
    """The expectation of SGA's tempered rounding instead of a Gumbel-softmax sample."""

    name = "deterministic-annealing"

    def __call__(self, u, offset, tau, seed):
        base, steps, logits = rounding_lib.tempered_logits(self.rounding, u - offset, tau, self.three_class)
        return offset + base + tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * steps, axis=-1)


@dataclasses.dataclass(frozen=True)
class MAP(Discretizer):
    name = "map"
    keep_best = True

    def __call__(self, u, offset, tau, seed):
        return u


@dataclasses.dataclass(frozen=True)
class STE(Discretizer):
    name = "ste"
    default_learning_rate = 1e-4
    keep_best = True

    def __call__(self, u, offset, tau, seed):
        v = u - offset
        return offset + v + tf.stop_gradient(tf.round(v) - v)


@dataclasses.dataclass(frozen=True)
class UniformNoise(Discretizer):
    name = "uniform-noise"

    def __call__(self, u, offset, tau, seed):
        return u + _per_image_uniform(tf.shape(u), seed, -0.5, 0.5)


DISCRETIZERS = {d.name: d for d in (SGA, DeterministicAnnealing, MAP, STE, UniformNoise)}


def get(name: str, rounding=None, three_class: bool = False) -> Discretizer:
    """A discretizer by method name; ``rounding`` (a :mod:`~tfc_inference.rounding` spec) and ``three_class``
    apply to the annealing methods (``sga``, ``deterministic-annealing``) only."""
    key = name.replace("_", "-").lower()
    try:
        cls = DISCRETIZERS[key]
    except KeyError:
        raise ValueError(f"unknown discretization method {name!r}; expected one of {sorted(DISCRETIZERS)}") from None
    if issubclass(cls, SGA):
        return cls(rounding=rounding_lib.get(rounding), three_class=bool(three_class))
    if rounding is not None or three_class:
        raise ValueError(f"--rounding / three-class rounding apply to sga and deterministic-annealing, not {key}")
    return cls()
