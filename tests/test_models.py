"""Tests of the hyperprior models: shapes, coding grids, rates against scipy, training losses, fingerprints."""
import math
import os
import unittest

import numpy as np
import tensorflow as tf
from scipy import stats

from tests import helpers
from tfc_inference import zoo
from tfc_inference.models import (LN2, BitsBackHyperprior, MeanScaleHyperprior, ModelConfig, build_model)

KINDS = ("hyperprior", "bitsback")


def _image(h=64, w=128, top=200, left=300):
    return tf.constant(helpers.kodak_crop(h, w, top, left)[None].astype(np.float32))


def _scale_index_np(model, log_scale):
    """The continuous scale index of p(y|z), in float32 like the model (for identical truncation)."""
    c = model.config
    log_min = np.float32(math.log(c.scale_min))
    step = np.float32((math.log(c.scale_max) - math.log(c.scale_min)) / (c.num_scales - 1))
    return np.clip((log_scale.astype(np.float32) - log_min) / step, 0, c.num_scales - 1), log_min, step


def _discrete_gaussian_bits(k, s):
    """-log2 P(k) for P(k) = Phi((k + 1/2)/s) - Phi((k - 1/2)/s), computed in float64 on the upper tail."""
    a = np.abs(k.astype(np.float64))
    s = s.astype(np.float64)
    p = stats.norm.sf((a - 0.5) / s) - stats.norm.sf((a + 0.5) / s)
    return -np.log2(p)


