"""Smoke test of the benchmark on a tiny model and a small image (the numbers themselves are machine facts)."""
from tfc_inference import benchmark
from tests import helpers


class BenchmarkTest(helpers.TestCase):

    def test_runs_and_reports_every_row(self):
        model = helpers.shared_model("hyperprior", trained=True)
        bb = helpers.tiny_model("bitsback", seed=2)
        report = benchmark.run(model, helpers.kodak_crop(64, 128), bb, steps=2, batch=2)
        rows, figures = report["rows"], report["figures"]
        for name in ("amortized forward pass (g_a, h_a, h_s, g_s)", "one SGA step", "decode (real file)",
                     "one SGA+BBVI step (bits-back stage 1)", "one reproducible-BBVI step"):
            self.assertGreater(rows[name], 0.0)
        self.assertGreater(figures["matmul_gflops_per_second"], 0.0)
        self.assertGreater(figures["sga_flops_per_step"], 1e6)
        self.assertGreater(figures["peak_memory_mib"], 10)
        text = benchmark.markdown(report, "tiny", "test machine")
        self.assertIn("| one SGA step |", text)
        self.assertIn("GFLOP/s", text)
