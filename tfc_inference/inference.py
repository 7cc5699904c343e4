"""Hybrid amortized-iterative inference: per-image optimization of the latents of a trained codec.

Starting from the amortized encoder's (y, z), we minimize over continuous variables (u_y, u_z) the relaxed
rate-distortion objective

    L(u_y, u_z) = [ -log2 p(y~ | z~) - log2 p(z~) ] / #pixels  +  lambda * MSE(x, g_s(y~)),

    z~ = D(u_z; offset 0, tau_t),   y~ = D(u_y; offset mu(z~), tau_t),   (mu, sigma) = h_s(z~),

where D is a pluggable :mod:`~tfc_inference.discretize` discretizer (SGA, MAP, STE, uniform noise,
deterministic annealing) and tau_t an annealing :mod:`~tfc_inference.schedules` schedule.  Distortion counts only
the real image (not the padding); the rate counts every latent that is coded.  Optimizer: Adam
(:mod:`~tfc_inference.optim`), written out so the whole loop is one compiled ``tf.function`` whose state is
plain tensors (one trace serves every image of a size, and a batch of images is optimized in one call: Adam
is elementwise and the objective a sum of per-image terms, so a batch gives the same result as separate runs).

Every ``eval_every`` steps the *true* R-D is measured: hard rounding onto the coding grids (z_hat = round(u_z),
y_hat = mu(z_hat) + round(u_y - mu(z_hat))), rate from the range coder's probabilities, distortion of the
clipped 8-bit reconstruction.  The trace records it next to the relaxed loss (their difference is the
discretization gap).  The result is the final discrete point, or for MAP and STE the best one seen (as in the
paper).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfc_inference import discretize, optim, schedules

DEFAULT_ITERATIONS = 2000
DEFAULT_EVAL_EVERY = 50


@dataclasses.dataclass
class InferenceResult:
    """Discrete latents on the coding grid plus the optimization trace (per image: index 0 for one image)."""

    y_hat: tf.Tensor
    z_hat: tf.Tensor
    iterations: int
    info: Dict[str, Any]


class LatentOptimizer:
    """Runs one discretizer + schedule on a model; reusable across images (compiled once for all sizes)."""

    def __init__(self, model, method: str = "sga", schedule: Union[str, schedules.ExponentialSchedule, None] = None,
                 learning_rate: Optional[float] = None, seed: int = 0, rounding=None, three_class: bool = False,
                 precision: str = "float32"):
        """``precision="mixed_bfloat16"`` runs the relaxed loss and its gradients on a twin of the model with
        bfloat16 convolutions (weights copied; entropy models in float32); the true R-D evaluations, the choice of
        the final latents and the coding stay float32, so files decode exactly either way. Measured on kodim01
        with hyperprior-mse-0.01: 1.23x faster per step, same loss after 150 steps (2.3209 vs 2.3213)."""
        if precision not in ("float32", "mixed_bfloat16"):
            raise ValueError(f"precision must be float32 or mixed_bfloat16, got {precision!r}")
        self.model = model
        self.precision = precision
        self.relax_model = model if precision == "float32" else _bfloat16_twin(model)
        self.discretizer = discretize.get(method, rounding, three_class)
        self.schedule = schedules.get(schedule)
        self.learning_rate = float(learning_rate if learning_rate is not None
                                   else self.discretizer.default_learning_rate)
        self.seed = int(seed)
        # One trace for every image size and batch (unknown shapes): traced for exact shapes, Grappler's memory
        # optimizer rewrote a large gradient sum (AddN) into AssignAdds into a temporary variable, which add in
        # the order the terms finish, so two runs on the same image in one process could differ in the last bits.
        y_spec, z_spec = model.latent_specs()
        step = tf.TensorSpec([], tf.int64)
        self._chunk = tf.function(self._run_chunk, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32), (y_spec, z_spec) * 3, step, step,
            tf.TensorSpec([2], tf.int32)])
        self._true = tf.function(self._true_terms, reduce_retracing=True)

    # ------------------------------------------------------------------------------------------------------------
    def _distortion(self, x, x_hat, valid):
        """Per-image MSE over the valid (unpadded) region."""
        h, w = valid[0], valid[1]
        diff = tf.math.squared_difference(x[:, :h, :w], x_hat[:, :h, :w])
        return tf.reduce_mean(diff, axis=(1, 2, 3))

    def relaxed_terms(self, x, u_y, u_z, step, valid):
        """Per-image relaxed loss, bits and MSE at ``step`` (temperature and noise depend on the step)."""
        model = self.relax_model
        tau = self.schedule(step)
        step32 = tf.cast(step, tf.int32)
        seed_z = tf.stack([tf.constant(self.seed, tf.int32), 2 * step32])
        seed_y = tf.stack([tf.constant(self.seed, tf.int32), 2 * step32 + 1])
        z_t = self.discretizer(u_z, 0.0, tau, seed_z)
        mu, index = model.y_prior_params(z_t)
        y_t = self.discretizer(u_y, mu, tau, seed_y)
        bits = model.bits_y(y_t, mu, index) + model.bits_z(z_t)
        mse = self._distortion(x, model.synthesize(y_t), valid)
        num_pixels = tf.cast(valid[0] * valid[1], tf.float32)
        loss = bits / num_pixels + model.config.lmbda * mse
        return loss, bits, mse

    def discrete_latents(self, u_y, u_z):
        z_hat = self.model.round_z(u_z)
        mu, _ = self.model.coding_params(z_hat)
        return self.model.round_y(u_y, mu), z_hat

    def _true_terms(self, x, u_y, u_z, valid):
        model = self.model
        y_hat, z_hat = self.discrete_latents(u_y, u_z)
        mu, index = model.coding_params(z_hat)
        bits = model.bits_y(y_hat, mu, index) + model.bits_z(z_hat)
        x_hat = tf.round(tf.clip_by_value(model.synthesize(y_hat), 0.0, 255.0))
        mse = self._distortion(x, x_hat, valid)
        num_pixels = tf.cast(valid[0] * valid[1], tf.float32)
        return bits / num_pixels + model.config.lmbda * mse, bits / num_pixels, mse

    def _run_chunk(self, x, state, start, num_steps, valid):
        """``num_steps`` Adam steps from ``start``; state = (u_y, u_z, m_y, m_z, v_y, v_z).  Returns the new state
        and the last relaxed loss per image."""
        params, ms, vs = list(state[:2]), list(state[2:4]), list(state[4:])
        last = tf.zeros([tf.shape(x)[0]], tf.float32)
        for i in tf.range(num_steps):
            # the batch size is unknown in the trace: the loss is [None]
            tf.autograph.experimental.set_loop_options(shape_invariants=[(last, tf.TensorShape([None]))])
            t = start + i
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss, _, _ = self.relaxed_terms(x, params[0], params[1], t, valid)
                total = tf.reduce_sum(loss)
            grads = tape.gradient(total, params)
            params, ms, vs = optim.adam_step(params, grads, ms, vs, t, self.learning_rate)
            last = loss
        return tuple(params + ms + vs), last

    # ------------------------------------------------------------------------------------------------------------
    def run(self, x: tf.Tensor, valid_shape: Tuple[int, int], iterations: int = DEFAULT_ITERATIONS,
            eval_every: int = DEFAULT_EVAL_EVERY, keep_best: Optional[bool] = None, progress: Optional[bool] = False,
            init: Optional[Tuple[tf.Tensor, tf.Tensor]] = None) -> InferenceResult:
        """Optimizes the latents of a batch ``x`` [B, H, W, 3] (padded to multiples of 64, 0..255 floats).

        Args:
          valid_shape: (height, width) of the real image inside the padding (same for the whole batch).
          iterations: Adam steps.
          eval_every: steps between true R-D evaluations (the trace's resolution; also early stopping's).
          keep_best: return the best discrete point seen; default per method (MAP, STE: yes).
          progress: show a tqdm bar (``None``: only on a terminal).
          init: initial (u_y, u_z); default the amortized encoder's output.
        """
        from tqdm import tqdm
        if iterations < 0:
            raise ValueError("iterations must be >= 0")
        eval_every = max(1, int(eval_every))
        keep_best = self.discretizer.keep_best if keep_best is None else keep_best
        x = tf.convert_to_tensor(x, tf.float32)
        valid = tf.constant(valid_shape, tf.int32)
        if init is None:
            u_y, u_z = self.model.encode_latents(x)
        else:
            u_y, u_z = (tf.convert_to_tensor(t, tf.float32) for t in init)
        ms, vs = optim.init_state([u_y, u_z])
        state = tuple([u_y, u_z] + ms + vs)
        trace: List[Dict[str, Any]] = []
        best_loss = np.full([x.shape[0]], np.inf)
        best_y, best_z = u_y, u_z
        t0 = time.perf_counter()
        compute_seconds = 0.0
        bar = tqdm(total=iterations, desc=self.discretizer.describe(), unit="it", disable=(progress is False),
                   leave=False, dynamic_ncols=True)

        def evaluate(step, relaxed):
            nonlocal best_loss, best_y, best_z
            loss, bpp, mse = (v.numpy() for v in self._true(x, state[0], state[1], valid))
            tau = float(self.schedule(step)) if self.discretizer.uses_temperature else None
            psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
            trace.append(dict(step=step, tau=tau, loss=loss.tolist(), bpp=bpp.tolist(), psnr=psnr.tolist(),
                              relaxed_loss=None if relaxed is None else relaxed.tolist()))
            better = loss < best_loss
            if better.any():
                mask = tf.reshape(tf.constant(better), [-1, 1, 1, 1])
                best_y = tf.where(mask, state[0], best_y)
                best_z = tf.where(mask, state[1], best_z)
                best_loss = np.where(better, loss, best_loss)
            bar.set_postfix_str(f"tau={tau if tau is not None else float('nan'):.3f} bpp={bpp.mean():.4f} "
                                f"psnr={psnr.mean():.2f} loss={loss.mean():.4f}")

        evaluate(0, None)
        step = 0
        while step < iterations:
            n = min(eval_every - step % eval_every, iterations - step)
            tc = time.perf_counter()
            state, relaxed = self._chunk(x, state, tf.constant(step, tf.int64), tf.constant(n, tf.int64), valid)
            relaxed = relaxed.numpy()
            compute_seconds += time.perf_counter() - tc
            step += n
            bar.update(n)
            if step % eval_every == 0 or step == iterations:
                evaluate(step, relaxed)
        bar.close()
        final_y, final_z = (best_y, best_z) if keep_best else (state[0], state[1])
        y_hat, z_hat = self.discrete_latents(final_y, final_z)
        info = dict(method=self.discretizer.name, discretizer=self.discretizer.describe(), schedule=self.schedule.name,
                    learning_rate=self.learning_rate, precision=self.precision,
                    seed=self.seed, iterations=iterations, eval_every=eval_every, keep_best=keep_best,
                    seconds=time.perf_counter() - t0,
                    seconds_per_iteration=compute_seconds / iterations if iterations else 0.0,
                    trace=trace, best_true_loss=best_loss.tolist())
        return InferenceResult(y_hat=y_hat, z_hat=z_hat, iterations=iterations, info=info)


_OPTIMIZERS: Dict[Tuple, LatentOptimizer] = {}


def _bfloat16_twin(model):
    """A copy of ``model`` whose convolutions compute in bfloat16 (variables and entropy models float32)."""
    from tfc_inference.models import build_model
    twin = build_model(model.config, "mixed_bfloat16")
    twin.set_weights(model.get_weights())
    return twin


def get_optimizer(model, method: str, schedule=None, learning_rate: Optional[float] = None,
                  seed: int = 0, iterations: int = DEFAULT_ITERATIONS, rounding=None,
                  three_class: bool = False, precision: str = "float32") -> LatentOptimizer:
    """A cached :class:`LatentOptimizer` (its compiled loop is reused for every image of the same size)."""
    sched = schedules.get(schedule, iterations)
    key = (id(model), discretize.get(method, rounding, three_class), sched, learning_rate, seed, precision)
    if key not in _OPTIMIZERS:
        _OPTIMIZERS[key] = LatentOptimizer(model, method, sched, learning_rate, seed, rounding, three_class,
                                           precision)
    return _OPTIMIZERS[key]


def infer(model, x_padded: tf.Tensor, method: str = "sga", valid_shape: Optional[Tuple[int, int]] = None,
          iterations: int = DEFAULT_ITERATIONS, schedule=None, learning_rate: Optional[float] = None, seed: int = 0,
          eval_every: int = DEFAULT_EVAL_EVERY, keep_best: Optional[bool] = None,
          progress: Optional[bool] = None, rounding=None, three_class: bool = False,
          precision: str = "float32") -> InferenceResult:
    """Iterative inference for the codec: one padded image or a batch [B, H, W, 3] of the same size.

    ``rounding`` (``atanh``, ``linear``, ``cosine``, ``sigmoid_logit(a=...)``) and ``three_class`` choose SGA's
    rounding distribution (:mod:`~tfc_inference.rounding`); ``precision`` that of the relaxed loop
    (:class:`LatentOptimizer`)."""
    if valid_shape is None:
        valid_shape = tuple(x_padded.shape[1:3])
    opt = get_optimizer(model, method, schedule, learning_rate, seed, int(iterations), rounding, three_class,
                        precision)
    return opt.run(x_padded, valid_shape, iterations=int(iterations), eval_every=eval_every, keep_best=keep_best,
                   progress=progress)


__all__ = ["LatentOptimizer", "InferenceResult", "infer", "get_optimizer"]