class ModelTestBase(helpers.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.models = {kind: helpers.shared_model(kind) for kind in KINDS}
        cls.trained = {kind: helpers.shared_model(kind, trained=True) for kind in KINDS}


class ConfigTest(helpers.TestCase):

    def test_config_round_trip_and_unknown_keys(self):
        config = helpers.tiny_config("bitsback", lmbda=0.05, max_variance=3.0)
        d = config.to_dict()
        self.assertEqual(ModelConfig.from_dict(d), config)
        d["some_future_option"] = 1
        self.assertEqual(ModelConfig.from_dict(d), config)

    def test_min_variance_is_stored_only_when_set(self):
        """Absent means 0, so configs (and fingerprints) of models without a floor stay as they were."""
        self.assertNotIn("min_variance", helpers.tiny_config("bitsback").to_dict())
        config = helpers.tiny_config("bitsback", min_variance=0.25)
        self.assertEqual(config.to_dict()["min_variance"], 0.25)
        self.assertEqual(ModelConfig.from_dict(config.to_dict()), config)

    def test_build_model_kinds(self):
        self.assertIsInstance(helpers.tiny_model("hyperprior"), MeanScaleHyperprior)
        self.assertNotIsInstance(helpers.tiny_model("hyperprior"), BitsBackHyperprior)
        self.assertIsInstance(helpers.tiny_model("bitsback"), BitsBackHyperprior)
        with self.assertRaises(ValueError):
            build_model(helpers.tiny_config("vae"))


class ShapesTest(ModelTestBase):

    def test_latent_shapes(self):
        x = _image(128, 192)
        for kind, model in self.models.items():
            y, z = model.encode_latents(x)
            self.assertEqual(y.shape, (1, 8, 12, 8), kind)
            self.assertEqual(z.shape, (1, 2, 3, 8), kind)
            self.assertEqual(model.hyper_analysis_transform(y).shape, (1, 2, 3, 8 if kind == "hyperprior" else 16))
            mu, index = model.y_prior_params(z)
            self.assertEqual(mu.shape, y.shape)
            self.assertEqual(index.shape, y.shape)
            self.assertAllInRange(index, 0.0, model.config.num_scales - 1.0)
            self.assertEqual(model.synthesize(y).shape, (1, 128, 192, 3))

    def test_bitsback_encoder_gives_the_mean_of_q(self):
        model = self.models["bitsback"]
        x = _image()
        y, z = model.encode_latents(x)
        h = model.hyper_analysis_transform(model.analysis_transform(x)).numpy()
        self.assertAllClose(z, h[..., :8])
        mean, log_var = model.q_params(y)
        self.assertAllClose(mean, h[..., :8])
        self.assertAllClose(log_var, np.minimum(h[..., 8:], math.log(10.0)))

    def test_bitsback_variance_is_capped(self):
        model = helpers.tiny_model("bitsback", seed=2, max_variance=4.0)
        conv = model.hyper_analysis_transform.layers[-1]
        kernel, bias = conv.get_weights()
        conv.set_weights([kernel * 0.0, np.concatenate([np.zeros(8), np.full(8, 20.0)]).astype(np.float32)])
        _, log_var = model.q_params(model.analysis_transform(_image()))
        self.assertAllClose(log_var, np.full(log_var.shape, math.log(4.0)))

    def test_bitsback_variance_floor(self):
        model = helpers.tiny_model("bitsback", seed=2, min_variance=0.25)
        conv = model.hyper_analysis_transform.layers[-1]
        kernel, _ = conv.get_weights()
        conv.set_weights([kernel * 0.0, np.concatenate([np.zeros(8), np.full(8, -20.0)]).astype(np.float32)])
        _, log_var = model.q_params(model.analysis_transform(_image()))
        self.assertAllClose(log_var, np.full(log_var.shape, math.log(0.25)))
        self.assertAllClose(model.clip_log_variance(tf.constant([-9.0, 0.0, 9.0])),
                            [math.log(0.25), 0.0, math.log(10.0)])


class GridTest(ModelTestBase):

    def test_discretize_amortized_grids(self):
        for kind in KINDS:
            for model in (self.models[kind], self.trained[kind]):
                y, z = model.encode_latents(_image(128, 128, 0, 0))
                y_hat, z_hat = model.discretize_amortized(y, z)
                z_hat = z_hat.numpy()
                self.assertAllEqual(z_hat, np.round(z_hat))
                self.assertAllEqual(z_hat, np.round(z.numpy()))
                # mu computed from z_hat directly with the hyper-synthesis transform
                mu = model.hyper_synthesis_transform(z_hat).numpy()[..., :8]
                k = y_hat.numpy() - mu
                self.assertAllClose(k, np.round(k), atol=1e-4)
                self.assertAllLessEqual(np.abs(y_hat.numpy() - y.numpy()), 0.5 + 1e-4)
                self.assertGreater(np.abs(np.round(k)).max(), 0)  # not all symbols trivially zero

    def test_coding_params_truncate_the_index(self):
        model = self.trained["hyperprior"]
        z_hat = tf.round(model.encode_latents(_image())[1])
        mu, index = model.coding_params(z_hat)
        raw = model.hyper_synthesis_transform(z_hat).numpy()
        expected_index, _, _ = _scale_index_np(model, raw[..., 8:])
        self.assertAllClose(mu, raw[..., :8])
        self.assertAllEqual(index, np.floor(expected_index))

    def test_scale_table(self):
        model = self.models["hyperprior"]
        c = model.config
        scales = model.scale_fn(tf.range(c.num_scales, dtype=tf.float32)).numpy()
        self.assertAllClose(scales[[0, -1]], [c.scale_min, c.scale_max], rtol=1e-5)
        self.assertAllClose(scales, np.geomspace(c.scale_min, c.scale_max, c.num_scales), rtol=1e-5)


class DiscreteRateTest(ModelTestBase):

    def _independent_rd(self, model, x):
        y, z = model.encode_latents(x)
        z_hat = np.round(z.numpy())
        raw = model.hyper_synthesis_transform(z_hat).numpy()
        mu, log_scale = raw[..., :8], raw[..., 8:]
        index, log_min, step = _scale_index_np(model, log_scale)
        s = np.exp(np.float64(log_min) + np.float64(step) * np.floor(index))
        k = np.round(y.numpy() - mu)
        y_hat = (k + mu).astype(np.float32)
        bits_y = _discrete_gaussian_bits(k, s).sum()
        # P(z_hat = k) = F(k + 1/2) - F(k - 1/2) for the (noise-free) deep factorized density F
        base = model.hyperprior.base if kind_of(model) == "hyperprior" else model.hyperprior
        pz = (base.cdf(z_hat + 0.5).numpy().astype(np.float64) - base.cdf(z_hat - 0.5).numpy().astype(np.float64))
        bits_z = -np.log2(pz).sum()
        x_hat = np.round(np.clip(model.synthesize(y_hat).numpy(), 0, 255))
        mse = np.mean((x_hat - x.numpy()) ** 2)
        return bits_y, bits_z, mse, y_hat, z_hat

    def test_discrete_rd_matches_scipy(self):
        x = _image()
        num_pixels = 64 * 128
        for kind in KINDS:
            for model in (self.models[kind], self.trained[kind]):
                bits_y, bits_z, mse, y_hat, z_hat = self._independent_rd(model, x)
                rd = model.discrete_rd(x, tf.constant(y_hat), tf.constant(z_hat.astype(np.float32)))
                self.assertAllClose(rd["bpp"], (bits_y + bits_z) / num_pixels, rtol=2e-4, msg=kind)
                self.assertAllClose(rd["mse"], mse, rtol=1e-5)
                self.assertAllClose(rd["psnr"], 10 * np.log10(255 ** 2 / mse), rtol=1e-5)
                self.assertAllClose(rd["loss"], (bits_y + bits_z) / num_pixels + model.config.lmbda * mse,
                                    rtol=1e-5)
                # the evaluation-mode call is the same measurement
                out = model(x, training=False)
                self.assertAllClose(out["bpp"], rd["bpp"], rtol=1e-6)
                self.assertAllClose(out["mse"], rd["mse"], rtol=1e-6)
                # and bits_y / bits_z separately
                mu, index = model.coding_params(tf.constant(z_hat.astype(np.float32)))
                self.assertAllClose(model.bits_y(tf.constant(y_hat), mu, index)[0], bits_y, rtol=2e-4)
                self.assertAllClose(model.bits_z(tf.constant(z_hat.astype(np.float32)))[0], bits_z, rtol=2e-4)

    def test_batch_rate_is_mean_over_images(self):
        model = self.trained["hyperprior"]
        x1, x2 = _image(64, 64, 0, 0), _image(64, 64, 300, 600)
        rd1, rd2 = model(x1), model(x2)
        rd = model(tf.concat([x1, x2], 0))
        self.assertAllClose(rd["bpp"], (rd1["bpp"] + rd2["bpp"]) / 2, rtol=1e-5)
        self.assertAllClose(rd["mse"], (rd1["mse"] + rd2["mse"]) / 2, rtol=1e-5)


def kind_of(model):
    return "bitsback" if isinstance(model, BitsBackHyperprior) else "hyperprior"


class TrainingLossTest(ModelTestBase):

    def test_loss_finite_with_gradients_for_all_variables(self):
        x = tf.concat([_image(64, 64, 0, 0), _image(64, 64, 100, 100)], 0)
        for kind in KINDS:
            for model in (self.models[kind], self.trained[kind]):
                with tf.GradientTape() as tape:
                    out = model(x, training=True)
                self.assertTrue(np.isfinite(out["loss"].numpy()), kind)
                self.assertAllClose(out["loss"], out["bpp"] + model.config.lmbda * out["mse"], rtol=1e-5)
                variables = model.trainable_variables
                self.assertLen(variables, len(model.weights))
                grads = tape.gradient(out["loss"], variables)
                for v, g in zip(variables, grads):
                    self.assertIsNotNone(g, f"{kind}: no gradient for {v.name}")
                    self.assertTrue(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())), v.name)
                if model is self.models[kind]:  # (training may leave dead ReLUs behind)
                    for v, g in zip(variables, grads):
                        self.assertGreater(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))), 0.0, v.name)
                # the hyperprior's parameters are trained too
                hp = {id(v) for v in model.hyperprior.trainable_variables}
                self.assertNotEmpty(hp)
                self.assertTrue(hp <= {id(v) for v in variables})

    def test_hyperprior_training_rate_is_the_noisy_proxy(self):
        model = self.trained["hyperprior"]
        x = _image()
        tf.random.set_seed(11)
        out = model(x, training=True)
        y, z = model.encode_latents(x)
        tf.random.set_seed(11)  # reproduce the noise draws of the call: z first, then y
        z_t = (z + tf.random.uniform(tf.shape(z), -0.5, 0.5)).numpy()
        y_t = (y + tf.random.uniform(tf.shape(y), -0.5, 0.5)).numpy()
        raw = model.hyper_synthesis_transform(z_t).numpy()
        index, log_min, step = _scale_index_np(model, raw[..., 8:])
        s = np.exp(np.float64(log_min) + np.float64(step) * index)  # continuous index in training
        d = np.abs(y_t - raw[..., :8]).astype(np.float64)
        bits_y = -np.log2(stats.norm.sf((d - 0.5) / s) - stats.norm.sf((d + 0.5) / s)).sum()
        base = model.hyperprior.base
        bits_z = -np.log2(base.cdf(z_t + 0.5).numpy().astype(np.float64)
                          - base.cdf(z_t - 0.5).numpy().astype(np.float64)).sum()
        self.assertAllClose(out["bpp"], (bits_y + bits_z) / (64 * 128), rtol=2e-4)
        x_t = model.synthesize(y_t).numpy()
        self.assertAllClose(out["mse"], np.mean((x_t - x.numpy()) ** 2), rtol=1e-4)

    def test_bitsback_training_rate_is_net_of_bits_back(self):
        model = self.trained["bitsback"]
        x = _image()
        tf.random.set_seed(5)
        out = model(x, training=True)
        y = model.analysis_transform(x)
        mean, log_var = [t.numpy() for t in model.q_params(y)]
        tf.random.set_seed(5)  # the call draws eps for z ~ q first, then the uniform noise of y
        eps = tf.random.normal(mean.shape).numpy()
        u = tf.random.uniform(tf.shape(y), -0.5, 0.5).numpy()
        z = mean + np.exp(0.5 * log_var) * eps
        log_q = stats.norm.logpdf(z.astype(np.float64), mean, np.exp(0.5 * log_var.astype(np.float64)))
        log_p = model.hyperprior.log_prob(z).numpy().astype(np.float64)
        net_z = (log_q - log_p).sum() / LN2
        self.assertAllClose(out["z_net_bpp"], net_z / (64 * 128), rtol=1e-4, atol=1e-7)
        raw = model.hyper_synthesis_transform(z.astype(np.float32)).numpy()
        index, log_min, step = _scale_index_np(model, raw[..., 8:])
        s = np.exp(np.float64(log_min) + np.float64(step) * index)
        d = np.abs(y.numpy() + u - raw[..., :8]).astype(np.float64)
        bits_y = -np.log2(stats.norm.sf((d - 0.5) / s) - stats.norm.sf((d + 0.5) / s)).sum()
        self.assertAllClose(out["bpp"], (bits_y + net_z) / (64 * 128), rtol=2e-4)


