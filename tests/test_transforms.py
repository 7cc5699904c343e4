"""Tests of the four transforms: layers applied in order, any input size, no Keras functional graph."""
import numpy as np
import tensorflow as tf

from tfc_inference import transforms
from tests import helpers


def _apply_layers(transform, x):
    for layer in transform.layers:
        x = layer(x)
    return x


class LayerChainTest(helpers.TestCase):

    def test_output_is_the_layers_in_order_for_any_input_size(self):
        g_a = transforms.AnalysisTransform(8, 6)
        g_s = transforms.SynthesisTransform(8)
        rng = np.random.default_rng(0)
        for h, w in ((64, 64), (48, 80), (32, 112)):
            x = tf.constant(rng.uniform(0, 255, (1, h, w, 3)), tf.float32)
            y = g_a(x)
            self.assertEqual(y.shape, (1, h // 16, w // 16, 6))
            self.assertAllEqual(y, _apply_layers(g_a, x))
            self.assertAllEqual(g_s(y), _apply_layers(g_s, y))
            self.assertEqual(g_s(y).shape, (1, h, w, 3))
        # shapes vary per call, yet no symbolic graph network is built (the cost this class avoids)
        self.assertFalse(g_a._graph_initialized)
        self.assertFalse(g_s._graph_initialized)

    def test_checkpoint_keys_are_those_of_a_sequential(self):
        """Shipped checkpoints name variables by the Sequential's layer order (layer_with_weights-N)."""
        g_h = transforms.HyperSynthesisTransform(8, 6)
        g_h(tf.zeros([1, 2, 2, 8]))
        folder = helpers.fresh_dir("chain_ckpt")
        path = tf.train.Checkpoint(t=g_h).save(folder + "/c")
        keys = {name.split("/")[1] for name, _ in tf.train.list_variables(path) if name.startswith("t/")}
        self.assertEqual(keys, {"layer_with_weights-0", "layer_with_weights-1", "layer_with_weights-2"})

    def test_traced_once_per_shape_family(self):
        g_a = transforms.AnalysisTransform(8, 6)
        g_a(tf.zeros([1, 16, 16, 3]))  # variables created eagerly (a first call creating them traces twice)
        fn = tf.function(g_a, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        for h, w in ((32, 48), (64, 16), (16, 96)):
            x = tf.random.uniform([1, h, w, 3], 0, 255, seed=1)
            self.assertAllClose(fn(x), g_a(x), atol=1e-4)
        self.assertEqual(fn.experimental_get_tracing_count(), 1)


if __name__ == "__main__":
    tf.test.main()
