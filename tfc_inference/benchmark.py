"""Benchmark of the encoder loop: what each piece of the codec costs on this machine, in one process and run.

Times, on one image (default: the bundled Kodak image, 768x512): the amortized forward pass (g_a, h_a, h_s, g_s;
the reference), amortized encode and decode (real files), one SGA step, one step of each bits-back stage, and
range coding alone.  Reports the achieved GFLOP/s of the SGA step (FLOPs counted by TF's profiler on the
step's graph) next to the machine's dense float32 matmul GFLOP/s measured in the same run, batched SGA
throughput, and the process's peak memory.
"""
from __future__ import annotations

import resource
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf


def _best_time(fn: Callable[[], object], repeats: int = 3, number: int = 1) -> float:
    """Best of ``repeats`` timings of ``number`` calls, per call (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Dense float32 matmul throughput of this machine (all threads TF uses)."""
    a = tf.random.uniform([n, n])
    b = tf.random.uniform([n, n])
    f = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    seconds = _best_time(lambda: f().numpy(), repeats=repeats)
    return 2 * n ** 3 / seconds / 1e9


def graph_flops(concrete_function) -> Optional[float]:
    """Floating-point operations of one call of a concrete function, counted by TF's profiler."""
    from tensorflow.python.profiler import model_analyzer, option_builder
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    try:
        info = model_analyzer.profile(concrete_function.graph, options=opts)
    except Exception:  # noqa: BLE001  (the profiler is best effort)
        return None
    return float(info.total_float_ops) if info is not None else None


