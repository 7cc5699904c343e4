"""A short, deterministic decoder fuzz: ``decompress`` on truncated, bit-flipped, random and tampered files.

Every case must end in a documented exception (``BitstreamError`` or ``ModelError`` subclasses) or in an image of
the shape the file declares, within :data:`CASE_SECONDS`.  Tampered files re-packed with a *valid* CRC reach the
range decoders; for version 2 hyperprior files (guard stream) they must never decode silently to a different
image.  ``examples/fuzz_decoder.py --count 10000`` is the long version (worker process, hang and crash
detection, memory).  Container-only damage is tested in test_container.py (every truncation and bit flip of a
file, absurd shapes with memory bounds), a 1x1 file's truncations and flips in test_codec.DamagedFileTest.
"""
import faulthandler
import os
import struct
import time
import warnings
import zlib
from unittest import mock

import numpy as np

from tests import helpers
from tfc_inference import codec, container, zoo
from tfc_inference.errors import (BitstreamError, CorruptBitstreamError, EntropyModelMismatchError,
                                  InexactDecodeWarning, ModelError, ModelMismatchError, ModelNotFoundError,
                                  NotATFCIFileError, TruncatedBitstreamError, UnsupportedVersionError)

#: Upper bound on the seconds one case may take (the cases decode 64x96 images with an 8-channel model).
CASE_SECONDS = 10.0
#: A hard watchdog: a case that hangs for this long dumps the stacks and ends the test process.
WATCHDOG_SECONDS = 120


def _pack(fields, streams, count=None):
    """A container with a valid CRC from header fields that may be invalid (built from the documented layout)."""
    name = fields["name"]
    body = (b"TFCI" + bytes([fields["version"], fields["method_id"], len(name)]) + name + fields["fingerprint"]
            + helpers.leb128(fields["height"]) + helpers.leb128(fields["width"])
            + bytes([len(streams) if count is None else count])
            + b"".join(helpers.leb128(len(s)) for s in streams) + b"".join(streams))
    return body + struct.pack(">I", zlib.crc32(body))


def _fields(data):
    header, streams = container.unpack(data)
    return dict(version=header.version, method_id=container.METHODS.index(header.method),
                name=header.model_name.encode(), fingerprint=header.fingerprint, height=header.height,
                width=header.width), list(streams)


def _flip(rng, data, n):
    out = bytearray(data)
    for _ in range(n):
        out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    return bytes(out)


