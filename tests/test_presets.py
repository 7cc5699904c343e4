"""Named SGA presets: what each one sets, how explicit options override it, and that a preset is the same as
spelling its options out (identical files)."""
import contextlib
import io
import os

from tests import helpers
from tfc_inference import cli, codec, inference, presets, rounding, schedules, zoo


class PresetTest(helpers.TestCase):

    def test_presets_state_the_study_settings(self):
        paper, best, fast = (presets.get(n) for n in ("paper", "best", "fast"))
        self.assertEqual((paper.iterations, paper.schedule, paper.rounding), (2000, schedules.paper(), "atanh"))
        self.assertEqual(best.iterations, 2000)
        self.assertLessEqual(fast.iterations, 500)
        # the package's SGA default stays the official code's settings (what the Kodak main curves use)
        opt = inference.get_optimizer(zoo.load_model(helpers.checkpoint()), "sga")
        self.assertEqual((opt.schedule, opt.learning_rate), (schedules.improved(), paper.learning_rate))
        self.assertEqual(inference.DEFAULT_ITERATIONS, 2000)
        with self.assertRaisesRegex(ValueError, "unknown preset 'quick'.*paper, best, fast"):
            presets.get("quick")

    def test_explicit_options_win(self):
        out = presets.resolve({"preset": "fast", "iterations": 7, "seed": 3})
        self.assertEqual(out["iterations"], 7)
        self.assertEqual(out["seed"], 3)
        self.assertEqual(out["schedule"], presets.get("fast").schedule)
        self.assertNotIn("preset", out)
        self.assertEqual(presets.resolve({"iterations": 5}), {"iterations": 5})
        self.assertNotIn("rounding", presets.get("paper").options())  # the defaults are not spelled out
        self.assertEqual(presets.get("fast").options()["rounding"], rounding.get(presets.get("fast").rounding))

    def test_preset_file_equals_explicit_options(self):
        model = zoo.load_model(helpers.checkpoint("hyperprior", trained=True))
        image = helpers.kodak_crop(48, 64)
        fast = presets.get("fast")
        a = codec.compress(model, image, "sga", preset="fast", iterations=6, progress=False)
        b = codec.compress(model, image, "sga", iterations=6, schedule=fast.schedule,
                           learning_rate=fast.learning_rate, rounding=rounding.get(fast.rounding), progress=False)
        self.assertEqual(a.data, b.data)
        with self.assertRaisesRegex(TypeError, "presets set the options of sga and sga\\+bb"):
            codec.compress(model, image, "amortized", preset="fast")
        with self.assertRaisesRegex(TypeError, "presets set the options"):
            codec.compress(model, image, "map", preset="fast")

    def test_bits_back_takes_every_preset(self):
        model = zoo.load_model(helpers.checkpoint("bitsback"))
        image = helpers.kodak_crop(32, 48)
        for name in presets.names():
            r = codec.compress(model, image, "sga+bb", preset=name, iterations=3, bbvi_iterations=3,
                               side_info=b"side")
            self.assertEqual(codec.decompress_details(r.data, model).side_info, b"side", msg=name)

    def test_cli(self):
        work = helpers.fresh_dir("presets_cli")
        image = os.path.join(work, "in.png")
        with open(image, "wb") as f:
            f.write(helpers.encode_image(helpers.kodak_crop(40, 48)))
        ckpt = helpers.checkpoint("hyperprior", trained=True)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(cli.main(["compress", image, "-o", os.path.join(work, "a.tfci"), "--model", ckpt,
                                       "--method", "sga", "--preset", "fast", "--iterations", "4", "-q"]), 0)
            self.assertEqual(cli.main(["compress", image, "-o", os.path.join(work, "b.tfci"), "--model", ckpt,
                                       "--method", "map", "--preset", "fast"]), 1)
            self.assertEqual(cli.main(["compress", image, "--model", ckpt, "--method", "sga", "--preset",
                                       "slow"]), 2)
        self.assertTrue(os.path.isfile(os.path.join(work, "a.tfci")))
        # without a preset or SGA options, `compress --method sga` runs the fast preset
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(cli.main(["compress", image, "-o", os.path.join(work, "c.tfci"), "--model", ckpt,
                                       "--method", "sga", "-q"]), 0)
        with open(os.path.join(work, "c.tfci"), "rb") as f:
            expected = codec.compress(zoo.load_model(ckpt), helpers.kodak_crop(40, 48), "sga", preset="fast",
                                      progress=False)
            self.assertEqual(f.read(), expected.data)
        self.assertEqual(expected.iterations, presets.get("fast").iterations)
        self.assertIn("--preset applies to sga and sga+bb only", err.getvalue())
        self.assertFalse(os.path.exists(os.path.join(work, "b.tfci")))
