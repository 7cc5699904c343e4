"""Reliability: deterministic files across runs and thread settings, the guards against other numerics, the
input matrix (formats, modes, sizes, orientation), safe output files and clear errors for bad checkpoints.

What other modules already test is not repeated here:
  * grayscale / palette / opaque RGBA / transparent RGBA / 16-bit conversion / bilevel / truncated and garbage
    images: test_data.ToRGBFromFilesTest; 1x1 .. 513x769 round trips: test_codec.RoundTripTest;
  * repeated compress in one process: test_codec.RoundTripTest.test_deterministic;
  * the bits-back q checksum with a perturbed BBVI: test_bits_back (in process; here also through the CLI in a
    fresh process);
  * missing config section, bad config values, architecture / kind mismatch, empty config, truncated weights,
    missing weights.index: test_zoo.BadCheckpointTest (here: that the messages name the files, and the
    config/weights fingerprint check).
"""
import contextlib
import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from unittest import mock

import numpy as np
from PIL import Image

from tests import helpers
from tfc_inference import cli, codec, container, data, zoo
from tfc_inference.errors import (EntropyModelMismatchError, ImageError, ImageTooLargeError, InexactDecodeWarning,
                                  ModelError, UnsupportedImageModeError)

# ------------------------------------------------------------------------------------------------------------------
# determinism: one fresh process per intra-op thread setting (threading can only be set before TF initializes)
_DETERMINISM_SCRIPT = r'''
import hashlib, json, os, sys, warnings
threads, work, hyper_path, bb_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
from tfc_inference import codec, zoo
sha = lambda b: hashlib.sha256(b).hexdigest()
image = os.path.join(work, "image.png")
hyper, bb = zoo.load_model(hyper_path), zoo.load_model(bb_path)
side = bytes(range(256)) * 2
out = {"threads": tf.config.threading.get_intra_op_parallelism_threads(), "files": {}, "recon": {},
       "decoded": {}, "side_ok": {}}
for method, model, options in [("amortized", hyper, {}), ("sga", hyper, {"iterations": 8}),
                               ("sga+bb", bb, {"iterations": 8, "bbvi_iterations": 8, "side_info": side})]:
    for run in range(3):
        r = codec.compress(model, image, method=method, **options)
        name = f"t{threads}_{method}_{run}.tfci"
        with open(os.path.join(work, name), "wb") as f:
            f.write(r.data)
        out["files"][name] = sha(r.data)
        out["recon"][name] = sha(r.reconstruction.tobytes())
from tfc_inference.errors import TFCInferenceError
for name in sorted(n for n in os.listdir(work) if n.endswith(".tfci")):  # this process's and earlier ones'
    with open(os.path.join(work, name), "rb") as f:
        try:
            d = codec.decompress_details(f.read())
        except TFCInferenceError as e:
            out["decoded"][name] = "error:" + type(e).__name__
            continue
    out["decoded"][name] = sha(d.image.tobytes())
    if d.header.method == "sga+bb":
        out["side_ok"][name] = d.side_info == side
if threads == 2:  # the bits-back guard through the CLI: a decoder whose reproducible BBVI differs
    from unittest import mock
    import contextlib, io, numpy as np
    from tfc_inference import bits_back, cli
    original = bits_back.BitsBackInference.reproducible_bbvi
    def perturbed(self, y_hat, iterations):
        mean, log_var = original(self, y_hat, iterations)
        return mean, np.nextafter(log_var, np.inf).astype(np.float32)
    err = io.StringIO()
    png, side_out = os.path.join(work, "guard.png"), os.path.join(work, "guard.side")
    with mock.patch.object(bits_back.BitsBackInference, "reproducible_bbvi", perturbed), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["decompress", os.path.join(work, "t2_sga+bb_0.tfci"), "-o", png, "--side-info-out",
                           side_out, "--model", bb_path])
    with open(png, "rb") as f:
        png_bytes = f.read()
    from PIL import Image
    out["guard"] = {"status": status, "stderr": err.getvalue(), "side_written": os.path.exists(side_out),
                    "image": sha(np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB")).tobytes())}
print("RESULT " + json.dumps(out))
'''


