"""The four transforms of a mean-scale hyperprior codec (Ballé et al. 2018; Minnen et al. 2018).

Shapes, with N = ``num_filters``, M = ``latent_channels``, H = ``hyper_filters``, K = ``hyper_latent_channels``:

* ``AnalysisTransform``        x  [B, h, w, 3] (0..255)  ->  y [B, h/16, w/16, M]
* ``SynthesisTransform``       y  [B, h/16, w/16, M]     ->  x [B, h, w, 3] (0..255, unclipped)
* ``HyperAnalysisTransform``   y                          ->  z [B, h/64, w/64, K * out_factor]
* ``HyperSynthesisTransform``  z                          ->  [B, h/16, w/16, 2M] (mean and log-scale of p(y|z))

The hyper-analysis has ``out_factor`` 1 for the Base Hyperprior and 2 for the bits-back variant, whose
hyper-analysis gives the mean and log-variance of the Gaussian q(z|y).  Convolutions are Keras' own
(oneDNN kernels on CPU), nonlinearities are TFC's GDN / inverse GDN in the main transforms and ReLU in the
hyper transforms, as in the paper's models.

``policy="mixed_bfloat16"`` (training only, see ``train --precision``) runs the convolutions in bfloat16 with
float32 weights; GDN, the rescalings and each transform's output stay float32, so the entropy models and the
distortion see float32 tensors.  Inference always builds the float32 transforms.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_compression as tfc


def _conv(filters: int, kernel: int, stride: int, name: str, activation=None, use_bias: bool = True,
          policy: Optional[str] = None):
    return tf.keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                                  activation=activation, name=name, dtype=policy)


def _deconv(filters: int, kernel: int, stride: int, name: str, activation=None, use_bias: bool = True,
            policy: Optional[str] = None):
    return tf.keras.layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                                           activation=activation, name=name, dtype=policy)


def _to_float32(seq: tf.keras.Sequential, policy: Optional[str]) -> None:
    """Mixed precision: a weightless float32 layer at the end (checkpoint keys count only layers with weights)."""
    if policy:
        seq.add(tf.keras.layers.Activation("linear", dtype="float32", name="to_float32"))


class _LayerChain(tf.keras.Sequential):
    """A ``Sequential`` that applies its layers in order, without building a Keras functional graph.

    Keras' ``Sequential.call`` builds a symbolic graph network for every new input shape (each image size, each
    trace of a ``tf.function``), which was ~15% of the time of a short training run and of test tracing here.
    The layers, their order and their checkpoint keys are the ``Sequential``'s, so checkpoints are unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        del training, mask  # none of the layers of the transforms takes them
        for layer in self.layers:
            inputs = layer(inputs)
        return inputs


class AnalysisTransform(_LayerChain):
    """g_a: four 5x5 stride-2 convolutions with GDN between them."""

    def __init__(self, num_filters: int, latent_channels: int, policy: Optional[str] = None):
        super().__init__(name="analysis")
        self.add(tf.keras.layers.Rescaling(1.0 / 255.0))
        for i in range(3):
            self.add(_conv(num_filters, 5, 2, f"conv_{i}", policy=policy))
            self.add(tfc.GDN(name=f"gdn_{i}"))
        self.add(_conv(latent_channels, 5, 2, "conv_3", use_bias=False, policy=policy))
        _to_float32(self, policy)


class SynthesisTransform(_LayerChain):
    """g_s: four 5x5 stride-2 transposed convolutions with inverse GDN between them."""

    def __init__(self, num_filters: int, policy: Optional[str] = None):
        super().__init__(name="synthesis")
        for i in range(3):
            self.add(_deconv(num_filters, 5, 2, f"deconv_{i}", policy=policy))
            self.add(tfc.GDN(inverse=True, name=f"igdn_{i}"))
        self.add(_deconv(3, 5, 2, "deconv_3", policy=policy))
        self.add(tf.keras.layers.Rescaling(255.0))


class HyperAnalysisTransform(_LayerChain):
    """h_a: 3x3 stride 1, then two 5x5 stride-2 convolutions, ReLU between them."""

    def __init__(self, hyper_filters: int, hyper_latent_channels: int, out_factor: int = 1,
                 policy: Optional[str] = None):
        super().__init__(name="hyper_analysis")
        self.add(_conv(hyper_filters, 3, 1, "conv_0", activation="relu", policy=policy))
        self.add(_conv(hyper_filters, 5, 2, "conv_1", activation="relu", policy=policy))
        self.add(_conv(hyper_latent_channels * out_factor, 5, 2, "conv_2", policy=policy))
        _to_float32(self, policy)


class HyperSynthesisTransform(_LayerChain):
    """h_s: two 5x5 stride-2 transposed convolutions, then 3x3 stride 1; output doubled (mean, log-scale)."""

    def __init__(self, hyper_filters: int, latent_channels: int, policy: Optional[str] = None):
        super().__init__(name="hyper_synthesis")
        self.add(_deconv(hyper_filters, 5, 2, "deconv_0", activation="relu", policy=policy))
        self.add(_deconv(hyper_filters * 3 // 2, 5, 2, "deconv_1", activation="relu", policy=policy))
        self.add(_deconv(2 * latent_channels, 3, 1, "deconv_2", policy=policy))
        _to_float32(self, policy)
