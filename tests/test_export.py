"""SavedModel export: streams and images identical to the Python codec, loadable with TF + TFC alone."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import tensorflow as tf
from PIL import Image

import tfc_inference
from tfc_inference import codec, container, export, zoo
from tfc_inference.models import ModelConfig, build_model

TINY = dict(num_filters=8, latent_channels=8, hyper_filters=8, hyper_latent_channels=8)


def kodak_crop(height, width, top=200, left=300):
    with Image.open(tfc_inference.DEMO_IMAGE) as img:
        arr = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(arr[top:top + height, left:left + width])


class ExportTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="tfci_test_export_")
        tf.random.set_seed(1)
        folder = zoo.save_checkpoint(build_model(ModelConfig(**TINY)), os.path.join(cls.root, "tiny-test"))
        cls.model = zoo.load_model(folder)
        cls.export_dir = os.path.join(cls.root, "exported")
        export.export_saved_model(cls.model, cls.export_dir)
        cls.loaded = tf.saved_model.load(cls.export_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def check_matches_codec(self, image):
        result = codec.compress(self.model, image, method="amortized")
        _, streams = container.unpack(result.data)
        z_string, y_string, shape = self.loaded.compress(image)
        self.assertEqual(z_string.shape, [1])
        self.assertEqual(y_string.shape, [1])
        self.assertEqual(z_string.numpy()[0], streams[0])
        self.assertEqual(y_string.numpy()[0], streams[1])
        self.assertAllEqual(shape, image.shape[:2])
        decoded = self.loaded.decompress(z_string, y_string, shape).numpy()
        self.assertEqual(decoded.dtype, np.uint8)
        self.assertEqual(decoded.shape, image.shape)
        self.assertAllEqual(decoded, codec.decompress(result.data, self.model))
        self.assertAllEqual(decoded, result.reconstruction)

    def test_streams_and_image_identical_to_codec(self):
        self.check_matches_codec(kodak_crop(70, 100))

    def test_odd_sizes(self):
        for height, width in [(1, 1), (17, 33)]:
            with self.subTest(size=(height, width)):
                self.check_matches_codec(kodak_crop(height, width))

    def test_signatures(self):
        image = kodak_crop(20, 30)
        outputs = self.loaded.signatures["compress"](image=tf.constant(image))
        self.assertEqual(set(outputs), {"z_string", "y_string", "image_shape"})
        decoded = self.loaded.signatures["decompress"](**outputs)["image"]
        self.assertAllEqual(decoded, self.loaded.decompress(outputs["z_string"], outputs["y_string"],
                                                            outputs["image_shape"]))
        self.assertEqual(decoded.shape, image.shape)

    def test_info_file(self):
        with open(os.path.join(self.export_dir, export.INFO_FILE)) as f:
            info = json.load(f)
        self.assertEqual(info, export.read_export_info(self.export_dir))
        self.assertEqual(info["model_name"], "tiny-test")
        self.assertEqual(info["fingerprint"], self.model.fingerprint().hex())
        self.assertEqual(info["config"], self.model.config.to_dict())

    def test_edge_padding_matches_numpy(self):
        x = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
        padded = export._pad_edge(tf.constant(x), 4).numpy()
        self.assertAllEqual(padded, np.pad(x, [(0, 3), (0, 1), (0, 0)], mode="edge"))
        self.assertAllEqual(export._pad_edge(tf.constant(x[:4, :4]), 4), x[:4, :4])

    def test_loads_with_tensorflow_and_tfc_only(self):
        image = kodak_crop(40, 50)
        result = codec.compress(self.model, image, method="amortized")
        _, streams = container.unpack(result.data)
        np.save(os.path.join(self.root, "image.npy"), image)
        script = textwrap.dedent("""
            import sys
            import numpy as np
            import tensorflow as tf
            import tensorflow_compression  # registers the range coding ops
            loaded = tf.saved_model.load(sys.argv[1])
            image = np.load(sys.argv[2])
            z, y, shape = loaded.compress(image)
            decoded = loaded.decompress(z, y, shape).numpy()
            np.save(sys.argv[3], decoded)
            assert "tfc_inference" not in sys.modules
            print(z.numpy()[0].hex(), y.numpy()[0].hex())
        """)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        out_path = os.path.join(self.root, "decoded.npy")
        proc = subprocess.run([sys.executable, "-c", script, self.export_dir, os.path.join(self.root, "image.npy"),
                               out_path], cwd=self.root, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        z_hex, y_hex = proc.stdout.split()
        self.assertEqual(bytes.fromhex(z_hex), streams[0])
        self.assertEqual(bytes.fromhex(y_hex), streams[1])
        self.assertAllEqual(np.load(out_path), result.reconstruction)


if __name__ == "__main__":
    tf.test.main()