class ProcessSettingsTest(helpers.TestCase):
    """Importing the package asks TF for one inter-op thread (concurrent oneDNN ops corrupted the heap) and for its
    pooling CPU allocator (malloc's mmap/munmap of large tensors cost a third of SGA's CPU time in page faults),
    unless the user chose otherwise."""

    def _setting(self, name, value):
        env = helpers.subprocess_env()
        env.pop(name, None)
        if value is not None:
            env[name] = value
        script = f"import os, tfc_inference; print('SETTING', os.environ.get({name!r}))"
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        return [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("SETTING ")][-1]

    def test_one_inter_op_thread_unless_the_user_set_it(self):
        self.assertEqual(self._setting("TF_NUM_INTEROP_THREADS", None), "1")
        self.assertEqual(self._setting("TF_NUM_INTEROP_THREADS", "2"), "2")

    def test_pooling_cpu_allocator_unless_the_user_set_it(self):
        self.assertEqual(self._setting("TF_CPU_ALLOCATOR_USE_BFC", None), "true")
        self.assertEqual(self._setting("TF_CPU_ALLOCATOR_USE_BFC", "false"), "false")


class DeterminismTest(helpers.TestCase):
    """Byte-identical files over 3 runs x {1, 2} intra-op threads for amortized, SGA and SGA+BB, and
    bit-identical decoding in both processes."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.work = helpers.fresh_dir("determinism")
        with open(os.path.join(cls.work, "image.png"), "wb") as f:
            f.write(helpers.encode_image(helpers.kodak_crop(64, 96)))
        hyper, bb = helpers.checkpoint("hyperprior", trained=True), helpers.checkpoint("bitsback")
        env = helpers.subprocess_env(
            TFC_INFERENCE_CHECKPOINTS=os.pathsep.join(os.path.dirname(p) for p in (hyper, bb)))
        cls.out = {}
        for threads in (1, 2):
            proc = subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, str(threads), cls.work, hyper, bb],
                                  env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise AssertionError(f"determinism worker ({threads} threads) failed:\n{proc.stderr[-3000:]}")
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
            cls.out[threads] = json.loads(line[len("RESULT "):])
        print("\nDETERMINISM " + json.dumps(cls.out))  # the measured hashes (pytest -s shows them)

    def test_thread_settings_took_effect(self):
        self.assertEqual(self.out[1]["threads"], 1)
        self.assertEqual(self.out[2]["threads"], 2)

    def _files(self, method, threads):
        return {self.out[threads]["files"][f"t{threads}_{method}_{run}.tfci"] for run in range(3)}

    def test_files_are_byte_identical_across_runs_and_threads(self):
        for method in ("amortized", "sga"):
            self.assertLen(self._files(method, 1) | self._files(method, 2), 1, msg=method)
        # and the methods give different files
        self.assertLen({self.out[1]["files"][f"t1_{m}_0.tfci"] for m in ("amortized", "sga", "sga+bb")}, 3)

    def test_bits_back_files_are_identical_across_runs(self):
        """SGA+BB: identical over runs with the same thread count.  Across thread counts the files differ (the
        bits-back encoder's float reductions depend on the intra-op thread count; measured, see
        examples/results/reliability/README.md), which the decoding test below requires to be detected."""
        for threads in (1, 2):
            self.assertLen(self._files("sga+bb", threads), 1, msg=f"{threads} threads")

    def test_decoding_is_bit_identical_or_detected(self):
        recon = {**self.out[1]["recon"], **self.out[2]["recon"]}
        self.assertLen(self.out[1]["decoded"], 9)
        self.assertLen(self.out[2]["decoded"], 18)  # its own files and those of the 1-thread process
        for threads in (1, 2):
            for name, decoded in self.out[threads]["decoded"].items():
                same_process = name.startswith(f"t{threads}_")
                if same_process or "sga+bb" not in name:
                    # amortized and SGA files decode bit-identically everywhere, bits-back files where written
                    self.assertEqual(decoded, recon[name], msg=f"{name} decoded with {threads} threads")
                else:
                    # a bits-back file from the other thread setting: exact, or the guard says so; never garbage
                    self.assertIn(decoded, (recon[name], "error:EntropyModelMismatchError"),
                                  msg=f"{name} decoded with {threads} threads")
            for name, ok in self.out[threads]["side_ok"].items():
                self.assertTrue(ok, msg=f"side information of {name} with {threads} threads")
        self.assertLen([n for n in self.out[2]["side_ok"] if n.startswith("t2_")], 3)

    def test_bits_back_guard_through_the_cli(self):
        guard = self.out[2]["guard"]
        self.assertEqual(guard["status"], 1)
        self.assertIn("side information cannot be recovered", guard["stderr"])
        self.assertIn("image written to", guard["stderr"])
        self.assertLen(guard["stderr"].strip().splitlines(), 1)
        self.assertFalse(guard["side_written"])
        self.assertEqual(guard["image"], self.out[2]["recon"]["t2_sga+bb_0.tfci"])  # the image is intact


# ------------------------------------------------------------------------------------------------------------------
class OtherNumericsGuardTest(helpers.TestCase):
    """Container version 2 on a decoder whose floating point differs (simulated by perturbing its scales)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # the shipped model: its scale indexes spread over the table (a tiny test model's sit at the lower end)
        cls.model = zoo.load_model("hyperprior-mse-0.01")
        cls.image = helpers.kodak_crop(128, 128)

    def _decode_with_offset(self, data, offset):
        """Decodes with every continuous scale index shifted by ``offset`` (another machine's numerics)."""
        fn = codec._y_params_fn(self.model)

        def shifted(z_hat):
            mu, f = fn(z_hat)
            return mu, f + offset

        with mock.patch.object(codec, "_y_params_fn", lambda model: shifted):
            return codec.decompress_details(data, self.model)

    def _indexes(self, result):
        return codec._y_params_fn(self.model)(result.z_hat)[1].numpy()

    def test_shift_below_the_margin_is_absorbed_by_the_pins(self):
        r = codec.compress(self.model, self.image, pin_margin=1e-2)  # a wide margin, so some indexes get pinned
        f = self._indexes(r)
        self.assertGreater(r.extra["pinned_indexes"], 0)
        # an offset that moves some unpinned-looking floor() values: exactly the near-boundary ones are pinned
        flips = np.sum(np.floor(f + 5e-3) != np.floor(f))
        self.assertGreater(flips, 0)
        d = self._decode_with_offset(r.data, 5e-3)
        self.assertAllEqual(d.image, r.reconstruction)
        self.assertTrue(d.exact)

    def test_larger_shift_is_detected_not_decoded_to_garbage(self):
        r = codec.compress(self.model, self.image, pin_margin=1e-3)
        f = self._indexes(r)
        offset = 2e-2
        self.assertGreater(np.sum(np.floor(f + offset) != np.floor(f)), 0)
        with self.assertRaises(EntropyModelMismatchError) as cm:
            self._decode_with_offset(r.data, offset)
        self.assertIn("numerics", str(cm.exception))
        # (what a version 1 file, without guard, does on real other numerics: examples/cross_numerics.py)
        with self.assertRaises(EntropyModelMismatchError):
            self._decode_with_offset(r.data, 0.5)

    def test_synthesis_numerics_only_warn(self):
        r = codec.compress(self.model, self.image)
        original = codec.reconstruct

        def other_synthesis(model, y_hat, h, w):
            x = original(model, y_hat, h, w).copy()
            x[0, 0, 0] ^= 1
            return x

        with mock.patch.object(codec, "reconstruct", other_synthesis):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                d = codec.decompress_details(r.data, self.model)
        self.assertFalse(d.exact)
        self.assertTrue(any(issubclass(w.category, InexactDecodeWarning) for w in caught))
        self.assertAllEqual(d.y_symbols, r.y_symbols)

    def test_guard_overhead(self):
        v1 = codec.compress(self.model, self.image, container_version=1)
        v2 = codec.compress(self.model, self.image)
        guard = container.unpack(v2.data)[1][2]
        self.assertEqual(len(guard), v2.extra["guard_bytes"])
        # three CRC-32s, the pin count, ~2 bytes per pin; plus the guard's length field in the header
        self.assertEqual(len(v2.data) - len(v1.data), len(guard) + len(helpers.leb128(len(guard))))
        self.assertLessEqual(len(guard), 13 + 3 * v2.extra["pinned_indexes"])
        self.assertEqual(v1.data[4], 1)
        self.assertEqual(container.unpack(v1.data)[1], container.unpack(v2.data)[1][:2])


