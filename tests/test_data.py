"""Tests of image reading (to_rgb_array) and the training-data pipeline (list_images, CropSampler)."""
import os
import pathlib
import unittest
import warnings

import numpy as np
from PIL import Image

from tests import helpers
from tfc_inference import data
from tfc_inference.errors import ImageConversionWarning, ImageError, TrainingError, UnsupportedImageModeError


def _pattern(h, w, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


class ToRGBFromFilesTest(helpers.TestCase):

    def test_rgb_png_bytes_path_and_pil(self):
        arr = _pattern(7, 11)
        png = helpers.encode_image(arr)
        path = os.path.join(helpers.fresh_dir("data"), "x.png")
        with open(path, "wb") as f:
            f.write(png)
        for source in (png, bytearray(png), path, pathlib.Path(path), Image.fromarray(arr)):
            out = data.to_rgb_array(source)
            self.assertEqual(out.dtype, np.uint8)
            self.assertTrue(out.flags.c_contiguous)
            self.assertAllEqual(out, arr)
        self.assertAllEqual(data.read_image(path), arr)

    def test_grayscale_png_replicates_channels(self):
        gray = _pattern(9, 5, 1)[..., 0]
        out = data.to_rgb_array(helpers.encode_image(gray, mode="L"))
        self.assertEqual(out.shape, (9, 5, 3))
        for c in range(3):
            self.assertAllEqual(out[..., c], gray)

    def test_gray_alpha_opaque_png(self):
        gray = _pattern(4, 6, 1)[..., 0]
        la = np.stack([gray, np.full_like(gray, 255)], axis=-1)
        out = data.to_rgb_array(helpers.encode_image(la, mode="LA"))
        self.assertAllEqual(out, np.repeat(gray[..., None], 3, axis=-1))

    def test_palette_png(self):
        rng = np.random.default_rng(3)
        palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
        indices = rng.integers(0, 16, (6, 10), dtype=np.uint8)
        img = Image.fromarray(indices, mode="P")
        img.putpalette(palette.ravel().tolist())
        out = data.to_rgb_array(_save(img))
        self.assertAllEqual(out, palette[indices])

    def test_palette_with_transparency(self):
        palette = np.array([[10, 20, 30], [200, 100, 0], [1, 2, 3]], np.uint8)
        indices = np.array([[0, 1], [1, 0]], np.uint8)
        img = Image.fromarray(indices, mode="P")
        img.putpalette(palette.ravel().tolist())
        # a transparent entry that is used -> refused
        with self.assertRaises(UnsupportedImageModeError):
            data.to_rgb_array(_save(img, transparency=1))
        # a transparent entry that no pixel uses -> the image is opaque, accepted
        self.assertAllEqual(data.to_rgb_array(_save(img, transparency=2)), palette[indices])

    def test_rgba_opaque_becomes_rgb(self):
        rgb = _pattern(5, 8)
        rgba = np.concatenate([rgb, np.full((5, 8, 1), 255, np.uint8)], axis=-1)
        out = data.to_rgb_array(helpers.encode_image(rgba, mode="RGBA"))
        self.assertEqual(out.shape, (5, 8, 3))
        self.assertAllEqual(out, rgb)

    def test_rgba_with_transparency_is_refused(self):
        rgba = np.concatenate([_pattern(5, 8), np.full((5, 8, 1), 255, np.uint8)], axis=-1)
        rgba[4, 7, 3] = 254  # one pixel slightly transparent
        with self.assertRaises(UnsupportedImageModeError):
            data.to_rgb_array(helpers.encode_image(rgba, mode="RGBA"))
        with self.assertRaises(UnsupportedImageModeError):
            data.to_rgb_array(Image.fromarray(rgba, mode="RGBA"))

    def test_16bit_images_are_converted_with_a_notice(self):
        gray16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
        rgb16 = np.random.default_rng(0).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
        opaque = np.full((4, 5, 1), 65535, np.uint16)
        cases = [("gray16 png", helpers.raw_png(gray16, 16, 0), np.dstack([gray16] * 3)),
                 ("gray16 pil", _save(Image.fromarray(gray16)), np.dstack([gray16] * 3)),
                 ("RGB16", helpers.raw_png(rgb16, 16, 2), rgb16),
                 ("RGBA16", helpers.raw_png(np.concatenate([rgb16, opaque], -1), 16, 6), rgb16),
                 ("LA16", helpers.raw_png(np.dstack([rgb16[..., 0], opaque[..., 0]]), 16, 4),
                  np.dstack([rgb16[..., 0]] * 3))]
        for name, png, samples in cases:
            with self.subTest(name), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                arr = data.to_rgb_array(png)
                self.assertEqual(arr.dtype, np.uint8)
                self.assertAllEqual(arr, (samples >> 8).astype(np.uint8))  # the high bytes
                self.assertTrue(any(issubclass(w.category, ImageConversionWarning) and "16-bit" in str(w.message)
                                    for w in caught), name)
        with warnings.catch_warnings(record=True) as caught:  # 8-bit input: no notice
            warnings.simplefilter("always")
            data.to_rgb_array(helpers.encode_image(np.zeros((4, 5, 3), np.uint8)))
        self.assertFalse([w for w in caught if issubclass(w.category, ImageConversionWarning)])

    def test_int32_and_float_pil_modes_are_refused(self):
        for mode, arr in (("I", np.full((3, 3), 70000, np.int32)), ("I", np.full((3, 3), -1, np.int32)),
                          ("F", np.zeros((3, 3), np.float32))):
            with self.assertRaises(UnsupportedImageModeError, msg=mode):
                data.to_rgb_array(Image.fromarray(arr, mode=mode))

    def test_bilevel_image(self):
        bits = np.array([[0, 255, 0], [255, 255, 0]], np.uint8)
        img = Image.fromarray(bits, mode="L").convert("1")
        self.assertAllEqual(data.to_rgb_array(_save(img)), np.repeat(bits[..., None], 3, axis=-1))

    def test_garbage_bytes(self):
        for garbage in (b"", b"not an image at all", np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes(), b"\x89PNG\r\n\x1a\n" + b"\x00" * 40):
            with self.assertRaises(ImageError):
                data.to_rgb_array(garbage)

    def test_truncated_png(self):
        png = helpers.encode_image(_pattern(64, 64))
        with self.assertRaises(ImageError):
            data.to_rgb_array(png[:len(png) // 2])

    def test_missing_file_and_directory(self):
        folder = helpers.fresh_dir("data")
        missing = os.path.join(folder, "nope.png")
        with self.assertRaises(ImageError) as cm:
            data.to_rgb_array(missing)
        self.assertNotIsInstance(cm.exception, FileNotFoundError)
        with self.assertRaises(ImageError):
            data.read_image(folder)

    def test_write_png_round_trip(self):
        arr = _pattern(13, 3)
        path = os.path.join(helpers.fresh_dir("data"), "w.png")
        data.write_png(path, arr)
        with Image.open(path) as img:
            self.assertEqual(img.format, "PNG")
            self.assertAllEqual(np.asarray(img), arr)

    def test_kodak_asset(self):
        img = data.read_image(helpers.KODIM23)
        self.assertEqual(img.shape, (512, 768, 3))
        self.assertAllEqual(img, helpers.kodak())


def _save(img, **kw):
    import io
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


class ToRGBFromArraysTest(helpers.TestCase):

    def test_rgb_array_passthrough(self):
        arr = _pattern(3, 4)
        out = data.to_rgb_array(arr)
        self.assertAllEqual(out, arr)
        # non-contiguous views are made contiguous
        out = data.to_rgb_array(arr[:, ::-1])
        self.assertTrue(out.flags.c_contiguous)
        self.assertAllEqual(out, arr[:, ::-1])

    def test_gray_arrays(self):
        gray = _pattern(3, 4, 1)
        for arr in (gray[..., 0], gray):
            out = data.to_rgb_array(arr)
            self.assertEqual(out.shape, (3, 4, 3))
            self.assertAllEqual(out, np.repeat(gray, 3, axis=-1))

    def test_rgba_arrays(self):
        rgb = _pattern(3, 4)
        rgba = np.concatenate([rgb, np.full((3, 4, 1), 255, np.uint8)], -1)
        self.assertAllEqual(data.to_rgb_array(rgba), rgb)
        rgba[0, 0, 3] = 0
        with self.assertRaises(UnsupportedImageModeError):
            data.to_rgb_array(rgba)

    def test_wrong_dtypes(self):
        for dtype in (np.float32, np.float64, np.uint16, np.int32, np.int8, bool):
            with self.assertRaises(ImageError, msg=str(dtype)):
                data.to_rgb_array(np.zeros((4, 4, 3), dtype))

    def test_wrong_shapes(self):
        for shape in ((4, 4, 2), (4, 4, 5), (1, 4, 4, 3), (12,), (4, 0, 3), (0, 4, 3), (0, 0)):
            with self.assertRaises(ImageError, msg=str(shape)):
                data.to_rgb_array(np.zeros(shape, np.uint8))

    def test_too_large(self):
        with self.assertRaises(ImageError):
            data.to_rgb_array(np.zeros((1, data.MAX_IMAGE_SIDE + 1, 3), np.uint8))
        self.assertEqual(data.to_rgb_array(np.zeros((1, data.MAX_IMAGE_SIDE), np.uint8)).shape,
                         (1, data.MAX_IMAGE_SIDE, 3))


class ListImagesTest(helpers.TestCase):

    def setUp(self):
        super().setUp()
        self.root = helpers.fresh_dir("list")
        for rel in ("b.png", "a.JPG", "notes.txt", "sub/c.webp", "sub/deeper/d.PNG", "sub/deeper/e.bmp",
                    "other/f.tiff"):
            path = os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()

    def test_recursive_sorted_and_filtered(self):
        found = data.list_images([self.root])
        rel = [os.path.relpath(p, self.root) for p in found]
        self.assertEqual(sorted(rel), ["a.JPG", "b.png", "other/f.tiff", "sub/c.webp", "sub/deeper/d.PNG",
                                       "sub/deeper/e.bmp"])
        self.assertEqual(found, sorted(found))

    def test_several_folders_and_files(self):
        found = data.list_images([os.path.join(self.root, "sub"), os.path.join(self.root, "b.png")])
        self.assertEqual([os.path.relpath(p, self.root) for p in found],
                         sorted(["b.png", "sub/c.webp", "sub/deeper/d.PNG", "sub/deeper/e.bmp"]))

    def test_missing_folder(self):
        with self.assertRaises(TrainingError):
            data.list_images([self.root, os.path.join(self.root, "does-not-exist")])

    def test_empty_folder(self):
        self.assertEqual(data.list_images([helpers.fresh_dir("empty")]), [])


class CropSamplerTest(helpers.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = helpers.fresh_dir("crops")
        cls.images = [helpers.kodak_crop(70, 90, 0, 0), helpers.kodak_crop(80, 66, 300, 500)]
        cls.paths = []
        for i, img in enumerate(cls.images):
            cls.paths.append(os.path.join(cls.root, f"img{i}.png"))
            Image.fromarray(img).save(cls.paths[-1])
        # too small for 64x64 crops, and an unreadable file: both skipped
        cls.paths.append(os.path.join(cls.root, "small.png"))
        Image.fromarray(helpers.kodak_crop(30, 200)).save(cls.paths[-1])
        cls.paths.append(os.path.join(cls.root, "broken.png"))
        with open(cls.paths[-1], "wb") as f:
            f.write(b"definitely not a png")

    def test_skips_small_and_unreadable(self):
        sampler = data.CropSampler(self.paths, crop=64, batch_size=3, seed=0)
        self.assertLen(sampler.images, 2)

    def _is_crop_of_inputs(self, crop):
        c = crop.shape[0]
        for img in self.images:
            for top in range(img.shape[0] - c + 1):
                for left in range(img.shape[1] - c + 1):
                    window = img[top:top + c, left:left + c]
                    if np.array_equal(window, crop) or np.array_equal(window[:, ::-1], crop):
                        return True
        return False

    def test_batches_are_crops_of_the_images(self):
        sampler = data.CropSampler(self.paths, crop=64, batch_size=4, seed=5)
        for step in range(3):
            batch = sampler.batch(step)
            self.assertEqual(batch.shape, (4, 64, 64, 3))
            self.assertEqual(batch.dtype, np.uint8)
            for crop in batch:
                self.assertTrue(self._is_crop_of_inputs(crop))

    def test_deterministic_in_seed_and_step(self):
        a = data.CropSampler(self.paths, crop=64, batch_size=4, seed=7)
        b = data.CropSampler(self.paths, crop=64, batch_size=4, seed=7)
        other_seed = data.CropSampler(self.paths, crop=64, batch_size=4, seed=8)
        for step in (0, 1, 1000, 123456789):
            self.assertAllEqual(a.batch(step), b.batch(step))
        # order of calls does not matter
        later = a.batch(3)
        a.batch(0)
        self.assertAllEqual(a.batch(3), later)
        batches = [a.batch(s).tobytes() for s in range(10)]
        self.assertLen(set(batches), 10)
        self.assertNotAllEqual(a.batch(0), other_seed.batch(0))

    def test_dataset_matches_batches(self):
        sampler = data.CropSampler(self.paths, crop=64, batch_size=2, seed=1)
        got = [b.numpy() for b in sampler.dataset(5, 9)]
        self.assertLen(got, 4)
        for step, batch in zip(range(5, 9), got):
            self.assertAllEqual(batch, sampler.batch(step))

    def test_no_images(self):
        with self.assertRaises(TrainingError):
            data.CropSampler([], crop=64, batch_size=2)
        with self.assertRaises(TrainingError):
            data.CropSampler(self.paths, crop=100, batch_size=2)  # none is 100x100
        with self.assertRaises(TrainingError):
            data.CropSampler(self.paths[-1:], crop=8, batch_size=2)  # unreadable only
