"""Tests of compress / decompress: exact round trips, rates, model checks and damaged files."""
import dataclasses
import os
from unittest import mock

import numpy as np

from tests import helpers
from tfc_inference import codec, container, zoo
from tfc_inference.errors import (BitstreamError, CorruptBitstreamError, ImageError, ModelError, ModelMismatchError,
                                  ModelNotFoundError, NotATFCIFileError, TruncatedBitstreamError,
                                  UnsupportedImageModeError)


def _untrained():
    """The untrained tiny model of the container tests, loaded from its zoo checkpoint (name written in files)."""
    return zoo.load_model(helpers.checkpoint())


class RoundTripTest(helpers.TestCase):

    def _check_round_trip(self, model, image, decode_model=None):
        h, w = image.shape[:2]
        result = codec.compress(model, image)
        details = codec.decompress_details(result.data, model if decode_model is None else decode_model)
        self.assertEqual(result.method, "amortized")
        self.assertEqual((result.height, result.width), (h, w))
        self.assertEqual(details.image.dtype, np.uint8)
        self.assertEqual(details.image.shape, (h, w, 3))
        self.assertAllEqual(details.image, result.reconstruction)
        self.assertAllEqual(details.y_symbols, result.y_symbols)
        self.assertAllEqual(details.z_hat, result.z_hat)
        hz, wz = -(-h // 64), -(-w // 64)
        self.assertEqual(result.z_hat.shape, (1, hz, wz, 8))
        self.assertEqual(result.y_symbols.shape, (1, 4 * hz, 4 * wz, 8))
        self.assertEqual(details.header, container.Header("amortized", model.zoo_name, model.fingerprint(), h, w))
        # measurements, recomputed from the decoded image and the file
        mse = np.mean((details.image.astype(np.float64) - image.astype(np.float64)) ** 2)
        self.assertAllClose(result.mse, mse, rtol=1e-9)
        self.assertAllClose(result.psnr, helpers.psnr(details.image, image), rtol=1e-9)
        self.assertEqual(result.bits, 8 * len(result.data))
        _, streams = container.unpack(result.data)
        self.assertEqual(result.payload_bits, 8 * (len(streams[0]) + len(streams[1])))  # z, y (not the guard)
        self.assertLen(streams, 3)
        self.assertTrue(details.exact)
        self.assertAllClose(result.bpp, 8 * len(result.data) / (h * w))
        self.assertAllClose(result.rd_loss, result.bpp + model.config.lmbda * mse)
        self.assertEqual(codec.decompress(result.data, model).shape, (h, w, 3))
        return result, details

    def test_round_trip_sizes(self):
        model = _untrained()
        for h, w in [(64, 96), (1, 1), (17, 33), (65, 130), (513, 769)]:
            with self.subTest(size=(h, w)):
                self._check_round_trip(model, helpers.kodak_crop(h, w, 0, 0))

    def test_round_trip_trained_models(self):
        for kind in ("hyperprior", "bitsback"):
            model = helpers.shared_model(kind, trained=True)
            self._check_round_trip(model, helpers.kodak_crop(64, 96))

    def test_reconstruction_is_the_synthesis_of_the_decoded_latents(self):
        model = _untrained()
        image = helpers.kodak_crop(17, 70)
        details = codec.decompress_details(codec.compress(model, image).data, model)
        mu = model.hyper_synthesis_transform(details.z_hat.astype(np.float32)).numpy()[..., :8]
        y_hat = (details.y_symbols + mu).astype(np.float32)
        x_hat = np.round(np.clip(model.synthesize(y_hat).numpy(), 0, 255)).astype(np.uint8)[0, :17, :70]
        self.assertAllEqual(details.image, x_hat)

    def test_padding_is_edge_replication(self):
        model = _untrained()
        image = helpers.kodak_crop(17, 33)
        padded = np.pad(image, [(0, 47), (0, 31), (0, 0)], mode="edge")
        a, b = codec.compress(model, image), codec.compress(model, padded)
        self.assertAllEqual(a.y_symbols, b.y_symbols)
        self.assertAllEqual(a.z_hat, b.z_hat)
        self.assertAllEqual(a.reconstruction, b.reconstruction[:17, :33])

    def test_decompress_finds_the_model_by_name(self):
        model = _untrained()
        result = codec.compress(model, helpers.kodak_crop(20, 30))
        folder = os.path.dirname(helpers.checkpoint())
        with mock.patch.dict(os.environ, {"TFC_INFERENCE_CHECKPOINTS": folder}):
            self.assertAllEqual(codec.decompress(result.data), result.reconstruction)
        self.assertEqual(codec.read_header(result.data).model_name, model.zoo_name)

    def test_model_given_by_path(self):
        path = helpers.checkpoint()
        result = codec.compress(path, helpers.kodak_crop(20, 30))
        self.assertAllEqual(codec.decompress(result.data, path), result.reconstruction)

    def test_deterministic(self):
        model = _untrained()
        image = helpers.kodak_crop(65, 130)
        first = codec.compress(model, image).data
        self.assertEqual(codec.compress(model, image.copy()).data, first)
        self.assertEqual(codec.compress(model, image).data, first)


class InputFormsTest(helpers.TestCase):

    def test_grayscale(self):
        model = _untrained()
        gray = helpers.kodak_crop(40, 50)[..., 1].copy()
        rgb = np.repeat(gray[..., None], 3, axis=-1)
        expected = codec.compress(model, rgb).data
        self.assertEqual(codec.compress(model, gray).data, expected)
        self.assertEqual(codec.compress(model, helpers.encode_image(gray, mode="L")).data, expected)
        out = codec.decompress(expected, model)
        self.assertEqual(out.shape, (40, 50, 3))

    def test_rgba(self):
        model = _untrained()
        rgb = helpers.kodak_crop(40, 50)
        rgba = np.concatenate([rgb, np.full((40, 50, 1), 255, np.uint8)], axis=-1)
        expected = codec.compress(model, rgb).data
        self.assertEqual(codec.compress(model, rgba).data, expected)
        self.assertEqual(codec.compress(model, helpers.encode_image(rgba, mode="RGBA")).data, expected)
        rgba[10, 10, 3] = 128
        with self.assertRaises(UnsupportedImageModeError):
            codec.compress(model, rgba)
        with self.assertRaises(UnsupportedImageModeError):
            codec.compress(model, helpers.encode_image(rgba, mode="RGBA"))

    def test_path_input(self):
        model = _untrained()
        rgb = helpers.kodak_crop(40, 50)
        path = os.path.join(helpers.fresh_dir("codec"), "in.png")
        with open(path, "wb") as f:
            f.write(helpers.encode_image(rgb))
        self.assertEqual(codec.compress(model, path).data, codec.compress(model, rgb).data)

    def test_bad_inputs(self):
        model = _untrained()
        with self.assertRaises(ImageError):
            codec.compress(model, np.zeros((8, 8, 3), np.float32))
        with self.assertRaises(ImageError):
            codec.compress(model, b"not an image")
        with self.assertRaises(ImageError):
            codec.compress(model, os.path.join(helpers.fresh_dir("codec"), "missing.png"))
        with self.assertRaises(ValueError):
            codec.compress(model, helpers.kodak_crop(8, 8), method="no-such-method")
        with self.assertRaises(TypeError):
            codec.compress(model, helpers.kodak_crop(8, 8), method="amortized", iterations=3)
        with self.assertRaises(ModelError):
            codec.compress(object(), helpers.kodak_crop(8, 8))


def _expected_overhead(result):
    """Header + CRC bytes of the documented layout, for this file's name, size and stream lengths, plus the
    version-2 guard stream (everything but the z and y streams)."""
    header, streams = container.unpack(result.data)
    return (4 + 3 + len(header.model_name.encode()) + 8 + len(helpers.leb128(header.height))
            + len(helpers.leb128(header.width)) + 1 + sum(len(helpers.leb128(len(s))) for s in streams) + 4
            + sum(len(s) for s in streams[2:]))


class RateTest(helpers.TestCase):

    def test_payload_matches_estimate_on_kodak(self):
        model = helpers.shared_model("hyperprior", trained=True)
        image = helpers.kodak()
        result = codec.compress(model, image)
        self.assertGreater(result.payload_bits, 10000)
        self.assertLess(abs(result.coding_overhead), 0.01)
        self.assertAllClose(result.coding_overhead, result.payload_bits / result.estimated_bits - 1)
        self.assertAllClose(result.estimated_bpp, result.estimated_bits / (512 * 768))
        self.assertAllClose(result.file_overhead, 8 * len(result.data) / result.estimated_bits - 1)
        self.assertEqual(len(result.data) - result.payload_bits // 8, _expected_overhead(result))
        self.assertAllEqual(codec.decompress(result.data, model), result.reconstruction)

    def test_container_overhead_for_the_default_name(self):
        model = helpers.shared_model("hyperprior", trained=True)
        saved = model.zoo_name
        try:
            model.zoo_name = None
            result = codec.compress(model, helpers.kodak_crop(512, 512, 0, 0))
        finally:
            model.zoo_name = saved
        header = codec.read_header(result.data)
        self.assertEqual(header.model_name, "unnamed")
        overhead = len(result.data) - result.payload_bits // 8
        guard = len(container.unpack(result.data)[1][2])
        self.assertLess(overhead - guard, 64)
        self.assertEqual(guard, result.extra["guard_bytes"])
        self.assertEqual(overhead, _expected_overhead(result))


class ModelChecksTest(helpers.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _untrained()
        cls.result = codec.compress(cls.model, helpers.kodak_crop(30, 40))

    def test_same_name_other_weights(self):
        impostor = helpers.tiny_model("hyperprior", seed=7, name=self.model.zoo_name)
        self.assertNotEqual(impostor.fingerprint(), self.model.fingerprint())
        with self.assertRaises(ModelMismatchError) as cm:
            codec.decompress(self.result.data, impostor)
        self.assertIsInstance(cm.exception, BitstreamError)
        self.assertIsInstance(cm.exception, ModelError)

    def test_other_name(self):
        other = helpers.shared_model("hyperprior", trained=True)
        with self.assertRaises(ModelMismatchError):
            codec.decompress(self.result.data, other)
        with self.assertRaises(ModelMismatchError):
            codec.decompress(self.result.data, helpers.checkpoint("hyperprior", trained=True))
        # same weights, other name: the name is checked too
        renamed = helpers.tiny_model("hyperprior", seed=0, name="a-copy")
        self.assertEqual(renamed.fingerprint(), self.model.fingerprint())
        with self.assertRaises(ModelMismatchError):
            codec.decompress(self.result.data, renamed)

    def test_unknown_model_name(self):
        header, streams = container.unpack(self.result.data)
        data = container.pack(dataclasses.replace(header, model_name="no-such-model-xyz"), streams)
        folder = os.path.dirname(helpers.checkpoint())
        with mock.patch.dict(os.environ, {"TFC_INFERENCE_CHECKPOINTS": folder}):
            with self.assertRaises(ModelNotFoundError) as cm:
                codec.decompress(data)
        self.assertIn("no-such-model-xyz", str(cm.exception))
        self.assertIn(self.model.zoo_name, str(cm.exception))  # the known models are listed


class DamagedFileTest(helpers.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _untrained()
        cls.data = codec.compress(cls.model, helpers.kodak_crop(1, 1)).data

    def _expect_bitstream_error(self, data, *types):
        try:
            codec.decompress(data, self.model)
        except BitstreamError as e:
            if types:
                self.assertIsInstance(e, types, msg=f"{type(e).__name__}: {e}")
            return
        except Exception as e:  # noqa: BLE001
            self.fail(f"{type(e).__name__} instead of a BitstreamError: {e}")
        self.fail("damaged file decoded without error")

    def test_truncations(self):
        for n in range(len(self.data)):
            self._expect_bitstream_error(self.data[:n], TruncatedBitstreamError, CorruptBitstreamError)

    def test_bit_flips(self):
        for i in range(len(self.data)):
            for bit in range(8):
                damaged = bytearray(self.data)
                damaged[i] ^= 1 << bit
                self._expect_bitstream_error(bytes(damaged))

    def test_not_a_file(self):
        self._expect_bitstream_error(helpers.encode_image(helpers.kodak_crop(4, 4)), NotATFCIFileError)
        self._expect_bitstream_error(b"", TruncatedBitstreamError)

    def test_valid_crc_but_inconsistent(self):
        header, streams = container.unpack(self.data)
        self._expect_bitstream_error(container.pack(header, streams + [b""]), CorruptBitstreamError)
        self._expect_bitstream_error(container.pack(header, streams[:2]), CorruptBitstreamError)
        self._expect_bitstream_error(container.pack(header, streams[:1]), CorruptBitstreamError)
        self._expect_bitstream_error(container.pack(dataclasses.replace(header, version=1), streams),
                                     CorruptBitstreamError)
        # a bits-back method in the header of a file written by (and decoded with) a non-bits-back model
        for method in ("sga+bb", "bb-no-sga", "bb-amortized"):
            self._expect_bitstream_error(container.pack(dataclasses.replace(header, method=method), streams))

    def test_garbage_streams_with_valid_crc(self):
        # The range decoder cannot always tell garbage from data: either a BitstreamError or an image of the
        # announced size, never another exception.
        header, streams = container.unpack(self.data)
        rng = np.random.default_rng(0)
        garbage = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 7, 300)]
        for z_stream, y_stream in [(streams[0], g) for g in garbage] + [(g, streams[1]) for g in garbage]:
            data = container.pack(header, [z_stream, y_stream, streams[2]])
            try:
                image = codec.decompress(data, self.model)
            except BitstreamError:
                continue
            self.assertEqual(image.shape, (1, 1, 3))
            self.assertEqual(image.dtype, np.uint8)
