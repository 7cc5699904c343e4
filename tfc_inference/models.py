"""Hyperprior codecs: the paper's Base Hyperprior [M3] and its bits-back variant (Section 3.3).

Notation (per image): x the RGB image on 0..255, y = g_a(x) the latents, z the hyper-latents,
p(y | z) = prod_i N(mu_i, sigma_i^2) * U(-1/2, 1/2) with (mu, log sigma) = h_s(z).

**Grids.**  The coded latents live on these grids, which is what TFC's range coders code:

* z_hat is an integer tensor (``offset_heuristic=False``: no median offset), coded with the prior p(z);
* y_hat = mu + k with integer symbols k = round(y - mu), coded with the discretized Gaussian of scale
  sigma_floor(i), where i is the *truncated* scale index (TFC casts indexes to int32 when coding).

Every rate estimate called "discrete" below uses exactly these probabilities, so it matches what the range coder
writes up to the coder's own overhead.

**Rate-distortion loss**  L = R / (#pixels) + lambda * MSE, with R in bits and MSE on 0..255, as in TFC and the
paper.  During training y~ = y + u, z~ = z + u with u ~ U(-1/2, 1/2).

* ``MeanScaleHyperprior``: p(z) = deep factorized density convolved with U(-1/2, 1/2)
  (``tfc.NoisyDeepFactorized``).  R = -log2 p(y~ | z~) - log2 p(z~).
* ``BitsBackHyperprior``: h_a gives (mean, log variance) of a Gaussian q(z | y); p(z) is a deep factorized
  density *without* the uniform convolution (``tfc.DeepFactorized``).  The rate is the negative ELBO's rate term
  with one reparameterized sample z ~ q:  R = -log2 p(y~ | z) - log2 p(z) + log2 q(z | y), i.e. the cross-entropy
  of z minus the entropy of q: the *net* rate after bits-back.  For coding without bits-back, z_hat = round(mean)
  is coded under p(z) discretized to unit bins (``tfc.UniformNoiseAdapter(p)``, i.e. P(k) = F(k+1/2) - F(k-1/2)).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from tfc_inference.transforms import (AnalysisTransform, HyperAnalysisTransform, HyperSynthesisTransform,
                                      SynthesisTransform)

#: Spatial downsampling of y and z relative to the image.
Y_STRIDE = 16
Z_STRIDE = 64
LN2 = math.log(2.0)


@dataclasses.dataclass
class ModelConfig:
    """Architecture and training objective of one codec.  Stored as ``config.json`` beside the weights."""

    kind: str = "hyperprior"  # "hyperprior" (MeanScaleHyperprior) or "bitsback" (BitsBackHyperprior)
    num_filters: int = 192
    latent_channels: int = 192
    hyper_filters: int = 192
    hyper_latent_channels: int = 192
    lmbda: float = 0.01
    num_scales: int = 64
    scale_min: float = 0.11
    scale_max: float = 256.0
    range_coder_precision: int = 16
    #: Bits-back model only: upper bound on the variance of q(z|y) (the paper capped it at 10 in training).
    max_variance: float = 10.0
    #: Bits-back model only: lower bound on the variance of q(z|y); 0 = none.  Bits-back coding only pays when
    #: the posterior is wider than about 1/sqrt(2 pi e) = 0.24 of a grid step (its entropy is then positive), so a floor trains a
    #: model whose side information is worth sending.
    min_variance: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        if not d["min_variance"]:
            del d["min_variance"]  # absent = 0: keeps the config (and fingerprint) of models without a floor
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class MeanScaleHyperprior(tf.keras.Model):
    """The paper's Base Hyperprior [M3]: mean-scale hyperprior without context model (Minnen et al. 2018)."""

    hyper_out_factor = 1

    def __init__(self, config: ModelConfig, conv_policy: Optional[str] = None, **kwargs):
        """``conv_policy``: Keras dtype policy of the convolutions (``"mixed_bfloat16"`` for fast training)."""
        super().__init__(**kwargs)
        self.config = config
        c = config
        self.analysis_transform = AnalysisTransform(c.num_filters, c.latent_channels, conv_policy)
        self.synthesis_transform = SynthesisTransform(c.num_filters, conv_policy)
        self.hyper_analysis_transform = HyperAnalysisTransform(c.hyper_filters, c.hyper_latent_channels,
                                                               self.hyper_out_factor, conv_policy)
        self.hyper_synthesis_transform = HyperSynthesisTransform(c.hyper_filters, c.latent_channels, conv_policy)
        self.hyperprior = self._make_hyperprior()
        self._log_scale_min = math.log(c.scale_min)
        self._log_scale_step = (math.log(c.scale_max) - math.log(c.scale_min)) / (c.num_scales - 1)
        self._y_coder = None
        self._z_coder = None
        self._frozen_tables = None
        # Create all variables now, so that weights can be loaded and fingerprinted right away.
        self.build_variables()

    # ----------------------------------------------------------------------------------------------------------
    # construction
    def _make_hyperprior(self):
        return tfc.NoisyDeepFactorized(batch_shape=[self.config.hyper_latent_channels])

    @property
    def coding_prior(self):
        """The distribution whose values at integers are the probabilities of z_hat."""
        return self.hyperprior

    def build_variables(self) -> None:
        x = tf.zeros([1, Z_STRIDE, Z_STRIDE, 3])
        y = self.analysis_transform(x)
        self.hyper_analysis_transform(y)
        self.hyper_synthesis_transform(tf.zeros([1, 1, 1, self.config.hyper_latent_channels]))
        self.synthesis_transform(y)

    # ----------------------------------------------------------------------------------------------------------
    # the pieces every inference method combines
    def encode_latents(self, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """Amortized inference: (y, z) = (g_a(x), h_a(g_a(x))); for bits-back models z is q's mean."""
        y = self.analysis_transform(x)
        z = self.hyper_analysis_transform(y)
        return y, z

    def latent_specs(self) -> Tuple[tf.TensorSpec, tf.TensorSpec]:
        """Specs of y and z batches of any size, for the input signatures of compiled optimization loops."""
        c = self.config
        return (tf.TensorSpec([None, None, None, c.latent_channels], tf.float32),
                tf.TensorSpec([None, None, None, c.hyper_latent_channels], tf.float32))

    def y_prior_params(self, z: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """(mu, scale index) of p(y | z); the index is continuous (clipped to the scale table's range)."""
        mu, log_scale = tf.split(self.hyper_synthesis_transform(z), 2, axis=-1)
        index = (log_scale - self._log_scale_min) / self._log_scale_step
        index = tfc.lower_bound(index, 0.0)
        index = tfc.upper_bound(index, float(self.config.num_scales - 1))
        return mu, index

    def coding_params(self, z_hat: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """(mu, integer-valued scale index) exactly as the range coder uses them (index truncated)."""
        mu, index = self.y_prior_params(z_hat)
        return mu, tf.floor(index)

    def scale_fn(self, index: tf.Tensor) -> tf.Tensor:
        return tf.exp(self._log_scale_min + self._log_scale_step * index)

    def bits_y(self, y: tf.Tensor, mu: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        """-log2 p(y | mu, sigma(index)) summed per image, p the Gaussian convolved with U(-1/2, 1/2)."""
        dist = tfc.NoisyNormal(loc=mu, scale=self.scale_fn(index))
        return -tf.reduce_sum(dist.log_prob(y), axis=(1, 2, 3)) / LN2

    def bits_z(self, z: tf.Tensor) -> tf.Tensor:
        """-log2 P(z) summed per image under the coding prior (exact at integers)."""
        return -tf.reduce_sum(self.coding_prior.log_prob(z), axis=(1, 2, 3)) / LN2

    def synthesize(self, y: tf.Tensor) -> tf.Tensor:
        return self.synthesis_transform(y)

    def round_z(self, z: tf.Tensor) -> tf.Tensor:
        """The z grid: integers."""
        return tf.round(z)

    def round_y(self, y: tf.Tensor, mu: tf.Tensor) -> tf.Tensor:
        """The y grid: mu + integers."""
        return tf.round(y - mu) + mu

    # ----------------------------------------------------------------------------------------------------------
    # losses
    def rd_terms(self, x: tf.Tensor, bits: tf.Tensor, x_hat: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Per-batch-mean bpp, MSE (0..255), PSNR and R-D loss from per-image bits and a reconstruction."""
        num_pixels = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
        bpp = tf.reduce_mean(bits) / num_pixels
        mse = tf.reduce_mean(tf.math.squared_difference(x, x_hat))
        psnr = 10.0 * tf.math.log(255.0 ** 2 / tf.maximum(mse, 1e-10)) / math.log(10.0)
        return dict(loss=bpp + self.config.lmbda * mse, bpp=bpp, mse=mse, psnr=psnr)

    def discrete_rd(self, x: tf.Tensor, y_hat: tf.Tensor, z_hat: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The *true* R-D of latents already on the coding grid: coder probabilities, clipped 8-bit image."""
        mu, index = self.coding_params(z_hat)
        bits = self.bits_y(y_hat, mu, index) + self.bits_z(z_hat)
        x_hat = tf.round(tf.clip_by_value(self.synthesize(y_hat), 0.0, 255.0))
        return self.rd_terms(x, bits, x_hat)

    def discretize_amortized(self, y: tf.Tensor, z: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """Round continuous latents onto the coding grids (z first: the y grid depends on mu(z_hat))."""
        z_hat = self.round_z(z)
        mu, _ = self.coding_params(z_hat)
        return self.round_y(y, mu), z_hat

    @staticmethod
    def _noise(shape, noise_seed, salt: int, kind: str = "uniform") -> tf.Tensor:
        """Training noise: stateless (exactly repeatable) when a seed [2] is given, else from the global RNG."""
        if noise_seed is None:
            return (tf.random.uniform(shape, -0.5, 0.5) if kind == "uniform" else tf.random.normal(shape))
        seed = tf.cast(noise_seed, tf.int32) * tf.constant([1009, 1], tf.int32) + tf.constant([salt, 0], tf.int32)
        if kind == "uniform":
            return tf.random.stateless_uniform(shape, seed, -0.5, 0.5)
        return tf.random.stateless_normal(shape, seed)

    def call(self, x: tf.Tensor, training: bool = False, noise_seed=None) -> Dict[str, tf.Tensor]:
        """Training: noisy proxies and the differentiable R-D loss.  Otherwise: the true discrete R-D.

        ``noise_seed`` (int [2], e.g. (seed, step)) makes the training noise a function of the seed, which makes
        resumed training runs exact."""
        x = tf.cast(x, tf.float32)
        y, z = self.encode_latents(x)
        if not training:
            y_hat, z_hat = self.discretize_amortized(y, z)
            return self.discrete_rd(x, y_hat, z_hat)
        z_tilde = z + self._noise(tf.shape(z), noise_seed, 1)
        y_tilde = y + self._noise(tf.shape(y), noise_seed, 2)
        mu, index = self.y_prior_params(z_tilde)
        bits = self.bits_y(y_tilde, mu, index) + self.bits_z(z_tilde)
        return self.rd_terms(x, bits, self.synthesize(y_tilde))

    # ----------------------------------------------------------------------------------------------------------
    # entropy coding (TFC range coders)
    def prepare_coders(self, tables: Optional[Dict[str, np.ndarray]] = None) -> None:
        """Builds the range-coding tables from the current weights (call after loading or training).

        ``tables``: frozen tables from :meth:`coding_tables` (a checkpoint's ``coding_tables.npz``).  The z
        tables come from the learned prior, whose evaluation differs in the last bits between CPU kernels, and
        a one-count difference in a table makes the range decoder return garbage; frozen tables make encoder
        and decoder agree by construction.  (The y tables come from a Gaussian and proved identical.)"""
        c = self.config
        self._frozen_tables = tables
        if tables is not None and "z_cdf" in tables:
            self._z_coder = tfc.ContinuousBatchedEntropyModel(
                prior_shape=[c.hyper_latent_channels], cdf=tf.constant(tables["z_cdf"], tf.int32),
                cdf_offset=tf.constant(tables["z_cdf_offset"], tf.int32), coding_rank=3, compression=True,
                stateless=True, offset_heuristic=False, range_coder_precision=c.range_coder_precision)
        else:
            # TFC estimates the prior's tails with an iterative search; run eagerly it costs ~10 s per model,
            # in one graph ~1 s (same tables, measured).  Only the tables come out of the graph.
            def tables_from_prior():
                coder = tfc.ContinuousBatchedEntropyModel(
                    self.coding_prior, coding_rank=3, compression=True, stateless=True, offset_heuristic=False,
                    range_coder_precision=c.range_coder_precision)
                return coder.cdf, coder.cdf_offset
            cdf, cdf_offset = tf.function(tables_from_prior, autograph=False)()
            self._z_coder = tfc.ContinuousBatchedEntropyModel(
                prior_shape=[c.hyper_latent_channels], cdf=cdf, cdf_offset=cdf_offset, coding_rank=3,
                compression=True, stateless=True, offset_heuristic=False,
                range_coder_precision=c.range_coder_precision)
        self._y_coder = tfc.LocationScaleIndexedEntropyModel(
            tfc.NoisyNormal, c.num_scales, self.scale_fn, coding_rank=3, compression=True, stateless=True,
            range_coder_precision=c.range_coder_precision)
        # Fresh traces: the tables are graph constants, so functions traced with older tables must not be reused.
        self._encode_fn = tf.function(self._entropy_encode_impl, reduce_retracing=True)
        self._decode_fn = tf.function(self._entropy_decode_impl, reduce_retracing=True)

    def coding_tables(self) -> Dict[str, np.ndarray]:
        """The integer z tables of the range coder (what ``prepare_coders(tables)`` takes back)."""
        self._require_coders()
        return {"z_cdf": self._z_coder.cdf.numpy(), "z_cdf_offset": self._z_coder.cdf_offset.numpy()}

    def _require_coders(self):
        if self._z_coder is None:
            self.prepare_coders()

    def entropy_encode(self, y_hat: tf.Tensor, z_hat: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Range-codes latents on the grid.  Returns (y string, z string, integer y symbols), batch of 1."""
        self._require_coders()
        return self._encode_fn(y_hat, z_hat)

    def _entropy_encode_impl(self, y_hat, z_hat):
        z_string = self._z_coder.compress(z_hat)
        mu, index = self.coding_params(z_hat)
        symbols = tf.round(y_hat - mu)
        y_string = self._y_coder.compress(symbols, index)
        return y_string, z_string, tf.cast(symbols, tf.int32)

    def entropy_decode(self, y_string: tf.Tensor, z_string: tf.Tensor, z_spatial_shape) -> Tuple[tf.Tensor, ...]:
        """Mirror of :meth:`entropy_encode`: returns (y_hat, z_hat, integer y symbols)."""
        self._require_coders()
        return self._decode_fn(y_string, z_string, tf.convert_to_tensor(z_spatial_shape, tf.int32))

    def _entropy_decode_impl(self, y_string, z_string, z_spatial_shape):
        z_hat = self._z_coder.decompress(z_string, z_spatial_shape)
        mu, index = self.coding_params(z_hat)
        symbols = self._y_coder.decompress(y_string, index)
        return symbols + mu, z_hat, tf.cast(symbols, tf.int32)

    # ----------------------------------------------------------------------------------------------------------
    def fingerprint(self) -> bytes:
        """8 bytes of SHA-256 over the config and all weights: identifies the exact decoder a file needs."""
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for w in self.weights:
            h.update(np.ascontiguousarray(w.numpy()).tobytes())
        return h.digest()[:8]


class BitsBackHyperprior(MeanScaleHyperprior):
    """Hyperprior whose hyper-analysis is a Gaussian q(z | y), trained on the net (bits-back) rate."""

    hyper_out_factor = 2

    def _make_hyperprior(self):
        return tfc.DeepFactorized(batch_shape=[self.config.hyper_latent_channels])

    @property
    def coding_prior(self):
        return tfc.UniformNoiseAdapter(self.hyperprior)

    def q_params(self, y: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """(mean, log variance) of q(z | y); the variance is clipped to [``min_variance``, ``max_variance``]."""
        mean, log_var = tf.split(self.hyper_analysis_transform(y), 2, axis=-1)
        return mean, self.clip_log_variance(log_var)

    def clip_log_variance(self, log_var: tf.Tensor) -> tf.Tensor:
        log_var = tf.minimum(log_var, math.log(self.config.max_variance))
        if self.config.min_variance > 0:
            log_var = tf.maximum(log_var, math.log(self.config.min_variance))
        return log_var

    def encode_latents(self, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        y = self.analysis_transform(x)
        mean, _ = self.q_params(y)
        return y, mean

    def build_variables(self) -> None:
        super().build_variables()
        self.hyperprior.log_prob(tf.zeros([1, 1, 1, self.config.hyper_latent_channels]))

    def net_z_bits(self, z: tf.Tensor, mean: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
        """log2 q(z) - log2 p(z), summed per image: the z rate after bits back, one-sample estimate."""
        log_q = -0.5 * (tf.math.log(2.0 * math.pi) + log_var + tf.square(z - mean) * tf.exp(-log_var))
        log_p = self.hyperprior.log_prob(z)
        return tf.reduce_sum(log_q - log_p, axis=(1, 2, 3)) / LN2

    def call(self, x: tf.Tensor, training: bool = False, noise_seed=None) -> Dict[str, tf.Tensor]:
        x = tf.cast(x, tf.float32)
        if not training:
            return super().call(x, training=False)
        y = self.analysis_transform(x)
        mean, log_var = self.q_params(y)
        z = mean + tf.exp(0.5 * log_var) * self._noise(tf.shape(mean), noise_seed, 3, "normal")
        y_tilde = y + self._noise(tf.shape(y), noise_seed, 2)
        mu, index = self.y_prior_params(z)
        bits_z = self.net_z_bits(z, mean, log_var)
        bits = self.bits_y(y_tilde, mu, index) + bits_z
        terms = self.rd_terms(x, bits, self.synthesize(y_tilde))
        num_pixels = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
        terms["z_net_bpp"] = tf.reduce_mean(bits_z) / num_pixels
        return terms


MODEL_CLASSES = {"hyperprior": MeanScaleHyperprior, "bitsback": BitsBackHyperprior}


def build_model(config: ModelConfig, conv_policy: Optional[str] = None) -> MeanScaleHyperprior:
    """Instantiates the model class named by ``config.kind`` (variables created, untrained)."""
    try:
        cls = MODEL_CLASSES[config.kind]
    except KeyError:
        raise ValueError(f"unknown model kind {config.kind!r}; expected one of {sorted(MODEL_CLASSES)}") from None
    return cls(config, conv_policy)
