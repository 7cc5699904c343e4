"""Tests of the rounding-probability functions (atanh, linear, cosine, sigmoid_logit) and three-class rounding."""
import numpy as np
import tensorflow as tf

from tfc_inference import discretize, rounding
from tests import helpers

SPECS = ["atanh", "linear", "cosine", "sigmoid_logit", "sigmoid_logit(a=0.5)", "sigmoid_logit(a=4)"]


def p_up(spec, r, tau):
    return rounding.round_up_probability(spec, np.asarray(r, np.float32), tau).numpy()


class RoundingFunctionTest(helpers.TestCase):

    def test_probabilities_valid_monotone_and_symmetric(self):
        r = np.linspace(0.001, 0.999, 500)
        for spec in SPECS:
            for tau in (0.05, 0.3, 1.0, 3.0):
                p = p_up(spec, r, tau)
                with self.subTest(spec=spec, tau=tau):
                    self.assertTrue(np.all(np.isfinite(p)))
                    self.assertTrue(np.all((p >= 0.0) & (p <= 1.0)))
                    self.assertTrue(np.all(np.diff(p) >= -1e-6), "P(up) must not decrease with r")
                    # symmetric: P(up | r) = P(down | 1 - r)
                    self.assertAllClose(p, 1.0 - p_up(spec, 1.0 - r, tau), atol=2e-5)
                    self.assertNear(float(p_up(spec, 0.5, tau)), 0.5, 1e-6)

    def test_exact_at_integers(self):
        v = tf.constant([-3.0, 0.0, 2.0, 7.0])
        for spec in SPECS:
            for tau in (0.1, 0.5, 1.0, 10.0):
                # (two-class only: three-class rounding may move a grid point to a neighbour on purpose)
                for three in (False,):
                    with self.subTest(spec=spec, tau=tau, three=three):
                        base, steps, logits = rounding.tempered_logits(rounding.get(spec), v, tau, three)
                        p = tf.nn.softmax(logits, -1).numpy()
                        self.assertAllEqual(base.numpy() + steps.numpy()[np.argmax(p, -1)], v.numpy())
                        self.assertAllEqual(p.max(-1), np.ones(4))  # probability exactly 1 for v itself

    def test_limits_in_temperature(self):
        r = np.array([0.1, 0.3, 0.45, 0.55, 0.7, 0.9], np.float32)
        for spec in SPECS:
            with self.subTest(spec=spec):
                # cold: deterministic rounding to the nearest integer
                self.assertAllClose(p_up(spec, r, 1e-3), (r > 0.5).astype(np.float32), atol=1e-4)
                # hot: a fair coin
                self.assertAllClose(p_up(spec, r, 1e4), np.full_like(r, 0.5), atol=1e-3)

    def test_closed_forms_at_unit_temperature(self):
        r = np.linspace(0.01, 0.99, 99).astype(np.float32)
        self.assertAllClose(p_up("linear", r, 1.0), r, atol=1e-5)
        self.assertAllClose(p_up("cosine", r, 1.0), np.sin(np.pi * r / 2) ** 2, atol=1e-5)
        logit = np.log(r / (1 - r))
        for a in (0.5, 2.0, 4.0):
            self.assertAllClose(p_up(f"sigmoid_logit(a={a})", r, 1.0), 1 / (1 + np.exp(-a * logit)), atol=1e-5)
        self.assertAllClose(p_up("sigmoid_logit(a=1)", r, 0.3), p_up("linear", r, 0.3), atol=1e-5)

    def test_atanh_matches_the_original_sga_formula(self):
        r = np.linspace(0.001, 0.99, 100).astype(np.float32)  # at r = 0 exactly, now exactly 0 (not 5e-6)
        for tau in (0.1, 0.5):
            self.assertAllClose(p_up("atanh", r, tau), discretize.sga_round_up_probability(r, tau).numpy(),
                                atol=1e-6)

    def test_parse(self):
        self.assertEqual(rounding.get("cosine"), rounding.Cosine())
        self.assertEqual(rounding.get("sigmoid-logit(3)"), rounding.SigmoidLogit(3.0))
        self.assertEqual(rounding.get(None), rounding.Atanh())
        self.assertEqual(rounding.get(rounding.get("sigmoid_logit(a=2.5)").spec()), rounding.SigmoidLogit(2.5))
        for bad in ("nope", "linear(2)", "sigmoid_logit(a=-1)", ""):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                rounding.get(bad)