class NetZBitsTest(ModelTestBase):

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.model = self.trained["bitsback"]
        self.shape = (2, 2, 3, 8)
        self.mean = rng.normal(0, 2, self.shape).astype(np.float32)
        self.log_var = rng.uniform(-4, 2, self.shape).astype(np.float32)
        self.z = (self.mean + np.exp(0.5 * self.log_var) * rng.normal(size=self.shape)).astype(np.float32)

    def test_matches_scipy(self):
        got = self.model.net_z_bits(self.z, self.mean, self.log_var).numpy()
        log_q = stats.norm.logpdf(self.z.astype(np.float64), self.mean.astype(np.float64),
                                  np.exp(0.5 * self.log_var.astype(np.float64)))
        log_p = self.model.hyperprior.log_prob(self.z).numpy().astype(np.float64)
        expected = (log_q - log_p).sum(axis=(1, 2, 3)) / math.log(2)
        self.assertEqual(got.shape, (2,))
        self.assertAllClose(got, expected, rtol=1e-4, atol=1e-3)

    def test_includes_minus_the_entropy_of_q(self):
        # At z = mean, raising every log variance by delta lowers log q(z) by delta / 2 per element, so the net
        # rate drops by n * delta / (2 ln 2) bits: the bits-back refund of q's entropy.
        n = int(np.prod(self.shape[1:]))
        base = self.model.net_z_bits(self.mean, self.mean, self.log_var).numpy()
        for delta in (0.5, 2.0, 6.0):
            raised = self.model.net_z_bits(self.mean, self.mean, self.log_var + delta).numpy()
            self.assertAllClose(base - raised, np.full(2, n * delta / (2 * math.log(2))), rtol=1e-4)
        # so a broad q makes the (single-sample) net rate negative
        broad = self.model.net_z_bits(self.mean * 0, self.mean * 0, np.full(self.shape, 20.0, np.float32))
        self.assertAllLess(broad, 0.0)


