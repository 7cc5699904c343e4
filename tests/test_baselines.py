"""Tests of the live classical-codec baselines and the published-curve loaders."""
import contextlib
import io
import json
import os

import numpy as np

from tfc_inference import baselines, cli
from tests import helpers


def _write_images(folder, shapes):
    paths = []
    for i, (h, w) in enumerate(shapes):
        path = os.path.join(folder, f"img{i}.png")
        with open(path, "wb") as f:
            f.write(helpers.encode_image(helpers.kodak_crop(h, w, top=100 + 30 * i, left=200)))
        paths.append(path)
    return paths


class MetricTest(helpers.TestCase):

    def test_ms_ssim_scales(self):
        self.assertTrue(baselines.ms_ssim_fits(161, 161))
        self.assertFalse(baselines.ms_ssim_fits(160, 400))
        small = helpers.kodak_crop(40, 72)
        self.assertIsNone(baselines.ms_ssim(small, small))
        x = helpers.kodak_crop(176, 176)
        self.assertNear(baselines.ms_ssim(x, x), 1.0, 1e-5)
        noisy = np.clip(x.astype(int) + np.random.default_rng(0).integers(-20, 21, x.shape), 0, 255).astype(np.uint8)
        self.assertLess(baselines.ms_ssim(x, noisy), 0.99)
        self.assertEqual(baselines.psnr(x, x), float("inf"))
        self.assertNear(baselines.psnr(x, noisy), helpers.psnr(x, noisy), 1e-9)


class LiveCodecTest(helpers.TestCase):

    def setUp(self):
        super().setUp()
        self.codecs = baselines.available_codecs()
        if "jpeg" not in self.codecs:
            self.skipTest("imagecodecs with JPEG is not installed")

    def test_round_trip_records_and_resume(self):
        folder = helpers.fresh_dir("baseline_images")
        paths = _write_images(folder, [(40, 72), (176, 192)])
        cache = os.path.join(helpers.fresh_dir("baseline_cache"), "b.jsonl")
        names = [n for n in ("jpeg", "jpeg2000", "webp") if n in self.codecs]
        levels = {"jpeg": [30, 80], "jpeg2000": [30], "webp": [50]}
        records = baselines.run(paths, cache, names, levels=levels, progress=False)
        self.assertEqual(len(records), 2 * sum(len(levels[n]) for n in names))
        for r in records:
            x = helpers.kodak_crop(r["height"], r["width"], top=100 + 30 * int(r["image"][3]), left=200)
            codec = self.codecs[r["codec"]]
            data = codec.encode(x, r["level"])  # the codecs are deterministic: the same bytes again
            decoded = codec.decode(data)
            self.assertEqual(r["bits"], 8 * len(data))
            self.assertNear(r["bpp"], 8 * len(data) / (r["height"] * r["width"]), 1e-12)
            self.assertNear(r["psnr"], helpers.psnr(x, decoded), 1e-9)
            if r["height"] < 161:
                self.assertIsNone(r["ms_ssim"])
            else:
                self.assertGreater(r["ms_ssim"], 0.5)
                self.assertLessEqual(r["ms_ssim"], 1.0)
        # higher JPEG quality: more bits, higher PSNR
        jpeg = {r["level"]: r for r in records if r["codec"] == "jpeg" and r["image"] == "img1.png"}
        self.assertGreater(jpeg[80.0]["bits"], jpeg[30.0]["bits"])
        self.assertGreater(jpeg[80.0]["psnr"], jpeg[30.0]["psnr"])
        # JPEG bytes decode with an independent decoder (PIL) to nearly the same pixels
        from PIL import Image
        x = helpers.kodak_crop(176, 192, top=130, left=200)
        pil = np.asarray(Image.open(io.BytesIO(self.codecs["jpeg"].encode(x, 80))).convert("RGB"))
        self.assertNear(helpers.psnr(x, pil), jpeg[80.0]["psnr"], 0.2)
        # resume: nothing is recomputed; a torn last line is ignored
        with open(cache) as f:
            n = len(f.readlines())
        with open(cache, "a") as f:
            f.write('{"codec": "jpeg", ')
        again = baselines.run(paths, cache, names, levels=levels, progress=False)
        self.assertEqual([json.dumps(r, sort_keys=True) for r in again],
                         [json.dumps(r, sort_keys=True) for r in records])
        with open(cache) as f:
            self.assertEqual(len(f.readlines()), n + 1)
        with self.assertRaises(ValueError):
            baselines.run(paths, cache, ["bpg"], progress=False)

    def test_cli_baselines(self):
        folder = helpers.fresh_dir("baseline_cli")
        _write_images(folder, [(40, 72)])
        cache = os.path.join(helpers.fresh_dir("baseline_cli_cache"), "b.jsonl")

        def run(*argv):
            err, out = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = cli.main(list(argv))
            return code, out.getvalue(), err.getvalue()

        code, out, err = run("baselines", "--images", folder, "--cache", cache, "--codecs", "jpeg")
        self.assertEqual(code, 0, err)
        self.assertIn("| jpeg | 50 | 1 |", out)
        with open(cache) as f:
            self.assertEqual(len(f.readlines()), len(self.codecs["jpeg"].levels))
        for argv, text in [(("--codecs", "bpg"), "codec 'bpg' is not available"),
                           (("--codecs", ","), "no codec given")]:
            code, _, err = run("baselines", "--images", folder, "--cache", cache, *argv)
            self.assertEqual((code, err.count("\n")), (1, 1), err)
            self.assertIn(text, err)
        code, _, err = run("baselines", "--images", folder + "-missing", "--cache", cache)
        self.assertEqual((code, err.count("\n")), (1, 1))
        code, _, err = run("baselines", "--images", helpers.fresh_dir("no_images"), "--cache", cache)
        self.assertEqual(code, 1)
        self.assertIn("no images found", err)


class PublishedTest(helpers.TestCase):

    def test_loaders(self):
        kodak = baselines.published_curves("kodak")
        self.assertIn("bpg444", kodak)
        self.assertEqual(len(kodak["paper-sga"]["results"]["bpp"]), 7)
        # the paper's first SGA point on Kodak (its README / PAPER_NOTES: 0.095 / 27.46)
        self.assertNear(kodak["paper-sga"]["results"]["bpp"][0], 0.094722, 1e-9)
        self.assertNear(kodak["paper-sga"]["results"]["psnr-rgb"][0], 27.463476, 1e-9)
        self.assertEqual(kodak["paper-sga"]["rate"], "estimated")
        bpg = kodak["bpg444"]["results"]
        self.assertEqual(bpg["bpp"], sorted(bpg["bpp"]))
        self.assertIn("BPG", kodak["bpg444"]["description"])
        self.assertIn("ms-ssim-rgb", kodak["bpg444-compressai"]["results"])
        self.assertEqual(baselines.published_curves("unsplash1200"), {})
        self.assertIn("paper-base", baselines.published_curves("tecnick"))