class ThreeClassTest(helpers.TestCase):

    def test_probabilities_over_three_neighbours(self):
        v = tf.constant(np.linspace(-1.995, 2.005, 401), tf.float32)  # no exact ties at half-integers
        for spec in ("atanh", "linear", "cosine"):
            base, steps, logits = rounding.tempered_logits(rounding.get(spec), v, 0.5, three_class=True)
            p = tf.nn.softmax(logits, axis=-1).numpy()
            self.assertAllClose(p.sum(-1), np.ones(401), atol=1e-5)
            self.assertAllEqual(base.numpy(), np.round(v.numpy()))
            # the nearest candidate (the middle one) is the most likely
            self.assertTrue(np.all(p[:, 1] >= p[:, 0] - 1e-6) and np.all(p[:, 1] >= p[:, 2] - 1e-6))
            cold = tf.nn.softmax(rounding.tempered_logits(rounding.get(spec), v, 1e-3, True)[2], -1).numpy()
            self.assertAllClose(cold[:, 1], np.ones(401), atol=1e-3)

    def test_sga_variants_land_on_the_grid_when_cold(self):
        rng = np.random.default_rng(1)
        offset = tf.constant(rng.normal(size=[1, 500]), tf.float32)
        u = offset + tf.constant(rng.uniform(-4, 4, size=[1, 500]), tf.float32)
        for spec in ("linear", "cosine", "sigmoid_logit"):
            for three in (False, True):
                disc = discretize.get("sga", rounding=spec, three_class=three)
                out = disc(u, offset, 1e-4, tf.constant([0, 1])).numpy() - offset.numpy()
                with self.subTest(spec=spec, three=three):
                    self.assertAllClose(out, np.round(out), atol=1e-3)
                    self.assertGreater(np.mean(np.round(out) == np.round(u.numpy() - offset.numpy())), 0.99)

    def test_three_class_samples_stay_in_the_neighbourhood(self):
        n = 100_000
        v = 0.3
        disc = discretize.get("sga", rounding="linear", three_class=True)
        out = disc(tf.fill([1, n], v), 0.0, 0.7, tf.constant([4, 2])).numpy()
        self.assertTrue(np.all((out >= -1.0) & (out <= 1.0)))
        p = tf.nn.softmax(rounding.tempered_logits(rounding.Linear(), tf.constant([v]), 0.7, True)[2], -1).numpy()[0]
        self.assertTrue(p[1] > p[2] > p[0] > 0)
        # samples near each candidate occur, in the order of their probabilities
        near = [np.mean(out < -0.75), np.mean(np.abs(out) < 0.25), np.mean(out > 0.75)]
        self.assertTrue(near[1] > near[2] > near[0] > 0, near)

    def test_gradients_flow_and_options_validated(self):
        u = tf.Variable(tf.constant([[0.2, 1.7, -0.4]]))
        for three in (False, True):
            with tf.GradientTape() as tape:
                out = tf.reduce_sum(discretize.get("sga", "cosine", three)(u, 0.0, 0.5, tf.constant([0, 0])))
            g = tape.gradient(out, u)
            self.assertTrue(np.all(np.isfinite(g.numpy())) and np.any(g.numpy() != 0))
        with self.assertRaises(ValueError):
            discretize.get("map", rounding="linear")
        self.assertEqual(discretize.get("deterministic-annealing", "cosine", True).describe(),
                         "deterministic-annealing[cosine, 3-class]")
        self.assertEqual(discretize.get("sga").describe(), "sga")