class FingerprintTest(ModelTestBase):

    def test_changes_when_any_weight_changes(self):
        model = helpers.tiny_model("bitsback", seed=3)
        fp = model.fingerprint()
        self.assertLen(fp, 8)
        self.assertEqual(model.fingerprint(), fp)
        seen = {fp}
        for w in model.weights:
            old = w.numpy()
            new = old.copy()
            new.flat[-1] = np.nextafter(new.flat[-1], np.float32(np.inf))  # the smallest possible change
            w.assign(new)
            changed = model.fingerprint()
            self.assertNotIn(changed, seen, w.name)
            seen.add(changed)
            w.assign(old)
            self.assertEqual(model.fingerprint(), fp, w.name)

    def test_depends_on_config_and_seed(self):
        a = helpers.tiny_model("hyperprior", seed=3)
        b = helpers.tiny_model("hyperprior", seed=3)
        self.assertEqual(a.fingerprint(), b.fingerprint())
        self.assertNotEqual(a.fingerprint(), helpers.tiny_model("hyperprior", seed=4).fingerprint())
        b.config = helpers.tiny_config("hyperprior", lmbda=0.02)
        self.assertNotEqual(a.fingerprint(), b.fingerprint())

    def test_stable_across_save_and_load(self):
        for kind in KINDS:
            model = helpers.tiny_model(kind, seed=9)
            folder = os.path.join(helpers.fresh_dir("fp"), f"fp-{kind}")
            zoo.save_checkpoint(model, folder)
            loaded = zoo.load_model(folder, prepare_coders=False)
            self.assertIsNot(loaded, model)
            self.assertEqual(loaded.fingerprint(), model.fingerprint())
            self.assertEqual(bytes.fromhex(loaded.info["fingerprint"]), model.fingerprint())


