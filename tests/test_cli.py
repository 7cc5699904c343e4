"""The command line: round trips, listing, export, demo, training, and one-line errors for bad input."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from PIL import Image

import tfc_inference
from tfc_inference import cli, codec, zoo
from tfc_inference.models import ModelConfig, build_model

TINY = dict(num_filters=8, latent_channels=8, hyper_filters=8, hyper_latent_channels=8)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*argv):
    """Runs the CLI in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def read_png(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


class CLITest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="tfci_test_cli_")
        cls.checkpoints = os.path.join(cls.root, "checkpoints")
        tf.random.set_seed(2)
        cls.model_path = str(zoo.save_checkpoint(build_model(ModelConfig(**TINY)),
                                                 os.path.join(cls.checkpoints, "tiny-test")))
        with Image.open(tfc_inference.DEMO_IMAGE) as img:
            kodak = np.asarray(img.convert("RGB"))
        cls.image = np.ascontiguousarray(kodak[100:170, 200:300])  # 70 x 100
        cls.image_path = os.path.join(cls.root, "small.png")
        Image.fromarray(cls.image).save(cls.image_path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        patcher = mock.patch.dict(os.environ, {"TFC_INFERENCE_CHECKPOINTS": self.checkpoints})
        patcher.start()
        self.addCleanup(patcher.stop)
        self.dir = tempfile.mkdtemp(dir=self.root)

    def assertUserError(self, result, status=1):
        code, out, err = result
        self.assertEqual(code, status, (out, err))
        lines = err.splitlines()
        self.assertLen(lines, 1, err)
        self.assertStartsWith(lines[0], "tfc-inference: error: ")
        self.assertNotIn("Traceback", err)

    def assertStartsWith(self, text, prefix):
        self.assertTrue(text.startswith(prefix), f"{text!r} does not start with {prefix!r}")

    # ----------------------------------------------------------------------------------------------------------
    def test_compress_decompress_round_trip(self):
        tfci = os.path.join(self.dir, "out.tfci")
        png = os.path.join(self.dir, "out.png")
        status, out, err = run("compress", self.image_path, "-o", tfci, "--model", "tiny-test")
        self.assertEqual(status, 0, err)
        self.assertLen(out.splitlines(), 1)
        for word in ("bytes", "bpp", "estimated", "PSNR", " s"):
            self.assertIn(word, out)
        with open(tfci, "rb") as f:
            data = f.read()
        header = codec.read_header(data)
        self.assertEqual((header.model_name, header.method, header.height, header.width),
                         ("tiny-test", "amortized", 70, 100))
        expected = codec.compress(zoo.load_model("tiny-test"), self.image)
        self.assertEqual(data, expected.data)

        status, out, err = run("decompress", tfci, "-o", png)
        self.assertEqual(status, 0, err)
        self.assertLen(out.splitlines(), 1)
        self.assertIn("100x70", out)
        self.assertAllEqual(read_png(png), expected.reconstruction)
        self.assertEqual(sorted(os.listdir(self.dir)), ["out.png", "out.tfci"])  # no temporary files left

    def test_sga_with_other_rounding_functions(self):
        for extra in (["--rounding", "cosine"], ["--rounding", "sigmoid_logit(a=3)", "--three-class"]):
            tfci = os.path.join(self.dir, f"r{len(extra)}.tfci")
            png = os.path.join(self.dir, f"r{len(extra)}.png")
            status, out, err = run("compress", self.image_path, "-o", tfci, "--model", "tiny-test", "--method",
                                   "sga", "--iterations", "4", "--quiet", *extra)
            self.assertEqual(status, 0, err)
            with open(tfci, "rb") as f:
                data = f.read()
            self.assertEqual(codec.read_header(data).method, "sga")
            self.assertEqual(run("decompress", tfci, "-o", png)[0], 0)
            expected = codec.compress(zoo.load_model("tiny-test"), self.image, method="sga", iterations=4,
                                      rounding=extra[1], three_class="--three-class" in extra)
            self.assertEqual(data, expected.data)  # the CLI passed the options through, deterministically
            self.assertAllEqual(read_png(png), expected.reconstruction)
        tfci = os.path.join(self.dir, "bad.tfci")
        self.assertUserError(run("compress", self.image_path, "-o", tfci, "--model", "tiny-test", "--method",
                                 "sga", "--rounding", "bogus"))
        self.assertUserError(run("compress", self.image_path, "-o", tfci, "--model", "tiny-test", "--method",
                                 "map", "--rounding", "linear"))
        self.assertFalse(os.path.exists(tfci))

    def test_default_outputs_and_quiet(self):
        image = os.path.join(self.dir, "photo.png")
        shutil.copy(self.image_path, image)
        self.assertEqual(run("compress", image, "--model", self.model_path, "-q"), (0, "", ""))
        self.assertTrue(os.path.isfile(os.path.join(self.dir, "photo.tfci")))
        os.remove(image)
        self.assertEqual(run("decompress", os.path.join(self.dir, "photo.tfci"), "--quiet"), (0, "", ""))
        self.assertEqual(read_png(image).shape, (70, 100, 3))

    def test_models(self):
        status, out, err = run("models")
        self.assertEqual(status, 0, err)
        self.assertIn("name", out.splitlines()[0])
        row = [line for line in out.splitlines() if line.startswith("tiny-test")]
        self.assertLen(row, 1)
        self.assertIn("0.01", row[0])
        self.assertIn("8/8", row[0])
        status, out, err = run("models", "--json")
        self.assertEqual(status, 0, err)
        models = {m["name"]: m for m in json.loads(out)}
        self.assertEqual(models["tiny-test"]["config"]["num_filters"], 8)

    def test_export(self):
        target = os.path.join(self.dir, "saved")
        for _ in range(2):  # the second export replaces the first
            status, out, err = run("export", "tiny-test", target)
            self.assertEqual(status, 0, err)
            self.assertIn("exported", out)
        self.assertTrue(os.path.isfile(os.path.join(target, "saved_model.pb")))
        with open(os.path.join(target, "tfc_inference_export.json")) as f:
            self.assertEqual(json.load(f)["model_name"], "tiny-test")
        self.assertTrue(os.path.isdir(os.path.join(target, "variables")))
        self.assertEqual(os.listdir(self.dir), ["saved"])  # no temporary folders left
        # (tests/test_export.py checks what the SavedModel computes)
        # a folder that holds something else is not overwritten
        other = os.path.join(self.dir, "other")
        os.mkdir(other)
        open(os.path.join(other, "keep.txt"), "w").close()
        self.assertUserError(run("export", "tiny-test", other))
        self.assertEqual(os.listdir(other), ["keep.txt"])
        self.assertUserError(run("export", "tiny-test", os.path.join(self.dir, "no", "such", "folder")))

    def test_demo(self):
        status, out, err = run("demo", "--methods", "amortized", "--model", self.model_path,
                               "--image", self.image_path)
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        header = [line for line in lines if line.startswith("| method")]
        self.assertLen(header, 1)
        for column in ("file bytes", "bpp (file)", "estimated bpp", "PSNR dB", "R-D loss", "encode s", "decode s"):
            self.assertIn(column, header[0])
        rows = [line.split("|")[1:-1] for line in lines if line.startswith("| amortized")]
        self.assertLen(rows, 1)
        expected = codec.compress(zoo.load_model(self.model_path), self.image)
        self.assertEqual(int(rows[0][1]), len(expected.data))
        self.assertAlmostEqual(float(rows[0][2]), expected.bpp, places=3)
        self.assertIn("equals the encoder's reconstruction", out)

    def test_demo_preset(self):
        """The demo's SGA runs the fast preset (its label says so); other methods take --iterations."""
        status, out, err = run("demo", "--methods", "sga,map", "--iterations", "2", "--model", self.model_path,
                               "--image", self.image_path)
        self.assertEqual(status, 0, err)
        self.assertLen([line for line in out.splitlines() if line.startswith("| sga (fast) |")], 1)
        self.assertLen([line for line in out.splitlines() if line.startswith("| map |")], 1)
        status, out, err = run("demo", "--methods", "sga", "--preset", "none", "--iterations", "2", "--model",
                               self.model_path, "--image", self.image_path)
        self.assertEqual(status, 0, err)
        self.assertLen([line for line in out.splitlines() if line.startswith("| sga |")], 1)

    def test_demo_without_iterative_inference(self):
        with mock.patch.object(cli, "_iterative_inference_available", return_value=False):
            status, out, err = run("demo", "--model", self.model_path, "--image", self.image_path)
            self.assertEqual(status, 0, err)
            self.assertIn("note:", err)
            self.assertIn("sga", err)
            self.assertLen([line for line in out.splitlines() if line.startswith("| amortized")], 1)
            self.assertNotIn("| sga", out)
            # asking for an iterative method explicitly is an error
            self.assertUserError(run("compress", self.image_path, "--model", "tiny-test", "--method", "sga",
                                     "-o", os.path.join(self.dir, "x.tfci")))
            status, _, err = run("demo", "--model", self.model_path, "--methods", "sga")
            self.assertEqual(status, 1)
            self.assertIn("tfc-inference: error: ", err)
        self.assertEqual(os.listdir(self.dir), [])

    def test_usage_errors(self):
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(run("demo", "--methods", "nonsense")[0], 2)
            self.assertEqual(run("compress", self.image_path, "--iterations", "3")[0], 2)
            self.assertEqual(run("frobnicate")[0], 2)
            self.assertEqual(run()[0], 2)

    # ----------------------------------------------------------------------------------------------------------
    # user errors: one line on stderr, exit status 1, no output file
    def test_missing_input(self):
        out = os.path.join(self.dir, "x.tfci")
        self.assertUserError(run("compress", os.path.join(self.dir, "missing.png"), "-o", out,
                                 "--model", "tiny-test"))
        self.assertUserError(run("decompress", os.path.join(self.dir, "missing.tfci")))
        self.assertUserError(run("decompress", self.dir))
        self.assertEqual(os.listdir(self.dir), [])

    def test_not_an_image(self):
        path = os.path.join(self.dir, "notes.png")
        with open(path, "w") as f:
            f.write("this is not a PNG\n")
        self.assertUserError(run("compress", path, "--model", "tiny-test"))
        self.assertEqual(os.listdir(self.dir), ["notes.png"])

    def test_bad_files(self):
        data = codec.compress(zoo.load_model("tiny-test"), self.image).data
        rng = np.random.default_rng(0)
        cases = {"truncated.tfci": data[:len(data) // 2], "random.tfci": rng.bytes(200),
                 "damaged.tfci": data[:20] + bytes([data[20] ^ 0xFF]) + data[21:], "empty.tfci": b""}
        for name, content in cases.items():
            with self.subTest(name=name):
                path = os.path.join(self.dir, name)
                with open(path, "wb") as f:
                    f.write(content)
                png = os.path.join(self.dir, name + ".png")
                self.assertUserError(run("decompress", path, "-o", png))
                self.assertFalse(os.path.exists(png))

    def test_evaluate_shards_alternate_over_models(self):
        # one image, one method, two models: worker 1/2 gets the second model's run, not nothing
        second = str(zoo.save_checkpoint(build_model(ModelConfig(**TINY)), os.path.join(self.dir, "tiny-2")))
        folder = os.path.join(self.dir, "images")
        os.makedirs(folder)
        shutil.copy(self.image_path, folder)
        cache = os.path.join(self.dir, "cache.jsonl")
        for shard, records_after in (("1/2", 1), ("0/2", 2)):
            code, out, err = run("evaluate", "--model", self.model_path, "--model", second, "--images", folder,
                                 "--methods", "amortized", "--cache", cache, "--shard", shard)
            self.assertEqual(code, 0, err)
            with open(cache) as f:
                records = [json.loads(line) for line in f]
            self.assertLen(records, records_after)
        self.assertLen({r["fingerprint"] for r in records}, 2)

    def test_unknown_model(self):
        self.assertUserError(run("compress", self.image_path, "-o", os.path.join(self.dir, "x.tfci"),
                                 "--model", "no-such-model"))
        self.assertUserError(run("export", "no-such-model", os.path.join(self.dir, "saved")))
        self.assertEqual(os.listdir(self.dir), [])

    def test_unwritable_output(self):
        self.assertUserError(run("compress", self.image_path, "--model", "tiny-test", "-o",
                                 os.path.join(self.dir, "no", "such", "folder", "x.tfci")))
        self.assertUserError(run("compress", self.image_path, "--model", "tiny-test", "-o", self.dir))

    # ----------------------------------------------------------------------------------------------------------
    def test_python_m_help(self):
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-m", "tfc_inference", "--help"], env=env, cwd=self.dir,
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        for command in ("compress", "decompress", "models", "train", "export", "demo"):
            self.assertIn(command, proc.stdout)

    def test_train_and_resume(self):
        data = os.path.join(self.dir, "data")
        os.mkdir(data)
        with Image.open(tfc_inference.DEMO_IMAGE) as img:
            kodak = np.asarray(img.convert("RGB"))
        Image.fromarray(kodak[:72, :80]).save(os.path.join(data, "a.png"))
        Image.fromarray(kodak[300:380, 400:470]).save(os.path.join(data, "b.png"))
        work, output = os.path.join(self.dir, "runs"), os.path.join(self.dir, "zoo")
        common = ["train", "--name", "tiny-run", "--data", data, "--lambda", "0.02", "--num-filters", "8",
                  "--latent-channels", "8", "--hyper-filters", "8", "--hyper-latent-channels", "8",
                  "--batch-size", "2", "--crop", "64", "--work-dir", work, "--output", output, "--no-progress",
                  "--log-every", "1"]
        status, out, err = run(*common, "--steps", "3")
        self.assertEqual(status, 0, err)
        self.assertIn("step 3 ", out)
        ckpt_dir = os.path.join(work, "tiny-run", "ckpt")
        self.assertEndsWith(tf.train.latest_checkpoint(ckpt_dir), "ckpt-3")
        with open(os.path.join(output, "tiny-run", "config.json")) as f:
            info = json.load(f)
        self.assertEqual(info["training"]["steps"], 3)
        self.assertEqual(info["config"]["lmbda"], 0.02)

        # the run exists: starting it again without --resume is refused
        self.assertUserError(run(*common, "--steps", "5"))

        status, out, err = run(*common, "--steps", "5", "--resume")
        self.assertEqual(status, 0, err)
        self.assertIn("at step 3", out)
        self.assertNotIn("step 3 ", out)
        self.assertIn("step 5 ", out)
        self.assertEndsWith(tf.train.latest_checkpoint(ckpt_dir), "ckpt-5")
        with open(os.path.join(output, "tiny-run", "config.json")) as f:
            self.assertEqual(json.load(f)["training"]["steps"], 5)
        model = zoo.load_model(os.path.join(output, "tiny-run"))
        self.assertEqual(model.config.num_filters, 8)

    def test_train_without_images(self):
        empty = os.path.join(self.dir, "empty")
        os.mkdir(empty)
        self.assertUserError(run("train", "--name", "x", "--data", empty, "--steps", "1",
                                 "--work-dir", os.path.join(self.dir, "runs"), "--no-progress"))

    def assertEndsWith(self, text, suffix):
        self.assertIsNotNone(text)
        self.assertTrue(text.endswith(suffix), f"{text!r} does not end with {suffix!r}")


if __name__ == "__main__":
    tf.test.main()
