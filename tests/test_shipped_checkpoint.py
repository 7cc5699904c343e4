"""Acceptance tests on the checkpoint shipped in checkpoints/ (the demo's model) and the bundled Kodak image."""
import os
import tempfile

import numpy as np
import tensorflow as tf

import tfc_inference
from tfc_inference import codec, container, zoo
from tfc_inference.data import read_image
from tests import helpers

SHIPPED = "hyperprior-mse-0.01"


class ShippedCheckpointTest(helpers.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.model = zoo.load_model(SHIPPED)  # fails (ModelNotFoundError) if the shipped checkpoint is missing
        cls.image = read_image(tfc_inference.DEMO_IMAGE)

    def test_listed_with_measured_evaluation(self):
        info = {m["name"]: m for m in zoo.list_models()}[SHIPPED]
        self.assertGreater(info["evaluation"]["psnr"], 20)
        self.assertGreater(info["training"]["steps"], 1000)
        self.assertEqual(info["fingerprint"], self.model.fingerprint().hex())

    def test_kodak_round_trip_exact_and_within_one_percent_of_estimate(self):
        result = codec.compress(self.model, self.image)
        decoded = codec.decompress_details(result.data)  # model found by the name in the file
        self.assertAllEqual(decoded.y_symbols, result.y_symbols)
        self.assertAllEqual(decoded.z_hat, result.z_hat)
        self.assertAllEqual(decoded.image, result.reconstruction)
        self.assertLess(abs(result.bits / result.estimated_bits - 1.0), 0.01)
        mse = np.mean((decoded.image.astype(np.float64) - self.image) ** 2)
        self.assertNear(result.psnr, 10 * np.log10(255 ** 2 / mse), 1e-9)
        self.assertGreater(result.psnr, 25.0)  # a trained model, not noise

    def test_saved_model_round_trip_matches_codec(self):
        from tfc_inference.export import export_saved_model
        crop = self.image[:200, :300]
        result = codec.compress(self.model, crop)
        z_stream, y_stream = container.unpack(result.data)[1][:2]  # [z, y, guard]
        with tempfile.TemporaryDirectory() as d:
            export_saved_model(self.model, os.path.join(d, "sm"))
            loaded = tf.saved_model.load(os.path.join(d, "sm"))
            z_string, y_string, shape = loaded.compress(tf.constant(crop))
            self.assertEqual(z_string.numpy()[0], z_stream)
            self.assertEqual(y_string.numpy()[0], y_stream)
            image = loaded.decompress(z_string, y_string, shape).numpy()
        self.assertAllEqual(image, result.reconstruction)

    def test_sga_lowers_the_true_loss(self):
        crop = self.image[128:256, 256:448]
        amortized = codec.compress(self.model, crop)
        sga = codec.compress(self.model, crop, method="sga", iterations=120, eval_every=40)
        self.assertLess(sga.estimated_bpp + sga.lmbda * sga.mse,
                        amortized.estimated_bpp + amortized.lmbda * amortized.mse)
        self.assertAllEqual(codec.decompress(sga.data), sga.reconstruction)


class EveryShippedModelTest(helpers.TestCase):
    """Every model ``tfc-inference models`` lists loads and round-trips a Kodak crop through a real file."""

    def test_zoo_has_ten_series_models_that_round_trip(self):
        image = read_image(tfc_inference.DEMO_IMAGE)[96:224, 256:448]
        listed = zoo.list_models()
        series = [m["name"] for m in listed if m["name"].startswith(("hyperprior-mse-", "bitsback-mse-"))]
        self.assertGreaterEqual(len(series), 10)
        for info in listed:
            with self.subTest(model=info["name"]):
                model = zoo.load_model(info["name"])
                result = codec.compress(model, image)
                decoded = codec.decompress(result.data)  # the model found by the name in the file
                self.assertAllEqual(decoded, result.reconstruction)
                self.assertGreater(result.psnr, 24.0)