class EntropyCoderTest(ModelTestBase):

    def test_encode_decode_round_trip(self):
        for kind in KINDS:
            model = self.trained[kind]
            y, z = model.encode_latents(_image(128, 192, 0, 0))
            y_hat, z_hat = model.discretize_amortized(y, z)
            y_str, z_str, symbols = model.entropy_encode(y_hat, z_hat)
            y_dec, z_dec, sym_dec = model.entropy_decode(y_str, z_str, [2, 3])
            self.assertAllEqual(z_dec, z_hat)
            self.assertAllEqual(sym_dec, symbols)
            self.assertAllEqual(y_dec, y_hat)
            mu = model.hyper_synthesis_transform(z_hat).numpy()[..., :8]
            self.assertAllEqual(symbols, np.round(y_hat.numpy() - mu).astype(np.int32))

    # BUG (tfc_inference/models.py, MeanScaleHyperprior._entropy_encode/_entropy_decode): these tf.functions
    # capture self._z_coder / self._y_coder when first traced; prepare_coders() after a weight change (e.g.
    # fine-tuning, or assigning new weights) builds new coders but the traced functions keep using the old
    # tables, so the z stream is coded with a stale prior (inflated files; a fresh decoder disagrees).
    def test_prepare_coders_after_weight_change_takes_effect(self):
        model = helpers.tiny_model("hyperprior", seed=4)
        x = _image(64, 64, 0, 0)
        model.entropy_encode(*model.discretize_amortized(*model.encode_latents(x)))  # traces the coders
        for v in model.hyperprior.trainable_variables:  # a different p(z), as after some training
            v.assign(v * 0.5 + 0.3)
        model.prepare_coders()
        y_hat, z_hat = model.discretize_amortized(*model.encode_latents(x))
        _, z_str, _ = model.entropy_encode(y_hat, z_hat)
        fresh = build_model(model.config)
        for dst, src in zip(fresh.weights, model.weights):
            dst.assign(src)
        fresh.prepare_coders()
        _, z_str_fresh, _ = fresh.entropy_encode(y_hat, z_hat)
        self.assertEqual(z_str.numpy()[0], z_str_fresh.numpy()[0])
