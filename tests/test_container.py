"""Tests of the .tfci container: layout, round trip, and that every kind of damage raises a BitstreamError."""
import struct
import tracemalloc
import zlib

import numpy as np

from tests import helpers
from tfc_inference import container
from tfc_inference.errors import (BitstreamError, CorruptBitstreamError, NotATFCIFileError, TFCInferenceError,
                                  TruncatedBitstreamError, UnsupportedVersionError)

FP = bytes(range(10, 18))


def _header(**kw):
    d = dict(method="amortized", model_name="tiny", fingerprint=FP, height=64, width=96)
    d.update(kw)
    return container.Header(**d)


class LayoutTest(helpers.TestCase):
    """The bytes ``pack`` writes are the documented layout (format version 2 by default, 1 on request)."""

    def test_pack_matches_documented_layout(self):
        streams = [b"zz", b"y" * 200]
        data = container.pack(_header(method="map", model_name="abc", height=300, width=5), streams)
        expected = helpers.craft_container(streams, method_id=helpers.METHOD_NAMES.index("map"), name=b"abc",
                                           fingerprint=FP, height=300, width=5, version=2)
        self.assertEqual(data, expected)
        v1 = container.pack(_header(method="map", model_name="abc", height=300, width=5, version=1), streams)
        self.assertEqual(v1, helpers.craft_container(streams, method_id=helpers.METHOD_NAMES.index("map"),
                                                     name=b"abc", fingerprint=FP, height=300, width=5))
        self.assertEqual(container.unpack(v1)[0].version, 1)
        # a few fields checked by hand as well
        self.assertEqual(data[:4], b"TFCI")
        self.assertEqual(data[4], 2)
        self.assertEqual(data[5], 2)
        self.assertEqual(data[6], 3)
        self.assertEqual(data[7:10], b"abc")
        self.assertEqual(data[10:18], FP)
        self.assertEqual(data[18:20], bytes([0xAC, 0x02]))  # 300 in LEB128
        self.assertEqual(data[20], 5)
        self.assertEqual(struct.unpack(">I", data[-4:])[0], zlib.crc32(data[:-4]))

    def test_methods_table_is_stable(self):
        # Method ids are written into files: reordering the table would silently change old files' meaning.
        self.assertEqual(tuple(container.METHODS), helpers.METHOD_NAMES)

    def test_overhead_for_default_name_is_small(self):
        # "unnamed" is what codec writes for a model without zoo name; Kodak-size image, two ~kB streams.
        streams = [b"\x00" * 300, b"\x00" * 3000]
        data = container.pack(_header(model_name="unnamed", height=512, width=768), streams)
        overhead = len(data) - sum(map(len, streams))
        # 4 magic + 3 + 7 name + 8 fingerprint + 2 + 2 sizes + 1 count + 2 + 2 lengths + 4 CRC
        self.assertEqual(overhead, 35)
        self.assertLess(overhead, 64)
        # the longest allowed name still stays near the documented ~45 bytes + name
        long_name = "m" * container.MAX_NAME
        data = container.pack(_header(model_name=long_name, height=512, width=768), streams)
        self.assertEqual(len(data) - sum(map(len, streams)), 35 - 7 + 64)


class RoundTripTest(helpers.TestCase):

    def test_round_trip(self):
        cases = [
            (_header(), [b"a", b"bc"]),
            (_header(method="bb-amortized", model_name="ü-model", height=1, width=1), [b""]),
            (_header(method="sga", height=32768, width=512), [b"\x00" * 20000, b"", b"\xff" * 129]),
            (_header(method="sga", version=1), [b"z", b"y"]),
            (_header(model_name="x" * 64), [bytes([i]) * i for i in range(8)]),
        ]
        for header, streams in cases:
            data = container.pack(header, streams)
            got_header, got_streams = container.unpack(data)
            self.assertEqual(got_header, header)
            self.assertEqual(got_streams, streams)
            # bytearray and memoryview are accepted as well
            self.assertEqual(container.unpack(bytearray(data))[1], streams)
            self.assertEqual(container.unpack(memoryview(data))[1], streams)

    def test_real_file_round_trip(self):
        data = helpers.real_tfci_file()
        header, streams = container.unpack(data)
        self.assertEqual((header.height, header.width, header.method), (64, 96, "amortized"))
        self.assertEqual(header.model_name, "tiny-hyperprior-untrained-0")
        self.assertLen(streams, 3)  # z, y and (version 2) the guard
        self.assertEqual(header.version, 2)
        self.assertEqual(container.pack(header, streams), data)

    def test_pack_rejects_invalid_headers(self):
        with self.assertRaises(ValueError):
            container.pack(_header(model_name=""), [b"x"])
        with self.assertRaises(ValueError):
            container.pack(_header(model_name="x" * 65), [b"x"])
        with self.assertRaises(ValueError):
            container.pack(_header(model_name="é" * 33), [b"x"])  # 66 bytes in UTF-8
        with self.assertRaises(ValueError):
            container.pack(_header(fingerprint=b"1234567"), [b"x"])
        with self.assertRaises(ValueError):
            container.pack(_header(), [])
        with self.assertRaises(ValueError):
            container.pack(_header(), [b""] * 9)
        with self.assertRaises(ValueError):
            container.pack(_header(method="no-such-method"), [b"x"])
        for h, w in [(0, 5), (5, 0), (32769, 1), (1, 40000), (8192, 8192)]:
            with self.assertRaises(TFCInferenceError, msg=f"{h}x{w}"):
                container.pack(_header(height=h, width=w), [b"x"])


