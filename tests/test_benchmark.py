"""Smoke test of the benchmark on a tiny model and a small image (the numbers themselves are machine facts)."""
from tfc_inference import benchmark
from tests import helpers


class BenchmarkTest(helpers.TestCase):

    def test_runs_and_reports_every_row(self):
        model = helpers.shared_model("hyperprior", trained=True)
        bb = helpers.tiny_model("bitsback", seed=2)
        report = benchmark.run(model, helpers.kodak_crop(64, 128), bb, steps=2, batch=2)
        rows, figures = report["rows"], report["figures"]
        for name in ("amortized forward pass (g_a, h_a, h_s, g_s)", "one SGA step (compiled whole loop)",
                     "one SGA step, naive: eager Python loop, Keras Adam", "decode (real file)",
                     "one SGA+BBVI step (bits-back stage 1)", "one reproducible-BBVI step"):
            self.assertGreater(rows[name], 0.0)
        self.assertGreater(figures["matmul_gflops_per_second"], 0.0)
        self.assertGreater(figures["sga_flops_per_step"], 1e6)
        self.assertGreater(figures["peak_memory_mib"], 10)
        text = benchmark.markdown(report, "tiny", "test machine")
        self.assertIn("| one SGA step (compiled whole loop) |", text)
        self.assertIn("Naive eager SGA step (before)", text)
        self.assertIn("GFLOP/s", text)

    def test_flop_counts_match_hand_computation(self):
        import tensorflow as tf
        conv = tf.keras.layers.Conv2D(8, 5, strides=2, padding="same")
        x = tf.zeros([1, 64, 32, 3])
        y = conv(x)
        self.assertEqual(benchmark.layer_flops(conv, x.shape, y.shape), 2 * 32 * 16 * 25 * 3 * 8)
        deconv = tf.keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")
        y2 = deconv(y)
        self.assertEqual(tuple(y2.shape), (1, 64, 32, 4))
        # transposed: per input position, not per (4x larger) output position
        self.assertEqual(benchmark.layer_flops(deconv, y.shape, y2.shape), 2 * 32 * 16 * 9 * 8 * 4)
        model = helpers.shared_model("hyperprior", trained=True)
        flops = benchmark.model_flops(model, 64, 128)
        self.assertEqual(set(flops), {"analysis", "hyper_analysis", "hyper_synthesis", "synthesis"})
        # analysis and synthesis mirror each other except for the GDN/IGDN placement: same order of magnitude
        self.assertGreater(flops["synthesis"], 0.5 * flops["analysis"])
        self.assertLess(flops["synthesis"], 2.0 * flops["analysis"])
