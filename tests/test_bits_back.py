"""Tests of lossy bits-back coding: round trips with side information, rate accounting, reproducible BBVI and
its checksum guard, and malformed bits-back payloads."""
from unittest import mock

import numpy as np
import tensorflow as tf

from tfc_inference import bits_back, codec, container
from tfc_inference.errors import BitstreamError, CorruptBitstreamError, ModelMismatchError
from tests import helpers


class BitsBackTest(helpers.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.model = helpers.tiny_model("bitsback", seed=3, name="tiny-bb-test")
        helpers.briefly_train(cls.model, steps=150, learning_rate=3e-3)
        cls.model.prepare_coders()
        cls.image = helpers.kodak_crop(64, 128)
        cls.side = np.random.default_rng(7).bytes(2001)  # not a multiple of 4 on purpose

    def test_round_trip_recovers_side_information_for_every_method(self):
        for method in bits_back.BB_METHODS:
            with self.subTest(method=method):
                r = codec.compress(self.model, self.image, method=method, side_info=self.side, iterations=30,
                                   bbvi_iterations=40)
                d = codec.decompress_details(r.data, self.model)
                self.assertEqual(d.header.method, method)
                self.assertIsNone(d.side_info_error)
                self.assertEqual(d.side_info, self.side)
                self.assertAllEqual(d.image, r.reconstruction)
                self.assertAllEqual(d.y_symbols, r.y_symbols)
                self.assertAllEqual(d.z_hat, r.z_hat)
                # z on the 1/4 grid, y on the integers
                self.assertAllEqual(r.z_hat * 4, np.round(r.z_hat * 4))
                info = r.extra
                self.assertEqual(info["net_bits"], 8 * len(r.data) - 8 * len(self.side))
                self.assertNear(info["estimated_net_bits"], info["bits_y"] + info["bits_z"] - info["bits_back"],
                                1e-6)
                self.assertGreater(info["bits_back"], 0)
                self.assertEqual(info["pad_words"], 0)
                # per-step timings of the two optimization stages, where they ran
                self.assertEqual(info["seconds_per_iteration"] > 0, method == "sga+bb")
                self.assertEqual(info["bbvi_seconds_per_iteration"] > 0, method != "bb-amortized")

    def test_cached_stages_agree_with_a_fresh_decoder(self):
        """Encode and decode reuse cached inference stages (traced per image size); a file written by an encoder
        that traced another size first decodes, side information included, with freshly traced stages."""
        self.assertIs(bits_back.get_inference(self.model, seed=4), bits_back.get_inference(self.model, seed=4))
        self.assertIsNot(bits_back.get_inference(self.model, seed=4), bits_back.get_inference(self.model, seed=5))
        options = dict(method="bb-no-sga", side_info=self.side, bbvi_iterations=12, seed=4)
        codec.compress(self.model, helpers.kodak_crop(128, 64), **options)  # another latent shape traced first
        r = codec.compress(self.model, self.image, **options)
        with mock.patch.dict(bits_back._INFERENCES, clear=True):
            d = codec.decompress_details(r.data, self.model)
        self.assertEqual(d.side_info, self.side)
        self.assertAllEqual(d.image, r.reconstruction)

    def test_without_side_information_pads_and_still_round_trips(self):
        r = codec.compress(self.model, self.image, method="bb-amortized")
        self.assertGreater(r.extra["pad_words"], 0)
        d = codec.decompress_details(r.data, self.model)
        self.assertEqual(d.side_info, b"")
        self.assertAllEqual(d.image, r.reconstruction)
        # the net rate then counts z fully: the file cannot be smaller than y alone
        self.assertGreater(r.bits, r.extra["bits_y"])

    def test_reproducible_bbvi_is_deterministic_and_lowers_the_rate(self):
        inf = bits_back.BitsBackInference(self.model, seed=0)
        y_hat = tf.round(self.model.analysis_transform(tf.constant(self.image[None], tf.float32)))
        m1, v1 = inf.reproducible_bbvi(y_hat, 60)
        m2, v2 = bits_back.BitsBackInference(self.model, seed=0).reproducible_bbvi(y_hat, 60)
        self.assertEqual(m1.tobytes() + v1.tobytes(), m2.tobytes() + v2.tobytes())
        m0, v0 = inf.reproducible_bbvi(y_hat, 0)
        self.assertAllEqual(m0, self.model.q_params(y_hat)[0])

        def expected_rate(mean, log_var):  # average over many fixed noise draws: a low-variance NELBO estimate
            return np.mean([float(inf._rate_bits(y_hat, tf.constant(mean), tf.constant(log_var), 1000 + s)[0])
                            for s in range(32)])
        self.assertLess(expected_rate(m1, v1), expected_rate(m0, v0))

    def test_decoder_with_different_q_keeps_image_and_reports_side_information_loss(self):
        r = codec.compress(self.model, self.image, method="bb-no-sga", side_info=self.side, bbvi_iterations=20)
        original = bits_back.BitsBackInference.reproducible_bbvi

        def perturbed(self_, y_hat, iterations):  # what another CPU's floating point might give
            mean, log_var = original(self_, y_hat, iterations)
            return np.nextafter(mean, np.inf).astype(np.float32), log_var

        with mock.patch.object(bits_back.BitsBackInference, "reproducible_bbvi", perturbed):
            d = codec.decompress_details(r.data, self.model)
        self.assertAllEqual(d.image, r.reconstruction)
        self.assertIsNone(d.side_info)
        self.assertIn("side information cannot be recovered", d.side_info_error)

    def test_malformed_bits_back_streams(self):
        r = codec.compress(self.model, self.image, method="bb-amortized", side_info=b"abc")
        header, (meta, payload, _guard) = container.unpack(r.data)  # version 2: [meta, ans words, guard]
        cases = {"short meta": [meta[:3], payload], "odd payload": [meta, payload[:-1]],
                 "one stream": [meta], "empty payload": [meta, b""]}
        for name, streams in cases.items():
            with self.subTest(name):
                with self.assertRaises(BitstreamError):
                    codec.decompress(container.pack(header, streams), self.model)
        with self.assertRaises(CorruptBitstreamError):
            codec.decompress(container.pack(header, [meta[:-9] + b"\xff" * 9, payload]), self.model)
        with self.assertRaisesRegex(CorruptBitstreamError, "unknown bits-back flags"):
            codec.decompress(container.pack(header, [meta[:-1] + b"\x05", payload]), self.model)
        with self.assertRaisesRegex(CorruptBitstreamError, "wrong length"):
            codec.decompress(container.pack(header, [meta + b"\x00", payload]), self.model)

    def test_a_tail_sample_is_redrawn_and_still_decodes(self):
        side = b"redraw me"
        calls = []

        def tail_once(z_k, mean, std):  # the first draw "fell in q's tail", the second did not
            calls.append(1)
            return 1 if len(calls) == 1 else 0

        with mock.patch.object(bits_back, "_tail_elements", tail_once):
            r = codec.compress(self.model, self.image, method="bb-amortized", side_info=side)
        self.assertEqual(len(calls), 2)
        header, (meta, payload, _guard) = container.unpack(r.data)
        self.assertEqual(meta[-2:], bytes([bits_back.FLAG_WHITENED | bits_back.FLAG_NONCE, 1]))
        self.assertEqual(codec.decompress_details(r.data, self.model).side_info, side)
        with self.assertRaisesRegex(CorruptBitstreamError, "nonce"):
            codec.decompress(container.pack(header, [meta[:-1] + b"\x7f", payload]), self.model)
        # a real tail element is counted: 9 standard deviations of q beyond its grid cell
        z_k = np.zeros([1, 1, 1, 2], np.int64)
        mean = np.array([0.0, 0.125 + 9 * 0.01], np.float32).reshape(z_k.shape)
        self.assertEqual(bits_back._tail_elements(z_k, mean, np.full(z_k.shape, 0.01)), 1)

    def test_side_information_is_whitened_and_files_without_the_flag_still_decode(self):
        self.assertEqual(bits_back.whiten(bits_back.whiten(b"some text")), b"some text")
        self.assertNotEqual(bits_back.whiten(b"\0" * 8), b"\0" * 8)
        side = b"x"  # one byte, padded with zero bytes to a word
        r = codec.compress(self.model, self.image, method="bb-amortized", side_info=side)
        header, (meta, payload, _guard) = container.unpack(r.data)
        self.assertEqual(meta[-1], bits_back.FLAG_WHITENED)
        self.assertEqual(codec.decompress_details(r.data, self.model).side_info, side)
        # a file written before the flags byte: unwhitened words on the stack, no flags byte
        with mock.patch.object(bits_back, "whiten", lambda data, nonce=0: bytes(data)), \
                mock.patch.object(bits_back, "FLAG_WHITENED", 0), \
                mock.patch.object(bits_back, "_tail_elements", lambda *args: 0):
            old = codec.compress(self.model, self.image, method="bb-amortized", side_info=side, container_version=1)
        h1, (meta1, payload1) = container.unpack(old.data)
        self.assertEqual(meta1[-1], 0)
        unflagged = container.pack(h1, [meta1[:-1], payload1])
        self.assertEqual(codec.decompress_details(unflagged, self.model).side_info, side)

    def test_needs_a_bits_back_model(self):
        hyperprior = helpers.tiny_model("hyperprior", seed=0, name="tiny-bb-test")
        with self.assertRaises(ValueError):
            codec.compress(hyperprior, self.image, method="sga+bb")
        r = codec.compress(self.model, self.image, method="bb-amortized")
        with self.assertRaises((ModelMismatchError, BitstreamError)):
            codec.decompress(r.data, hyperprior)
        with self.assertRaises(TypeError):
            codec.compress(self.model, self.image, method="sga", side_info=b"x", iterations=2)


class BitsBackCLITest(helpers.TestCase):

    def test_side_info_through_the_command_line(self):
        import contextlib
        import io
        import os
        from tfc_inference import cli, zoo
        model = helpers.tiny_model("bitsback", seed=4)
        folder = os.path.join(helpers.fresh_dir("bbcli"), "tiny-bb-cli")
        zoo.save_checkpoint(model, folder)
        work = helpers.fresh_dir("bbcli_io")
        image, side, tfci, png, side_out = (os.path.join(work, n) for n in
                                            ("in.png", "side.bin", "x.tfci", "out.png", "side.out"))
        with open(image, "wb") as f:
            f.write(helpers.encode_image(helpers.kodak_crop(40, 56)))
        with open(side, "wb") as f:
            f.write(b"hello bits-back " * 40)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(cli.main(["compress", image, "-o", tfci, "--model", folder, "--method", "bb-no-sga",
                                       "--side-info", side, "--bbvi-iterations", "10"]), 0)
            self.assertEqual(cli.main(["decompress", tfci, "-o", png, "--model", folder,
                                       "--side-info-out", side_out]), 0)
        self.assertIn("side information inside", out.getvalue())
        with open(side, "rb") as a, open(side_out, "rb") as b:
            self.assertEqual(a.read(), b.read())
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(cli.main(["compress", image, "-o", tfci + ".2", "--model", folder, "--side-info",
                                       side]), 1)
        self.assertIn("bits-back method", err.getvalue())


class FreshProcessDecodeTest(helpers.TestCase):

    def test_side_information_lengths_recovered_in_a_fresh_process(self):
        import os
        import subprocess
        import sys
        from tfc_inference import zoo
        model = helpers.tiny_model("bitsback", seed=6)
        helpers.briefly_train(model, steps=60, learning_rate=3e-3)
        folder = os.path.join(helpers.fresh_dir("bbfresh"), "tiny-bb-fresh")
        zoo.save_checkpoint(model, folder)
        model = zoo.load_model(folder)
        work = helpers.fresh_dir("bbfresh_io")
        rng = np.random.default_rng(11)
        cases = []
        # every length once, spread over two images (each compress call traces its own BBVI functions)
        for i, (top, left, lengths) in enumerate([(0, 0, (0, 17, 10_000)), (300, 500, (1, 1000))]):
            image = helpers.kodak_crop(48, 80, top, left)
            for n in lengths:
                side = rng.bytes(n)
                r = codec.compress(model, image, method="bb-no-sga", side_info=side, bbvi_iterations=15)
                path = os.path.join(work, f"img{i}_{n}.tfci")
                with open(path, "wb") as f:
                    f.write(r.data)
                with open(path + ".side", "wb") as f:
                    f.write(side)
                cases.append(path)
        script = ("import sys, tfc_inference as t\n"
                  "for p in sys.argv[2:]:\n"
                  "    d = t.decompress_details(open(p, 'rb').read(), t.load_model(sys.argv[1]))\n"
                  "    assert d.side_info is not None, d.side_info_error\n"
                  "    open(p + '.out', 'wb').write(d.side_info)\n")
        # a fatal signal in the decoder prints its Python stack (an intermittent abort was once seen here)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONFAULTHANDLER="1")
        done = subprocess.run([sys.executable, "-c", script, folder] + cases, env=env, capture_output=True,
                              text=True, timeout=600)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        for path in cases:
            with open(path + ".side", "rb") as a, open(path + ".out", "rb") as b:
                self.assertEqual(a.read(), b.read(), path)


class ReproducibleGraphTest(helpers.TestCase):
    """The BBVI graphs are traced with unknown spatial sizes, so Grappler never turns their gradient sums into
    order-dependent accumulations.  With exact shapes it did for a 1200x1200 image (latents 76x76, the shipped
    model): the decoder's q(z) then differed from the encoder's in the last bits and side information was lost."""

    def test_no_order_dependent_sums_in_the_bits_back_stages(self):
        from tfc_inference import optim, zoo
        model = zoo.load_model("bitsback-mse-0.005", prepare_coders=False)
        inf = bits_back.BitsBackInference(model)
        y = tf.zeros([1, 76, 76, model.config.latent_channels])
        mean, log_var = model.q_params(y)
        ms, vs = optim.init_state([mean, log_var])
        stage2_args = (y, tuple([mean, log_var] + ms + vs), tf.constant(3, tf.int64))
        # the check sees the rewrite: the same BBVI traced for this exact shape gets it
        self.assertGreater(helpers.order_dependent_sums(tf.function(inf._bbvi_chunk), *stage2_args), 0)
        self.assertEqual(helpers.order_dependent_sums(inf._stage2, *stage2_args), 0)
        x = tf.zeros([1, 1216, 1216, 3])
        ms, vs = optim.init_state([y, mean, log_var])
        stage1_args = (x, tuple([y, mean, log_var] + ms + vs), tf.constant(0, tf.int64), tf.constant(3, tf.int64),
                       tf.constant([1200, 1200], tf.int32))
        self.assertEqual(helpers.order_dependent_sums(inf._stage1, *stage1_args), 0)