def layer_flops(layer, in_shape, out_shape) -> float:
    """Useful floating-point operations of one layer (multiply and add counted as 2).

    Convolutions count 2 k^2 C_in C_out per output position, transposed convolutions the same per *input*
    position (the zeros a dense implementation would multiply are not counted), GDN its 1x1 channel mixing.
    """
    if isinstance(layer, tf.keras.layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        return 2.0 * np.prod(in_shape[:-1]) * kh * kw * in_shape[-1] * out_shape[-1]
    if isinstance(layer, tf.keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return 2.0 * np.prod(out_shape[:-1]) * kh * kw * in_shape[-1] * out_shape[-1]
    if type(layer).__name__ == "GDN":
        return 2.0 * np.prod(in_shape) * in_shape[-1]
    return 0.0


def transform_flops(transform: tf.keras.Sequential, input_shape) -> float:
    """Useful FLOPs of one forward pass of a Sequential transform on an input of ``input_shape``."""
    x = tf.zeros(input_shape)
    total = 0.0
    for layer in transform.layers:
        y = layer(x)
        total += layer_flops(layer, x.shape, y.shape)
        x = y
    return total


def model_flops(model, height: int, width: int) -> Dict[str, float]:
    """Useful forward FLOPs of each transform of ``model`` for one ``height`` x ``width`` image (multiples of 64).

    A training or SGA step's backward pass costs about twice its forward pass, so one step is ~3x forward.
    """
    c = model.config
    y_shape = [1, height // 16, width // 16, c.latent_channels]
    z_shape = [1, height // 64, width // 64, c.hyper_latent_channels]
    return {"analysis": transform_flops(model.analysis_transform, [1, height, width, 3]),
            "hyper_analysis": transform_flops(model.hyper_analysis_transform, y_shape),
            "hyper_synthesis": transform_flops(model.hyper_synthesis_transform, z_shape),
            "synthesis": transform_flops(model.synthesis_transform, y_shape)}


def run(model, image: np.ndarray, bits_back_model=None, steps: int = 10, batch: int = 4) -> Dict[str, object]:
    """Runs every measurement; returns a dict of rows (name -> seconds) and figures."""
    from tfc_inference import codec, inference
    from tfc_inference.bits_back import BitsBackInference
    h, w = image.shape[:2]
    x = tf.constant(codec.pad_to_multiple(image)[None], tf.float32)
    valid = tf.constant([h, w], tf.int32)
    rows: Dict[str, float] = {}

    @tf.function
    def forward(x):
        y, z = model.encode_latents(x)
        y_hat, z_hat = model.discretize_amortized(y, z)
        return model.synthesize(y_hat)

    rows["amortized forward pass (g_a, h_a, h_s, g_s)"] = _best_time(lambda: forward(x).numpy())
    result = codec.compress(model, image)
    rows["amortized encode (real file)"] = _best_time(lambda: codec.compress(model, image))
    rows["decode (real file)"] = _best_time(lambda: codec.decompress(result.data, model))
    y, z = model.encode_latents(x)
    y_hat, z_hat = model.discretize_amortized(y, z)
    strings = model.entropy_encode(y_hat, z_hat)
    z_shape = tf.shape(z_hat)[1:3]
    rows["range coding alone (encode + decode)"] = _best_time(
        lambda: model.entropy_decode(*model.entropy_encode(y_hat, z_hat)[:2], z_shape))

    opt = inference.LatentOptimizer(model, "sga")
    from tfc_inference import optim
    ms, vs = optim.init_state([y, z])
    state = tuple([y, z] + ms + vs)

    def sga_steps(n, xb=x, st=state):
        out, _ = opt._chunk(xb, st, tf.constant(0, tf.int64), tf.constant(n, tf.int64), valid)
        out[0].numpy()

    sga_steps(1)
    sga_steps(steps)
    t_n = _best_time(lambda: sga_steps(steps), repeats=2)
    rows["one SGA step (compiled whole loop)"] = t_n / steps

    # "Before": the loop as one would first write it, for comparison with the compiled whole loop above.
    # (a) eager Python loop with Keras Adam; (b) a tf.function per step driven from Python.
    def naive_runner(compiled: bool):
        u_y, u_z = tf.Variable(y), tf.Variable(z)
        adam = tf.keras.optimizers.Adam(opt.learning_rate)

        def step_fn(t):
            with tf.GradientTape() as tape:
                loss, _, _ = opt.relaxed_terms(x, u_y, u_z, t, valid)
                total = tf.reduce_sum(loss)
            grads = tape.gradient(total, [u_y, u_z])
            adam.apply_gradients(zip(grads, [u_y, u_z]))
            return total

        fn = tf.function(step_fn) if compiled else step_fn

        def run_n(n):
            for t in range(n):
                fn(tf.constant(t, tf.int64)).numpy()
        return run_n

    naive_steps = max(2, steps // 3)
    for label, compiled in (("one SGA step, naive: eager Python loop, Keras Adam", False),
                            ("one SGA step, naive: tf.function per step, Python loop", True)):
        run_n = naive_runner(compiled)
        run_n(1)
        rows[label] = _best_time(lambda: run_n(naive_steps), repeats=2) / naive_steps

    # FLOPs of one SGA step: trace the step body alone
    @tf.function
    def one_step(x, u_y, u_z):
        with tf.GradientTape() as tape:
            tape.watch([u_y, u_z])
            loss, _, _ = opt.relaxed_terms(x, u_y, u_z, tf.constant(1000, tf.int64), valid)
            total = tf.reduce_sum(loss)
        return tape.gradient(total, [u_y, u_z])

    profiler_flops = graph_flops(one_step.get_concrete_function(x, y, z))
    # useful work of one SGA step: h_s and g_s forward, and their backward pass (~2x forward)
    fl = model_flops(model, int(x.shape[1]), int(x.shape[2]))
    flops = 3.0 * (fl["hyper_synthesis"] + fl["synthesis"])
    peak = matmul_gflops()

    # batched SGA throughput: `batch` copies of the image in one call vs one at a time
    xb = tf.concat([x] * batch, axis=0)
    yb, zb = model.encode_latents(xb)
    msb, vsb = optim.init_state([yb, zb])
    stb = tuple([yb, zb] + msb + vsb)
    sga_steps(steps, xb, stb)
    t_batch = _best_time(lambda: sga_steps(steps, xb, stb), repeats=2) / steps
    figures = {
        "image": f"{w}x{h}",
        "sga_flops_per_step": flops,
        "sga_profiler_flops_per_step": profiler_flops,
        "sga_gflops_per_second": None if flops is None else flops / rows["one SGA step (compiled whole loop)"] / 1e9,
        "matmul_gflops_per_second": peak,
        "batch": batch,
        "sga_images_per_hour_single": 3600 / (rows["one SGA step (compiled whole loop)"] * 2000),
        "sga_images_per_hour_batched": 3600 * batch / (t_batch * 2000),
    }

    bb = bits_back_model
    if bb is not None:
        inf = BitsBackInference(bb, seed=0)
        yb_, _ = bb.encode_latents(x)
        mean, log_var = bb.q_params(yb_)
        ms1, vs1 = optim.init_state([yb_, mean, log_var])
        st1 = tuple([yb_, mean, log_var] + ms1 + vs1)
        run1 = lambda n: inf._stage1(x, st1, tf.constant(0, tf.int64), tf.constant(n, tf.int64), valid)[0].numpy()
        run1(1)
        rows["one SGA+BBVI step (bits-back stage 1)"] = _best_time(lambda: run1(steps), repeats=2) / steps
        y_round = tf.round(yb_)
        ms2, vs2 = optim.init_state([mean, log_var])
        st2 = tuple([mean, log_var] + ms2 + vs2)
        run2 = lambda n: inf._stage2(y_round, st2, tf.constant(n, tf.int64))[0].numpy()
        run2(1)
        rows["one reproducible-BBVI step"] = _best_time(lambda: run2(steps), repeats=2) / steps
    figures["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "figures": figures}


def markdown(report: Dict[str, object], model_name: str, machine: str) -> str:
    rows, fig = report["rows"], report["figures"]
    ref = rows["amortized forward pass (g_a, h_a, h_s, g_s)"]
    lines = [f"Model `{model_name}`, image {fig['image']}, machine: {machine}.", "",
             "| operation | seconds | x forward pass |", "|---|---|---|"]
    for name, seconds in rows.items():
        lines.append(f"| {name} | {seconds:.4f} | {seconds / ref:.2f} |")
    lines.append("")
    if fig["sga_flops_per_step"]:
        lines.append(f"- SGA step: {fig['sga_flops_per_step'] / 1e9:.1f} GFLOP, "
                     f"{fig['sga_gflops_per_second']:.1f} GFLOP/s = "
                     f"{100 * fig['sga_gflops_per_second'] / fig['matmul_gflops_per_second']:.0f}% of the measured "
                     f"float32 matmul rate ({fig['matmul_gflops_per_second']:.1f} GFLOP/s). FLOPs are the useful "
                     f"work of h_s and g_s, forward and backward (3x forward)"
                     + (f"; TF's profiler counts {fig['sga_profiler_flops_per_step'] / 1e9:.1f} GFLOP for the step "
                        "graph, as it counts transposed convolutions densely (zeros included)."
                        if fig.get("sga_profiler_flops_per_step") else "."))
    naive = rows.get("one SGA step, naive: eager Python loop, Keras Adam")
    if naive and fig["sga_flops_per_step"]:
        naive_gflops = fig["sga_flops_per_step"] / naive / 1e9
        lines.append(f"- Naive eager SGA step (before): {naive_gflops:.1f} GFLOP/s = "
                     f"{100 * naive_gflops / fig['matmul_gflops_per_second']:.0f}% of the matmul rate, "
                     f"{naive / ref:.2f}x the forward pass; {3600 / (naive * 2000):.1f} images/hour at 2000 steps.")
    lines.append(f"- SGA (2000 steps) images/hour: {fig['sga_images_per_hour_single']:.1f} one at a time, "
                 f"{fig['sga_images_per_hour_batched']:.1f} in batches of {fig['batch']}.")
    lines.append(f"- Peak memory (RSS): {fig['peak_memory_mib']:.0f} MiB.")
    return "\n".join(lines)
