"""Tests of the discretizers: SGA's tempered rounding, its deterministic version, MAP, STE, uniform noise."""
import numpy as np
import tensorflow as tf

from tests import helpers

from tfc_inference import discretize


def _numpy_p_up(r, tau):
    down = np.exp(-np.arctanh(np.clip(r, 0, 1 - 1e-5)) / tau)
    up = np.exp(-np.arctanh(np.clip(1 - r, 0, 1 - 1e-5)) / tau)
    return up / (down + up)


class SGAProbabilityTest(helpers.TestCase):

    def test_matches_formula(self):
        r = np.linspace(0.0, 0.999, 101).astype(np.float32)
        for tau in (0.5, 0.2, 0.05):
            p = discretize.sga_round_up_probability(tf.constant(r), tau).numpy()
            self.assertAllClose(p, _numpy_p_up(r.astype(np.float64), tau), atol=1e-5)

    def test_monotone_symmetric_and_limits(self):
        r = tf.constant(np.linspace(0.001, 0.999, 999), tf.float32)
        p = discretize.sga_round_up_probability(r, 0.3).numpy()
        self.assertTrue(np.all(np.diff(p) >= 0))
        self.assertAllClose(p, 1.0 - p[::-1], atol=1e-5)  # p(r) = 1 - p(1 - r)
        self.assertNear(float(discretize.sga_round_up_probability(0.5, 0.3)), 0.5, 1e-6)
        self.assertLess(float(discretize.sga_round_up_probability(0.0, 0.3)), 1e-6)
        self.assertGreater(float(discretize.sga_round_up_probability(0.99999, 0.3)), 1 - 1e-6)

    def test_low_temperature_is_hard_rounding(self):
        r = tf.constant([0.1, 0.3, 0.45, 0.55, 0.7, 0.9])
        p = discretize.sga_round_up_probability(r, 1e-3).numpy()
        self.assertAllClose(p, [0, 0, 0, 1, 1, 1], atol=1e-6)


class SGASampleTest(helpers.TestCase):

    def test_sample_frequency_matches_probability(self):
        n = 200_000
        r = 0.3
        u = tf.fill([1, n], 4.0 + r)  # axis 0 is the image batch
        tau = 0.4
        out = discretize.SGA()(u, 0.0, tau, tf.constant([3, 7])).numpy()
        self.assertTrue(np.all((out >= 4.0) & (out <= 5.0)))
        frequency_up = np.mean(out > 4.5)  # the Gumbel-softmax sample is nearer to the argmax category
        self.assertNear(frequency_up, _numpy_p_up(r, tau), 0.005)

    def test_lands_on_offset_grid_at_low_temperature(self):
        rng = np.random.default_rng(0)
        offset = tf.constant(rng.normal(size=[1000]), tf.float32)
        u = offset + tf.constant(rng.uniform(-5, 5, size=[1000]), tf.float32)
        out = discretize.SGA()(u, offset, 1e-4, tf.constant([0, 1])).numpy()
        k = out - offset.numpy()
        self.assertAllClose(k, np.round(k), atol=1e-3)
        # and nearly always the nearest grid point
        self.assertGreater(np.mean(np.round(k) == np.round(u.numpy() - offset.numpy())), 0.99)

    def test_same_draw_for_every_image_of_a_batch(self):
        u = tf.random.stateless_uniform([1, 50], [4, 4], -3, 3)
        batch = tf.concat([u, u, u], axis=0)
        out = discretize.SGA()(batch, 0.0, 0.5, tf.constant([1, 2]))
        # the same draw, up to the last bit: Eigen's vectorized and scalar exp/log differ there, and which one an
        # element gets depends on its position in the tensor (AVX2 machines; another draw differs by ~0.1-1)
        self.assertAllClose(out[0], out[2], rtol=1e-6, atol=1e-6)
        self.assertAllClose(out[:1], discretize.SGA()(u, 0.0, 0.5, tf.constant([1, 2])), rtol=1e-6, atol=1e-6)

    def test_seeded(self):
        u = tf.random.stateless_uniform([100], [1, 2], -3, 3)
        a = discretize.SGA()(u, 0.0, 0.5, tf.constant([5, 9]))
        b = discretize.SGA()(u, 0.0, 0.5, tf.constant([5, 9]))
        c = discretize.SGA()(u, 0.0, 0.5, tf.constant([5, 10]))
        self.assertAllEqual(a, b)
        self.assertNotAllClose(a, c)

    def test_has_gradient(self):
        u = tf.Variable([0.2, 1.7, -0.4])
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(discretize.SGA()(u, 0.0, 0.5, tf.constant([0, 0])))
        g = tape.gradient(out, u).numpy()
        self.assertTrue(np.all(np.isfinite(g)))
        self.assertTrue(np.all(g > 0))  # moving u up makes rounding up more likely


class OtherDiscretizersTest(helpers.TestCase):

    def test_deterministic_annealing_is_expectation(self):
        u = tf.constant([0.2, 1.7, -0.4, 3.5])
        out = discretize.DeterministicAnnealing()(u, 0.0, 0.3, tf.constant([0, 0])).numpy()
        f = np.floor(u.numpy())
        self.assertAllClose(out, f + _numpy_p_up(u.numpy() - f, 0.3), atol=1e-5)

    def test_ste_rounds_with_identity_gradient(self):
        u = tf.Variable([0.2, 1.7, -0.4])
        offset = tf.constant([0.25, 0.0, 0.5])
        with tf.GradientTape() as tape:
            out = discretize.STE()(u, offset, None, None)
            s = tf.reduce_sum(out * [1.0, 2.0, 3.0])
        self.assertAllClose(out, [0.25, 2.0, -0.5])
        self.assertAllClose(tape.gradient(s, u), [1.0, 2.0, 3.0])

    def test_uniform_noise_and_map(self):
        u = tf.zeros([1, 10000])
        out = discretize.UniformNoise()(u, 0.0, None, tf.constant([1, 1])).numpy()
        self.assertTrue(np.all(np.abs(out) <= 0.5))
        self.assertNear(out.std(), np.sqrt(1 / 12), 0.01)
        self.assertAllEqual(discretize.MAP()(u, 0.0, None, None), u)

    def test_registry(self):
        self.assertIsInstance(discretize.get("deterministic_annealing"), discretize.DeterministicAnnealing)
        self.assertEqual(discretize.get("ste").default_learning_rate, 1e-4)
        self.assertTrue(discretize.get("map").keep_best)
        with self.assertRaises(ValueError):
            discretize.get("nope")