class DamageTest(helpers.TestCase):

    def assertBitstreamError(self, data, *types):
        types = types or (BitstreamError,)
        try:
            container.unpack(data)
        except BitstreamError as e:
            self.assertIsInstance(e, types, msg=f"{type(e).__name__}: {e}")
            return e
        except Exception as e:  # noqa: BLE001
            self.fail(f"{type(e).__name__} instead of a BitstreamError: {e}")
        self.fail(f"no error for {data!r}")

    def test_every_truncation_of_a_real_file(self):
        data = helpers.real_tfci_file()
        self.assertGreater(len(data), 40)
        for n in range(len(data)):
            self.assertBitstreamError(data[:n], TruncatedBitstreamError, CorruptBitstreamError)
        # the short prefixes of the magic number are truncations, not "not a TFCI file"
        for n in range(5):
            self.assertBitstreamError(data[:n], TruncatedBitstreamError)

    def test_every_bit_flip_of_a_real_file(self):
        data = helpers.real_tfci_file()
        for i in range(len(data)):
            for bit in range(8):
                damaged = bytearray(data)
                damaged[i] ^= 1 << bit
                damaged = bytes(damaged)
                if i < 4:
                    self.assertBitstreamError(damaged, NotATFCIFileError)
                elif i == 4:
                    self.assertBitstreamError(damaged, UnsupportedVersionError)
                else:
                    self.assertBitstreamError(damaged, CorruptBitstreamError, TruncatedBitstreamError)

    def test_random_bytes_are_not_a_tfci_file(self):
        rng = np.random.default_rng(1)
        for n in (4, 5, 16, 100, 5000):
            for _ in range(20):
                data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
                if data[:4] == b"TFCI":
                    continue
                self.assertBitstreamError(data, NotATFCIFileError)
        self.assertBitstreamError(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, NotATFCIFileError)

    def test_wrong_magic(self):
        data = helpers.craft_container([b"ab"], magic=b"TFCJ")
        self.assertBitstreamError(data, NotATFCIFileError)
        self.assertBitstreamError(b"tfci" + data[4:], NotATFCIFileError)
        self.assertBitstreamError(b"X", NotATFCIFileError)

    def test_non_bytes_input(self):
        for bad in ("TFCI...", None, 12, [84, 70, 67, 73]):
            self.assertBitstreamError(bad, NotATFCIFileError)

    def test_other_version(self):
        for version in (0, 3, 255):
            data = helpers.craft_container([b"ab"], version=version)
            self.assertBitstreamError(data, UnsupportedVersionError)
        # a newer version is reported even if the rest of the file is in a layout we cannot parse
        self.assertBitstreamError(b"TFCI\x03\x00\x00", UnsupportedVersionError)

    def test_absurd_shapes_with_valid_crc(self):
        for h, w in [(30000, 30000), (32768, 32768), (1 << 20, 1), (1, 1 << 30), (0, 10), (10, 0), (6000, 6000)]:
            data = helpers.craft_container([b"zz", b"yy"], height=h, width=w)
            tracemalloc.start()
            try:
                self.assertBitstreamError(data, CorruptBitstreamError)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            self.assertLess(peak, 1 << 20, msg=f"{h}x{w}")

    def test_largest_allowed_shape(self):
        header, _ = container.unpack(helpers.craft_container([b"zz"], height=32768, width=512))
        self.assertEqual((header.height, header.width), (32768, 512))
        self.assertEqual(32768 * 512, container.MAX_PIXELS)
        self.assertBitstreamError(helpers.craft_container([b"zz"], height=32768, width=513), CorruptBitstreamError)

    def test_malformed_varint_with_valid_crc(self):
        # six continuation bytes: not a valid 35-bit varint
        data = helpers.craft_container([b"zz"], height_bytes=b"\xff" * 6 + b"\x01")
        self.assertBitstreamError(data, CorruptBitstreamError)

    def test_unknown_method_id_with_valid_crc(self):
        for method_id in (len(helpers.METHOD_NAMES), 200, 255):
            data = helpers.craft_container([b"zz", b"yy"], method_id=method_id)
            self.assertBitstreamError(data, UnsupportedVersionError)

    def test_bad_counts_with_valid_crc(self):
        self.assertBitstreamError(helpers.craft_container([], count=0), CorruptBitstreamError)
        self.assertBitstreamError(helpers.craft_container([b"a"] * 9), CorruptBitstreamError)
        self.assertBitstreamError(helpers.craft_container([b"a"], name=b"", name_len=0), CorruptBitstreamError)
        self.assertBitstreamError(helpers.craft_container([b"a"], name=b"n" * 65), CorruptBitstreamError)
        self.assertBitstreamError(helpers.craft_container([b"a"], name=b"\xff\xfe"), CorruptBitstreamError)

    def test_declared_stream_longer_than_file(self):
        data = helpers.craft_container([b"abc"])
        # rewrite the length of the one stream (3) to 4 and fix the CRC: the file is now too short
        i = data.rindex(bytes([1, 3]) + b"abc")
        body = data[:i] + bytes([1, 4]) + data[i + 2:-4]
        self.assertBitstreamError(body + struct.pack(">I", zlib.crc32(body)), TruncatedBitstreamError)

    def test_trailing_bytes(self):
        data = helpers.real_tfci_file()
        for extra in (b"\x00", b"garbage", data[-4:]):
            self.assertBitstreamError(data + extra, CorruptBitstreamError)
        # also when the CRC is valid for the longer file
        self.assertBitstreamError(helpers.craft_container([b"ab"], trailing=b"xyz"), CorruptBitstreamError)

    def test_bad_crc(self):
        self.assertBitstreamError(helpers.craft_container([b"ab", b"cd"], valid_crc=False), CorruptBitstreamError)