# ------------------------------------------------------------------------------------------------------------------
def _zoo_env(test, checkpoint):
    """Lets ``decompress`` find the test checkpoint by the name its files carry."""
    patcher = mock.patch.dict(os.environ, {"TFC_INFERENCE_CHECKPOINTS": os.path.dirname(checkpoint)})
    patcher.start()
    test.addCleanup(patcher.stop)


def _rgb(h, w, seed=0):
    """A smooth colour image (lossy formats keep it close)."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.02, 0.2, 3)
    img = 127.5 + 100 * np.sin(a[None, None] * (yy[..., None] + 2 * xx[..., None]) + rng.uniform(0, 6, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


class InputMatrixTest(helpers.TestCase):
    """Formats and modes through the CLI (as users meet them): each is coded, refused clearly, or converted."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ckpt = helpers.checkpoint()
        cls.model = zoo.load_model(cls.ckpt)

    def setUp(self):
        super().setUp()
        self.dir = helpers.fresh_dir("inputs")
        _zoo_env(self, self.ckpt)

    def _file(self, name, content: bytes):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(content)
        return path

    def _cli(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main([str(a) for a in argv])
        return status, out.getvalue(), err.getvalue()

    def test_formats(self):
        rgb = _rgb(40, 56)
        for fmt, ext, lossless in [("PNG", "png", True), ("JPEG", "jpg", False), ("WEBP", "webp", False),
                                   ("WEBP", "lossless.webp", True), ("TIFF", "tif", True), ("BMP", "bmp", True),
                                   ("PPM", "ppm", True)]:
            with self.subTest(fmt=ext):
                kw = {"lossless": True} if ext == "lossless.webp" else {}
                path = self._file(f"in.{ext}", helpers.encode_image(rgb, fmt=fmt, **kw))
                with Image.open(path) as img:  # what the file holds, decoded by PIL directly
                    expected = np.asarray(img.convert("RGB"))
                if lossless:
                    self.assertAllEqual(expected, rgb)
                tfci = os.path.join(self.dir, f"{ext}.tfci")
                status, _, err = self._cli("compress", path, "-o", tfci, "--model", self.ckpt, "-q")
                self.assertEqual(status, 0, err)
                with open(tfci, "rb") as f:
                    self.assertEqual(f.read(), codec.compress(self.model, expected).data)

    def test_modes(self):
        gray = _rgb(24, 40)[..., 0]
        palette_img = Image.fromarray(_rgb(24, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        cases = {"L": helpers.encode_image(gray, mode="L"), "P": _png(palette_img),
                 "RGBA-opaque": helpers.encode_image(np.dstack([_rgb(24, 40), np.full((24, 40), 255, np.uint8)])),
                 "CMYK": _encoded(Image.fromarray(_rgb(24, 40)).convert("CMYK"), "TIFF"),
                 "1": _png(Image.fromarray(gray).convert("1")),
                 "L-jpeg": helpers.encode_image(gray, mode="L", fmt="JPEG")}
        for mode, content in cases.items():
            with self.subTest(mode=mode):
                path = self._file(f"{mode}.img", content)
                with Image.open(path) as img:
                    expected = np.asarray(img.convert("RGB"))
                self.assertAllEqual(data.read_image(path), expected)
                status, _, err = self._cli("compress", path, "-o", path + ".tfci", "--model", self.ckpt, "-q")
                self.assertEqual(status, 0, err)

    def test_16bit_input_is_converted_with_a_one_line_notice(self):
        gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
        path = self._file("gray16.png", helpers.raw_png(np.dstack([gray16] * 3), 16, 2))
        status, _, err = self._cli("compress", path, "-o", path + ".tfci", "--model", self.ckpt, "-q")
        self.assertEqual(status, 0, err)
        self.assertIn("warning: ", err)
        self.assertIn("16-bit samples converted to 8 bits", err)
        self.assertNotIn("Traceback", err)
        self.assertTrue(os.path.exists(path + ".tfci"))

    def test_refused_modes_name_the_problem(self):
        rgba = np.dstack([_rgb(8, 8), np.full((8, 8), 255, np.uint8)])
        rgba[3, 3, 3] = 0
        gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
        cases = {"rgba.png": (helpers.encode_image(rgba), "transparency"),
                 "float.tif": (_encoded(Image.fromarray(np.ones((8, 8), np.float32)), "TIFF"), "float")}
        for name, (content, word) in cases.items():
            with self.subTest(name=name):
                path = self._file(name, content)
                with self.assertRaises(UnsupportedImageModeError) as cm:
                    data.read_image(path)
                self.assertIn(word, str(cm.exception))
                self.assertIn(path, str(cm.exception))
                status, _, err = self._cli("compress", path, "-o", path + ".tfci", "--model", self.ckpt)
                self.assertEqual(status, 1)
                self.assertIn(word, err)
                self.assertFalse(os.path.exists(path + ".tfci"))

    def test_exif_orientation(self):
        raw = _rgb(12, 20)
        # displayed image for each EXIF orientation, written out with numpy (EXIF 2.3, tag 0x0112)
        displayed = {1: raw, 2: raw[:, ::-1], 3: raw[::-1, ::-1], 4: raw[::-1], 5: raw.transpose(1, 0, 2),
                     6: np.rot90(raw, -1), 7: raw[::-1, ::-1].transpose(1, 0, 2), 8: np.rot90(raw, 1)}
        for orientation, expected in displayed.items():
            with self.subTest(orientation=orientation):
                exif = Image.Exif()
                exif[0x0112] = orientation
                content = _png(Image.fromarray(raw), exif=exif.tobytes())
                with Image.open(io.BytesIO(content)) as img:
                    self.assertEqual(img.getexif().get(0x0112), orientation)
                out = data.to_rgb_array(content)
                self.assertAllEqual(out, expected)
        # and a JPEG (lossy): the shape follows the orientation, the pixels are close to the rotated original
        exif = Image.Exif()
        exif[0x0112] = 6
        jpeg = _encoded(Image.fromarray(raw), "JPEG", exif=exif.tobytes(), quality=95)
        out = data.to_rgb_array(jpeg)
        self.assertEqual(out.shape, (20, 12, 3))
        self.assertLess(np.mean(np.abs(out.astype(int) - np.rot90(raw, -1).astype(int))), 6)
        r = codec.compress(self.model, jpeg)
        self.assertEqual((r.height, r.width), (20, 12))

    def test_pixel_limit_is_enforced_from_the_header(self):
        side = int(np.sqrt(container.MAX_PIXELS))  # 4096
        # PNG headers declaring one row / column more than allowed, with an (invalid) tiny payload: refused
        # before anything is decoded (a real decode would raise another error)
        for w, h in [(side + 1, side), (side, side + 1), (container.MAX_PIXELS + 1, 1), (30000, 30000)]:
            with self.subTest(size=(w, h)):
                with self.assertRaises(ImageTooLargeError) as cm:
                    data.to_rgb_array(_png_header_only(w, h))
                self.assertIn(str(container.MAX_PIXELS), str(cm.exception))
        # an array just above the limit is refused by compress before any computation
        big = np.zeros((side + 1, side, 3), np.uint8)
        with self.assertRaises(ImageTooLargeError):
            codec.compress(self.model, big)
        self.assertTrue(issubclass(ImageTooLargeError, ImageError))
        # exactly at the limit is accepted by the reader (not coded here: examples/reliability_inputs.py
        # measures coding time and memory of large images)
        self.assertEqual(data.to_rgb_array(np.zeros((side, side), np.uint8)).shape, (side, side, 3))
        header = _png_header_only(side, side)
        with self.assertRaises(ImageError) as cm:  # passes the size check, fails on the missing pixel data
            data.to_rgb_array(header)
        self.assertNotIsInstance(cm.exception, ImageTooLargeError)

    def test_tiny_and_odd_sizes_through_files(self):
        for h, w in [(1, 1), (1, 300), (300, 1), (2, 3)]:
            with self.subTest(size=(h, w)):
                path = self._file(f"{h}x{w}.png", helpers.encode_image(_rgb(h, w)))
                tfci, png = path + ".tfci", path + ".out.png"
                self.assertEqual(self._cli("compress", path, "-o", tfci, "--model", self.ckpt, "-q")[0], 0)
                self.assertEqual(self._cli("decompress", tfci, "-o", png, "-q")[0], 0)
                with Image.open(png) as img:
                    self.assertEqual(img.size, (w, h))


def _encoded(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png(img, **kw):
    return _encoded(img, "PNG", **kw)


def _png_header_only(width, height):
    """A PNG whose IHDR declares ``width`` x ``height`` RGB pixels but whose IDAT holds almost nothing."""
    import struct
    import zlib

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------------------------------
class OutputFilesTest(helpers.TestCase):
    """compress / decompress never replace a file without --force, and never leave a half-written one."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ckpt = helpers.checkpoint()

    def setUp(self):
        super().setUp()
        self.dir = helpers.fresh_dir("outputs")
        _zoo_env(self, self.ckpt)
        self.image = os.path.join(self.dir, "in.png")
        with open(self.image, "wb") as f:
            f.write(helpers.encode_image(helpers.kodak_crop(20, 30)))

    def _cli(self, *argv):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return cli.main([str(a) for a in argv]), err.getvalue()

    def test_no_overwrite_without_force(self):
        tfci, png = os.path.join(self.dir, "x.tfci"), os.path.join(self.dir, "x.png")
        for path in (tfci, png):
            with open(path, "wb") as f:
                f.write(b"precious")
        status, err = self._cli("compress", self.image, "-o", tfci, "--model", self.ckpt)
        self.assertEqual(status, 1)
        self.assertIn("exists", err)
        self.assertIn("--force", err)
        with open(tfci, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        self.assertEqual(self._cli("compress", self.image, "-o", tfci, "--model", self.ckpt, "--force")[0], 0)
        with open(tfci, "rb") as f:
            self.assertEqual(f.read()[:4], b"TFCI")
        status, err = self._cli("decompress", tfci, "-o", png)
        self.assertEqual(status, 1)
        self.assertIn("--force", err)
        with open(png, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        self.assertEqual(self._cli("decompress", tfci, "-o", png, "-f")[0], 0)
        with Image.open(png) as img:
            self.assertEqual(img.size, (30, 20))
        # default output names (in.tfci) are protected the same way
        self.assertEqual(self._cli("compress", self.image, "--model", self.ckpt)[0], 0)
        self.assertEqual(self._cli("compress", self.image, "--model", self.ckpt)[0], 1)
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.png", "in.tfci", "x.png", "x.tfci"])

    def test_output_appearing_during_the_run_is_not_replaced(self):
        target = os.path.join(self.dir, "late.tfci")
        original = cli._write_atomic

        def someone_else_writes_first(path, payload, force=True):
            with open(path, "wb") as f:
                f.write(b"theirs")
            return original(path, payload, force)

        with mock.patch.object(cli, "_write_atomic", someone_else_writes_first):
            status, err = self._cli("compress", self.image, "-o", target, "--model", self.ckpt)
        self.assertEqual(status, 1)
        self.assertIn("exists", err)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"theirs")
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.png", "late.tfci"])  # no temporary file left

    def test_interrupted_write_leaves_nothing(self):
        target = os.path.join(self.dir, "out.tfci")
        for exc in (KeyboardInterrupt(), OSError(28, "No space left on device")):
            with self.subTest(exc=type(exc).__name__):
                with mock.patch.object(os, "fsync", side_effect=exc):
                    with self.assertRaises(type(exc)):
                        cli._write_atomic(target, b"x" * 100000, force=False)
                self.assertEqual(sorted(os.listdir(self.dir)), ["in.png"])
        # an interrupted --force write leaves the previous file untouched
        with open(target, "wb") as f:
            f.write(b"old")
        with mock.patch.object(os, "fsync", side_effect=KeyboardInterrupt):
            with self.assertRaises(KeyboardInterrupt):
                cli._write_atomic(target, b"new" * 1000, force=True)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.png", "out.tfci"])


# ------------------------------------------------------------------------------------------------------------------
class CheckpointErrorsTest(helpers.TestCase):
    """A missing or damaged checkpoint, or config and weights that do not belong together: a ModelError that
    names the file."""

    def _copy(self, name="ckpt"):
        folder = os.path.join(helpers.fresh_dir("badckpt"), name)
        shutil.copytree(helpers.checkpoint(), folder)
        return folder

    def _error(self, folder):
        with self.assertRaises(ModelError) as cm:
            zoo.load_model(folder, prepare_coders=False)
        return str(cm.exception)

    def test_messages_name_the_file(self):
        cases = {}
        folder = self._copy()
        os.remove(os.path.join(folder, "config.json"))
        cases["missing config"] = (folder, "config.json")
        folder = self._copy()
        os.remove(os.path.join(folder, "weights.index"))
        cases["missing index"] = (folder, "weights.index")
        folder = self._copy()
        for f in glob.glob(os.path.join(folder, "weights.data-*")):
            os.remove(f)
        cases["missing data"] = (folder, "weights")
        folder = self._copy()
        with open(glob.glob(os.path.join(folder, "weights.data-*"))[0], "r+b") as f:
            f.truncate(100)
        cases["truncated data"] = (folder, "weights")
        folder = self._copy()
        with open(os.path.join(folder, "config.json"), "w") as f:
            f.write("{ not json")
        cases["corrupt config"] = (folder, "config.json")
        folder = self._copy()
        with open(os.path.join(folder, "weights.index"), "wb") as f:
            f.write(os.urandom(200))
        cases["corrupt index"] = (folder, "weights")
        for note, (folder, word) in cases.items():
            with self.subTest(note):
                message = self._error(folder)
                self.assertIn(folder, message)
                self.assertIn(word, message)
                # the CLI says it in one line
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    status = cli.main(["compress", helpers.KODIM23, "-o",
                                       os.path.join(helpers.fresh_dir("o"), "x.tfci"), "--model", folder])
                self.assertEqual(status, 1)
                self.assertLen(err.getvalue().strip().splitlines(), 1)
                self.assertIn(folder, err.getvalue())

    def test_config_that_does_not_match_its_weights(self):
        # the same architecture, another model's weights: only the recorded fingerprint can tell
        folder = self._copy()
        other = helpers.checkpoint(seed=1)
        for f in glob.glob(os.path.join(folder, "weights.*")):
            os.remove(f)
        for f in glob.glob(os.path.join(other, "weights.*")):
            shutil.copy(f, folder)
        message = self._error(folder)
        self.assertIn("do not belong together", message)
        self.assertIn(os.path.join(folder, "config.json"), message)
        # another architecture in the config: named as well
        folder = self._copy()
        with open(os.path.join(folder, "config.json")) as f:
            info = json.load(f)
        info["config"]["latent_channels"] = 16
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(info, f)
        message = self._error(folder)
        self.assertIn(os.path.join(folder, "config.json"), message)
        self.assertIn("weights", message)
