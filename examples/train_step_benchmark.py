"""Times one training step of the mean-scale hyperprior: the naive reference vs this package's model.

*Naive* is the configuration the zoo issue measured (~0.7 s/step): the same architecture built from TFC's
``SignalConv2D`` layers as in TFC's bmshj2018 example, float32, TF's default settings. *This package* uses Keras'
``Conv2D`` / ``Conv2DTranspose`` (oneDNN kernels) with GDN from TFC. Both run the identical loss
(``MeanScaleHyperprior.call``) and Adam update on in-memory uint8 batches; the input pipeline (decoded images cached
in memory, random crops) is timed on its own. GFLOP/s counts the useful work of the four transforms, 3x forward.

    python examples/train_step_benchmark.py --out checkpoints/train_step_benchmark.md
"""
import argparse
import importlib.metadata
import os
import platform
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from tfc_inference import benchmark
from tfc_inference.data import CropSampler, list_images
from tfc_inference.evaluate import machine_description
from tfc_inference.models import ModelConfig, MeanScaleHyperprior


def signal_conv_transforms(c: ModelConfig):
    """The four transforms with TFC's SignalConv2D layers (the bmshj2018 example's style)."""
    def down(filters, k, stride, act=None, bias=True):
        return tfc.SignalConv2D(filters, (k, k), corr=True, strides_down=stride, padding="same_zeros",
                                use_bias=bias, activation=act)

    def up(filters, k, stride, act=None):
        return tfc.SignalConv2D(filters, (k, k), corr=False, strides_up=stride, padding="same_zeros",
                                use_bias=True, activation=act)

    g_a = tf.keras.Sequential([tf.keras.layers.Rescaling(1 / 255)] +
                              [down(c.num_filters, 5, 2, tfc.GDN()) for _ in range(3)] +
                              [down(c.latent_channels, 5, 2, bias=False)])
    g_s = tf.keras.Sequential([up(c.num_filters, 5, 2, tfc.GDN(inverse=True)) for _ in range(3)] +
                              [up(3, 5, 2), tf.keras.layers.Rescaling(255.0)])
    h_a = tf.keras.Sequential([down(c.hyper_filters, 3, 1, tf.nn.relu), down(c.hyper_filters, 5, 2, tf.nn.relu),
                               down(c.hyper_latent_channels, 5, 2)])
    h_s = tf.keras.Sequential([up(c.hyper_filters, 5, 2, tf.nn.relu),
                               up(c.hyper_filters * 3 // 2, 5, 2, tf.nn.relu), up(2 * c.latent_channels, 3, 1)])
    return g_a, g_s, h_a, h_s


def time_steps(model, batches, learning_rate: float, steps: int) -> float:
    """Median seconds of one Adam step (after two warm-up steps that trace and build)."""
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    step = tf.Variable(0, dtype=tf.int64)
    model(tf.cast(batches[0], tf.float32), training=True, noise_seed=tf.constant([0, 0], tf.int64))
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            terms = model(tf.cast(batch, tf.float32), training=True, noise_seed=tf.stack([tf.constant(0, tf.int64),
                                                                                          step]))
        optimizer.apply_gradients(zip(tape.gradient(terms["loss"], variables), variables))
        step.assign_add(1)
        return terms["loss"]

    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        train_step(batches[i % len(batches)]).numpy()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "train"),
                   help="training images (for the input pipeline timing and realistic batches)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args()

    paths = list_images([args.data])[:60]
    if not paths:
        sys.exit(f"no images in {args.data}")
    rows = []
    for filters, latents, crop, batch in [(64, 96, 128, 8), (64, 96, 256, 4)]:
        config = ModelConfig(num_filters=filters, latent_channels=latents, hyper_filters=64, hyper_latent_channels=64)
        sampler = CropSampler(paths, crop, batch, seed=0, progress=False)
        it = iter(sampler.dataset(0, 1000))
        t0 = time.perf_counter()
        batches = [next(it) for _ in range(10)]
        pipeline = (time.perf_counter() - t0) / 10
        fl = benchmark.model_flops(MeanScaleHyperprior(config), crop, crop)
        flops = 3.0 * batch * sum(fl.values())
        for label in ("naive (tfc.SignalConv2D)", "this package (Keras Conv2D)",
                      "this package, --precision mixed_bfloat16"):
            tf.keras.utils.set_random_seed(0)
            model = MeanScaleHyperprior(config, "mixed_bfloat16" if "bfloat16" in label else None)
            if label.startswith("naive"):
                (model.analysis_transform, model.synthesis_transform, model.hyper_analysis_transform,
                 model.hyper_synthesis_transform) = signal_conv_transforms(config)
            seconds = time_steps(model, batches, 3e-4, args.steps)
            rows.append((f"{filters}/{latents}", f"{batch} x {crop}px", label, seconds, flops / seconds / 1e9,
                         pipeline))
            print(rows[-1], flush=True)
    peak = benchmark.matmul_gflops()
    lines = [f"Training step (float32 unless stated), TF {tf.__version__}, TFC {importlib.metadata.version('tensorflow-compression')}, {machine_description()}, "
             f"Python {platform.python_version()}; median of {args.steps} steps; float32 matmul peak measured in the "
             f"same run: {peak:.0f} GFLOP/s.", "",
             "| channels N/M | batch | implementation | s/step | steps/s | GFLOP/s (useful) | input pipeline s/batch |",
             "|---|---|---|---|---|---|---|"]
    for ch, b, label, s, g, pipe in rows:
        lines.append(f"| {ch} | {b} | {label} | {s:.3f} | {1 / s:.2f} | {g:.1f} | {pipe:.4f} |")
    for i in range(0, len(rows), 3):
        lines.append(f"\nSpeed-up over the naive step {rows[i][0]}, {rows[i][1]}: float32 "
                     f"{rows[i][3] / rows[i + 1][3]:.1f}x, mixed bfloat16 {rows[i][3] / rows[i + 2][3]:.1f}x")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