class DecoderFuzzTest(helpers.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # model b: another model of the same architecture (the trained one other test modules use, cached)
        cls.paths = {"a": helpers.checkpoint(), "b": helpers.checkpoint("hyperprior", trained=True)}
        cls.models = {k: zoo.load_model(p) for k, p in cls.paths.items()}
        image = helpers.kodak_crop(64, 96)
        cls.results = {"v2": codec.compress(cls.models["a"], image),
                       "v1": codec.compress(cls.models["a"], image, container_version=1),
                       "other": codec.compress(cls.models["b"], image)}
        cls.files = {k: r.data for k, r in cls.results.items()}
        cls.reference_crcs = {zlib.crc32(r.reconstruction.tobytes()) for r in cls.results.values()}
        cls.env = {"TFC_INFERENCE_CHECKPOINTS": os.pathsep.join(os.path.dirname(p) for p in cls.paths.values())}
        cls.slowest = 0.0

    def setUp(self):
        super().setUp()
        patcher = mock.patch.dict(os.environ, self.env)
        patcher.start()
        self.addCleanup(patcher.stop)
        faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
        self.addCleanup(faulthandler.cancel_dump_traceback_later)

    def decode(self, data, model=None, note=""):
        """Decodes one case; returns its outcome class, failing the test on anything undocumented."""
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                image = codec.decompress(data, model)
            except (BitstreamError, ModelError) as e:
                outcome = f"error:{type(e).__name__}"
                self.assertTrue(str(e), msg=f"{note}: empty message")
            except Exception as e:  # noqa: BLE001
                self.fail(f"{note}: {type(e).__name__} is not a documented tfc_inference error: {e}")
            else:
                header = container.unpack(data)[0]
                self.assertEqual(image.dtype, np.uint8, msg=note)
                self.assertEqual(image.shape, (header.height, header.width, 3), msg=note)
                if zlib.crc32(image.tobytes()) in self.reference_crcs:
                    outcome = "image:exact"
                elif any(issubclass(w.category, InexactDecodeWarning) for w in caught):
                    outcome = "image:inexact-warned"
                else:
                    outcome = "image:other"
        seconds = time.perf_counter() - t0
        self.assertLess(seconds, CASE_SECONDS, msg=f"{note} took {seconds:.1f} s")
        type(self).slowest = max(self.slowest, seconds)
        return outcome

    def test_untouched_files_decode_exactly(self):
        for key, data in self.files.items():
            self.assertEqual(self.decode(data, note=key), "image:exact")

    def test_every_prefix_of_every_file(self):
        for key, data in self.files.items():
            for n in range(len(data)):
                outcome = self.decode(data[:n], note=f"{key}[:{n}]")
                self.assertIn(outcome, ("error:TruncatedBitstreamError", "error:CorruptBitstreamError"),
                              msg=f"{key}[:{n}]")

    def test_random_bit_flips(self):
        rng = np.random.default_rng(1)
        for i in range(400):
            key = sorted(self.files)[i % 3]
            flips = 1 if i < 200 else int(rng.integers(2, 17))
            outcome = self.decode(_flip(rng, self.files[key], flips), note=f"{key} {flips} flips")
            # the container's CRC-32 detects every such change (bursts up to 32 bits, any 3 bits, ...)
            self.assertTrue(outcome.startswith("error:"), msg=f"{key} {flips} flips: {outcome}")

    def test_random_bytes(self):
        rng = np.random.default_rng(2)
        for i in range(150):
            data = rng.bytes(int(rng.integers(0, 200)))
            if i % 3 == 0:
                data = b"TFCI" + bytes([1 + i % 2]) + data
            outcome = self.decode(data, note=f"random {i}")
            self.assertTrue(outcome.startswith("error:"), msg=outcome)

    def test_header_fields_with_valid_crc(self):
        fields, streams = _fields(self.files["v2"])
        outcomes = {}

        def case(note, **changes):
            outcomes[note] = self.decode(_pack(dict(fields, **changes), streams), note=note)
            return outcomes[note]

        for version in (0, 3, 4, 255):
            self.assertEqual(case(f"version {version}", version=version), "error:UnsupportedVersionError")
        self.assertEqual(case("version 1", version=1), "error:CorruptBitstreamError")  # 3 streams in a v1 file
        for method_id in range(len(container.METHODS) + 3):
            outcome = case(f"method {method_id}", method_id=method_id)
            if method_id >= len(container.METHODS):
                self.assertEqual(outcome, "error:UnsupportedVersionError")
            elif container.METHODS[method_id] in codec.BB_METHODS:
                self.assertTrue(outcome.startswith("error:"), msg=outcome)
            else:  # the method only says how the encoder inferred the latents: the same image
                self.assertEqual(outcome, "image:exact")
        for name in (b"no-such-model", b"../etc/passwd", b"/tmp", b".hidden", b"x" * 64):
            self.assertEqual(case(f"name {name!r}", name=name), "error:ModelNotFoundError")
        self.assertEqual(case("name of model b", name=self.models["b"].zoo_name.encode()),
                         "error:ModelMismatchError")
        self.assertEqual(case("fingerprint", fingerprint=b"\x00" * 8), "error:ModelMismatchError")
        for h, w in [(0, 1), (1, 0), (32769, 1), (4097, 4097), (32768, 32768), (1 << 20, 1 << 20), (1 << 34, 5)]:
            t0 = time.perf_counter()
            self.assertEqual(case(f"shape {h}x{w}", height=h, width=w), "error:CorruptBitstreamError")
            self.assertLess(time.perf_counter() - t0, 0.5)  # refused from the header, nothing allocated
        for h, w in [(1, 1), (64, 95), (63, 96), (65, 96), (200, 300), (4096, 4096), (32768, 512)]:
            outcome = case(f"shape {h}x{w}", height=h, width=w)
            # the guard notices other latent shapes; a crop of the same latents is decoded, with a warning
            self.assertIn(outcome, ("error:EntropyModelMismatchError", "error:CorruptBitstreamError",
                                    "image:inexact-warned"), msg=f"{h}x{w}")
        for count in (0, 9, 255):
            self.assertEqual(self.decode(_pack(fields, streams, count=count), note=f"count {count}"),
                             "error:CorruptBitstreamError")
        for note, changed in [("2 streams", streams[:2]), ("4 streams", streams + [b"x"]),
                              ("reversed", streams[::-1])]:
            self.assertTrue(self.decode(_pack(fields, changed), note=note).startswith("error:"), msg=note)

    def test_tampered_streams_with_valid_crc(self):
        """Damage the container cannot see: the range decoders get it.  Version 2 never decodes silently to
        another image; version 1 (no guard) may return a valid image of the declared shape."""
        rng = np.random.default_rng(3)
        counts = {"v1": {}, "v2": {}}
        for i in range(160):
            key = ("v1", "v2")[i % 2]
            fields, streams = _fields(self.files[key])
            s = int(rng.integers(len(streams)))
            op = (i // 2) % 5
            st = streams[s]
            if op == 0:
                st = _flip(rng, st, 1)
            elif op == 1:
                st = _flip(rng, st, int(rng.integers(2, 33)))
            elif op == 2:
                st = st[:int(rng.integers(len(st)))]
            elif op == 3:
                st = st + rng.bytes(int(rng.integers(1, 40)))
            else:
                st = rng.bytes(len(st))
            streams[s] = st
            outcome = self.decode(_pack(fields, streams), note=f"{key} stream {s} op {op}")
            counts[key][outcome] = counts[key].get(outcome, 0) + 1
            if key == "v2":
                self.assertNotEqual(outcome, "image:other", msg=f"v2 stream {s} op {op} decoded to garbage")
        # the deep checks were reached: the guard's model and latent checksums and the range decoders
        self.assertGreater(counts["v2"].get("error:EntropyModelMismatchError", 0), 0, counts)
        self.assertGreater(counts["v2"].get("error:CorruptBitstreamError", 0), 0, counts)
        self.assertGreater(counts["v1"].get("image:other", 0), 0, counts)  # what version 2 prevents

    def test_file_of_another_model(self):
        other = self.files["other"]
        self.assertEqual(self.decode(other, self.models["a"], note="explicit model a"), "error:ModelMismatchError")
        self.assertEqual(self.decode(self.files["v2"], self.models["b"], note="explicit model b"),
                         "error:ModelMismatchError")
        fields, streams = _fields(other)
        a = self.models["a"]
        # names model a, keeps b's fingerprint: refused by the fingerprint check
        self.assertEqual(self.decode(_pack(dict(fields, name=a.zoo_name.encode()), streams), note="renamed"),
                         "error:ModelMismatchError")
        # claims to be model a, fingerprint included: b's payload reaches a's decoders; the guard refuses it
        outcome = self.decode(_pack(dict(fields, name=a.zoo_name.encode(), fingerprint=a.fingerprint()), streams),
                              note="impostor")
        self.assertIn(outcome, ("error:EntropyModelMismatchError", "error:CorruptBitstreamError"))

    def test_guard_stream_with_valid_crc(self):
        fields, (z, y, guard) = _fields(self.files["v2"])
        rng = np.random.default_rng(4)
        cases = {"short": guard[:5], "empty": b"", "long": guard + b"\x00",
                 "absurd pin count": guard[:12] + helpers.leb128(1 << 33),
                 "pin outside": guard[:12] + helpers.leb128(1) + helpers.leb128(10 ** 9) + b"\x80",
                 "model crc": bytes(4) + guard[4:], "latent crc": guard[:4] + bytes(4) + guard[8:]}
        for i in range(30):
            count = int(rng.integers(1, 30))
            cases[f"random pins {i}"] = (guard[:12] + helpers.leb128(count)
                                         + b"".join(helpers.leb128(int(rng.integers(0, 60))) for _ in range(count))
                                         + rng.bytes(-(-count // 8)))
        for note, g in cases.items():
            outcome = self.decode(_pack(fields, [z, y, g]), note=note)
            self.assertIn(outcome, ("error:CorruptBitstreamError", "error:TruncatedBitstreamError",
                                    "error:EntropyModelMismatchError", "image:exact"), msg=note)
        # another image CRC: the image is decoded (exactly), and the mismatch is reported, not hidden
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = codec.decompress_details(_pack(fields, [z, y, guard[:8] + bytes(4) + guard[12:]]))
        self.assertFalse(d.exact)
        self.assertEqual(zlib.crc32(d.image.tobytes()), zlib.crc32(self.results["v2"].reconstruction.tobytes()))
        self.assertTrue(any(issubclass(w.category, InexactDecodeWarning) for w in caught))

    def test_documented_exception_types(self):
        # the classes the cases above end in are the documented ones
        for cls in (CorruptBitstreamError, TruncatedBitstreamError, NotATFCIFileError, UnsupportedVersionError,
                    EntropyModelMismatchError, ModelMismatchError):
            self.assertTrue(issubclass(cls, BitstreamError))
        self.assertTrue(issubclass(ModelNotFoundError, ModelError))


#: Found by examples/fuzz_decoder.py (seed 0, case 5611): a version 1 file of the tiny seed-0 model whose declared
#: size was changed to 204x287 and its CRC recomputed.  TFC's range decoder never returns on its y stream (the
#: Elias-gamma overflow loop keeps reading zero bits after the end of the stream).
_HANGING_FILE = bytes.fromhex("5446434901000666757a7a2d61437f3f89f095c6279f02cc010206146ac9204c656c7ffac7a4e7c88728"
                              "a5c943a960d27d48990e3426420b241e")


class DecodeTimeoutTest(helpers.TestCase):
    """``decompress --timeout`` turns the endless loop into a one-line error (the C++ op cannot be interrupted)."""

    def test_crafted_file_that_hangs_the_range_decoder(self):
        import subprocess
        import sys
        ckpt = helpers.checkpoint()
        fields, streams = _fields(_HANGING_FILE)
        self.assertEqual(fields["fingerprint"], zoo.load_model(ckpt).fingerprint())  # the same tiny model
        work = helpers.fresh_dir("hang")
        path, png = os.path.join(work, "hang.tfci"), os.path.join(work, "hang.png")
        with open(path, "wb") as f:
            f.write(_pack(dict(fields, name=os.path.basename(ckpt).encode()), streams))
        env = helpers.subprocess_env()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tfc_inference", "decompress", path, "-o", png, "--model", ckpt,
                               "--timeout", "3"], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertIn("did not finish within 3 s", proc.stderr)
        self.assertLen(proc.stderr.strip().splitlines(), 1)
        self.assertEqual(os.listdir(work), ["hang.tfci"])  # no output, no temporary file
        self.assertLess(time.perf_counter() - t0, 120)

    def test_api_time_limit_raises_decode_timeout_error(self):
        """In-process: ``decompress(timeout=...)`` returns control with DecodeTimeoutError (run in a subprocess,
        since the abandoned decoder thread keeps spinning until its process exits)."""
        import subprocess
        import sys
        ckpt = helpers.checkpoint()
        fields, streams = _fields(_HANGING_FILE)
        work = helpers.fresh_dir("hang_api")
        path = os.path.join(work, "hang.tfci")
        with open(path, "wb") as f:
            f.write(_pack(dict(fields, name=os.path.basename(ckpt).encode()), streams))
        script = ("import sys, time\n"
                  "from tfc_inference import codec, errors, zoo\n"
                  "model = zoo.load_model(sys.argv[2])\n"
                  "t0 = time.perf_counter()\n"
                  "try:\n"
                  "    codec.decompress(open(sys.argv[1], 'rb').read(), model, timeout=2)\n"
                  "except errors.DecodeTimeoutError as e:\n"
                  "    print('DecodeTimeoutError', round(time.perf_counter() - t0, 1), e)\n")
        env = helpers.subprocess_env()
        proc = subprocess.run([sys.executable, "-c", script, path, ckpt], env=env, capture_output=True, text=True,
                              timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        name, seconds, message = proc.stdout.split(" ", 2)
        self.assertEqual(name, "DecodeTimeoutError")
        self.assertLess(float(seconds), 10.0)  # 2 s plus 1e-5 s per symbol plus the z decode
        self.assertIn("malformed", message)

    def test_timeout_does_not_disturb_a_normal_decode(self):
        import contextlib
        import io
        from tfc_inference import cli
        ckpt = helpers.checkpoint()
        work = helpers.fresh_dir("timeout_ok")
        path, png = os.path.join(work, "ok.tfci"), os.path.join(work, "ok.png")
        with open(path, "wb") as f:
            f.write(helpers.real_tfci_file())
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(cli.main(["decompress", path, "-o", png, "--model", ckpt, "--timeout", "600"]), 0)
        self.assertTrue(os.path.isfile(png))
