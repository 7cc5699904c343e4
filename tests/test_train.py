"""Tests of training: tiny runs, exact resume, exported checkpoints and --init-from weight transfer."""
import contextlib
import io
import json
import math
import os
import re
import unittest
from unittest import mock

import numpy as np
import tensorflow as tf
from PIL import Image

from tests import helpers
from tfc_inference import train, zoo
from tfc_inference.errors import TrainingDivergedError, TrainingError

LOG_LINE = re.compile(r"^step (\d+) loss (\S+) bpp (\S+) psnr (\S+)$", re.M)


def _data_dir():
    """Two small PNGs (one in a sub-folder) to draw 64x64 crops from."""
    folder = helpers.fresh_dir("train_data")
    os.makedirs(os.path.join(folder, "sub"))
    Image.fromarray(helpers.kodak_crop(80, 96, 0, 0)).save(os.path.join(folder, "a.png"))
    Image.fromarray(helpers.kodak_crop(72, 100, 300, 500)).save(os.path.join(folder, "sub", "b.png"))
    return folder


def _options(root, data, name, steps, **kw):
    d = dict(name=name, data=[data], steps=steps, crop=64, batch_size=2, save_every=0, log_every=1,
             work_dir=os.path.join(root, "runs"), output=os.path.join(root, "out"), progress=False,
             learning_rate=1e-3, **helpers.TINY)
    d.update(kw)
    return train.TrainOptions(**d)


def _run(opts):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        path = train.train(opts)
    return path, out.getvalue()


def _ckpt_numbers(folder):
    return sorted(int(m.group(1)) for f in os.listdir(folder) for m in [re.match(r"ckpt-(\d+)\.index$", f)] if m)


def _exported_weights(path):
    return helpers.weights_of(zoo.load_model(path, prepare_coders=False))


class ResumeTest(helpers.TestCase):
    """4 steps, then --resume to 8; and the same 8 steps in one go for comparison."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = helpers.fresh_dir("train")
        cls.data = _data_dir()
        # The learning-rate drop (at step 6 of 8) is laid out for --steps; --stop-at ends the first chunk at step 4
        # without moving it, so the chunked run and the straight one must agree exactly.
        kw = dict(lr_drop_fraction=0.25, seed=3)
        cls.first_path, cls.first_log = _run(_options(cls.root, cls.data, "resumed", 8, stop_at=4, **kw))
        cls.ckpts_after_first = _ckpt_numbers(os.path.join(cls.root, "runs", "resumed", "ckpt"))
        cls.first_weights = _exported_weights(cls.first_path)
        with open(os.path.join(cls.first_path, "config.json")) as f:
            cls.first_steps = json.load(f)["training"]["steps"]  # before the resumed run re-exports
        cls.resumed_path, cls.resumed_log = _run(_options(cls.root, cls.data, "resumed", 8, resume=True, **kw))
        cls.straight_path, cls.straight_log = _run(_options(cls.root, cls.data, "straight", 8, **kw))

    def test_logs_and_checkpoints(self):
        self.assertEqual([int(s) for s, *_ in LOG_LINE.findall(self.first_log)], [1, 2, 3, 4])
        self.assertEqual(self.ckpts_after_first, [3, 4])  # saved every step, 2 kept
        self.assertIn("at step 4", self.resumed_log)
        self.assertEqual([int(s) for s, *_ in LOG_LINE.findall(self.resumed_log)], [5, 6, 7, 8])
        self.assertEqual(_ckpt_numbers(os.path.join(self.root, "runs", "resumed", "ckpt")), [7, 8])
        latest = tf.train.latest_checkpoint(os.path.join(self.root, "runs", "resumed", "ckpt"))
        reader = tf.train.load_checkpoint(latest)
        self.assertEqual(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), 8)
        self.assertEqual(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"), 8)
        for log in (self.first_log, self.resumed_log, self.straight_log):
            for _, loss, bpp, psnr in LOG_LINE.findall(log):
                self.assertTrue(math.isfinite(float(loss)) and float(bpp) > 0 and math.isfinite(float(psnr)))

    def test_exported_checkpoint(self):
        self.assertEqual(str(self.resumed_path), os.path.join(self.root, "out", "resumed"))
        with open(os.path.join(self.resumed_path, "config.json")) as f:
            info = json.load(f)
        training = info["training"]
        self.assertEqual(training["steps"], 8)
        self.assertEqual(training["seed"], 3)
        self.assertEqual(training["batch_size"], 2)
        self.assertEqual(training["crop"], 64)
        self.assertEqual(training["num_training_images"], 2)
        self.assertEqual(training["data"], [self.data])
        self.assertGreater(training["cpu_hours"], 0)
        self.assertEqual(info["config"]["num_filters"], 8)
        self.assertEqual(info["config"]["kind"], "hyperprior")
        model = zoo.load_model(self.resumed_path, prepare_coders=False)
        self.assertEqual(info["fingerprint"], model.fingerprint().hex())
        with open(os.path.join(self.root, "runs", "resumed", "run.json")) as f:
            run = json.load(f)
        self.assertTrue(run["resume"])
        self.assertEqual(run["steps"], 8)

    def test_training_changed_the_weights(self):
        resumed = _exported_weights(self.resumed_path)
        changed = [not np.array_equal(a, b) for a, b in zip(self.first_weights, resumed)]
        self.assertGreater(sum(changed), len(changed) // 2)
        # Adam moves each weight by about the learning rate per step: 4 steps of 1e-3
        for a, b in zip(self.first_weights, resumed):
            self.assertAllLessEqual(np.abs(a - b), 4 * 1e-3 * 1.5)

    def test_first_chunk_exported_at_its_end(self):
        self.assertEqual(self.first_steps, 4)
        with self.assertRaises(TrainingError):
            train.train(_options(self.root, self.data, "bad", 6, stop_at=-1))

    def test_rerun_without_resume_raises(self):
        with self.assertRaises(TrainingError):
            train.train(_options(self.root, self.data, "resumed", 12))
        # resuming with another architecture is refused as well
        with self.assertRaises(TrainingError):
            train.train(_options(self.root, self.data, "resumed", 12, resume=True, num_filters=16))
        # and nothing was changed
        self.assertEqual(_ckpt_numbers(os.path.join(self.root, "runs", "resumed", "ckpt")), [7, 8])

    # BUG (tfc_inference/train.py, train): resuming is not exact.  (1) tf.random.set_seed(opts.seed) does not
    # seed the Keras initializers (they draw from Python's `random`), so two runs with the same seed start from
    # different weights (see test_same_seed_same_initial_weights); (2) the training noise comes from stateful
    # tf.random ops inside train_step, whose sequence restarts when a run is resumed, so steps 5-8 of a resumed
    # run use the noise of steps 1-4 instead of that of steps 5-8.  With both fixed (verified by patching), the
    # resumed and the straight run agree bit for bit.
    def test_resume_is_exact(self):
        straight = _exported_weights(self.straight_path)
        resumed = _exported_weights(self.resumed_path)
        for a, b in zip(straight, resumed):
            self.assertAllEqual(a, b)


class SeedTest(helpers.TestCase):

    # BUG (tfc_inference/train.py, train): tf.random.set_seed(opts.seed) leaves the Keras kernel initializers
    # unseeded (Keras 2.14 draws their seeds from Python's `random` module), so --seed does not determine the
    # initial weights.  Fix: tf.keras.utils.set_random_seed(opts.seed) (seeds random, numpy and TF).
    def test_same_seed_same_initial_weights(self):
        root, data = helpers.fresh_dir("seed"), _data_dir()
        import random
        paths = []
        for name in ("first", "second"):
            random.seed(name)  # whatever state Python's RNG is in must not matter
            path, _ = _run(_options(root, data, name, 0, seed=5))
            paths.append(path)
        for a, b in zip(_exported_weights(paths[0]), _exported_weights(paths[1])):
            self.assertAllEqual(a, b)


class TransferWeightsTest(helpers.TestCase):

    def test_same_architecture_copies_everything(self):
        source = helpers.tiny_model("hyperprior", seed=2)
        target = helpers.tiny_model("hyperprior", seed=3)
        self.assertNotEqual(source.fingerprint(), target.fingerprint())
        self.assertEqual(train.transfer_weights(source, target), [])
        self.assertEqual(source.fingerprint(), target.fingerprint())

    def test_hyperprior_into_bitsback(self):
        source = helpers.tiny_model("hyperprior", seed=2)
        target = helpers.tiny_model("bitsback", seed=3)
        notes = train.transfer_weights(source, target)
        self.assertLen(notes, 2)  # kernel and bias of the last hyper-analysis convolution
        for mod in ("analysis_transform", "synthesis_transform", "hyper_synthesis_transform", "hyperprior"):
            src, dst = getattr(source, mod).trainable_variables, getattr(target, mod).trainable_variables
            self.assertLen(dst, len(src))
            for s, d in zip(src, dst):
                self.assertAllEqual(s, d)
        src_layers = source.hyper_analysis_transform.layers
        dst_layers = target.hyper_analysis_transform.layers
        for s, d in zip(src_layers[:-1], dst_layers[:-1]):
            for a, b in zip(s.get_weights(), d.get_weights()):
                self.assertAllEqual(a, b)
        s_kernel, s_bias = src_layers[-1].get_weights()
        d_kernel, d_bias = dst_layers[-1].get_weights()
        self.assertEqual(d_kernel.shape, s_kernel.shape[:-1] + (16,))
        self.assertAllEqual(d_kernel[..., :8], s_kernel)
        self.assertAllEqual(d_kernel[..., 8:], np.zeros_like(s_kernel))
        self.assertAllEqual(d_bias[:8], s_bias)
        self.assertAllClose(d_bias[8:], np.full(8, np.log(1.0 / 12.0)))
        # behaviour: q's mean is the base model's z, with the variance of uniform noise of width 1 (1/12)
        x = helpers.kodak_crop(64, 128)[None].astype(np.float32)
        _, z_source = source.encode_latents(x)
        mean, log_var = target.q_params(target.analysis_transform(x))
        self.assertAllClose(mean, z_source)
        self.assertAllClose(log_var, np.full(log_var.shape, np.log(1.0 / 12.0)))

    def test_incompatible_architectures(self):
        source = helpers.tiny_model("hyperprior", seed=2)
        target = helpers.tiny_model("hyperprior", seed=3, num_filters=16)
        with self.assertRaises(TrainingError):
            train.transfer_weights(source, target)


class InitFromTest(helpers.TestCase):

    def test_bitsback_from_hyperprior(self):
        root, data = helpers.fresh_dir("init"), _data_dir()
        source_path = helpers.checkpoint("hyperprior")
        source = zoo.load_model(source_path, prepare_coders=False)
        lr, steps = 1e-4, 3
        path, log = _run(_options(root, data, "bb", steps, kind="bitsback", init_from=source_path,
                                  learning_rate=lr))
        self.assertIn("initialized from", log)
        self.assertIn("mean half", log)
        losses = [float(loss) for _, loss, _, _ in LOG_LINE.findall(log)]
        self.assertLen(losses, steps)
        self.assertTrue(all(math.isfinite(v) for v in losses))
        with open(os.path.join(root, "runs", "bb", "run.json")) as f:
            self.assertLen(json.load(f)["init_notes"], 2)
        model = zoo.load_model(path, prepare_coders=False)
        self.assertEqual(model.config.kind, "bitsback")
        self.assertEqual(model.info["training"]["init_from"], source_path)
        for w in model.weights:
            self.assertTrue(np.all(np.isfinite(w.numpy())), w.name)
        # started from the source: every copied weight is within a few Adam steps of it
        bound = steps * lr * 1.5
        for s, d in zip(source.analysis_transform.weights, model.analysis_transform.weights):
            self.assertAllLessEqual(np.abs(s.numpy() - d.numpy()), bound)
        d_bias = model.hyper_analysis_transform.layers[-1].get_weights()[1]
        self.assertAllLessEqual(np.abs(d_bias[8:] - np.log(1.0 / 12.0)), bound)
        out = model(helpers.kodak_crop(64, 64)[None].astype(np.float32), training=True)
        self.assertTrue(np.isfinite(out["loss"].numpy()))
        self.assertIn("z_net_bpp", out)


class MixedPrecisionTest(helpers.TestCase):

    def test_bfloat16_convolutions_train_and_export_float32(self):
        """--precision mixed_bfloat16 starts from the same weights, follows the float32 run closely for a few
        steps, and exports a float32 model that codes an image."""
        from tfc_inference import codec
        root, data = helpers.fresh_dir("mixed"), _data_dir()
        kw = dict(lr_drop_fraction=0.0, seed=5)
        path16, log16 = _run(_options(root, data, "bf16", 3, precision="mixed_bfloat16", **kw))
        path32, log32 = _run(_options(root, data, "fp32", 3, **kw))
        loss16 = [float(v) for _, v, _, _ in LOG_LINE.findall(log16)]
        loss32 = [float(v) for _, v, _, _ in LOG_LINE.findall(log32)]
        self.assertLen(loss16, 3)
        self.assertAllClose(loss16, loss32, rtol=0.02)  # bfloat16 keeps ~3 significant digits per convolution
        model = zoo.load_model(path16)
        self.assertTrue(all(w.dtype == tf.float32 for w in model.weights))
        image = helpers.kodak_crop(64, 64)
        self.assertEqual(codec.decompress(codec.compress(model, image).data, model).shape, image.shape)
        with self.assertRaises(TrainingError):
            train.train(_options(root, data, "bad", 1, precision="float16"))


class ContinueTest(helpers.TestCase):
    """The PSNR-vs-steps curve across a resume; a float32 run resumed in bfloat16; --initial-step."""

    def test_eval_curve_resume_in_bfloat16_and_initial_step(self):
        root, data = helpers.fresh_dir("continue"), _data_dir()
        kw = dict(eval_dir=data, eval_images=1, eval_every=2)
        _run(_options(root, data, "c", 2, **kw))
        path, log = _run(_options(root, data, "c", 3, resume=True, precision="mixed_bfloat16", **kw))
        self.assertIn("at step 2", log)
        self.assertEqual([int(s) for s, *_ in LOG_LINE.findall(log)], [3])
        curve = train.read_eval_curve(os.path.join(root, "runs", "c", "eval_curve.jsonl"))
        self.assertEqual([p["step"] for p in curve], [0, 2, 3])
        for p in curve:
            self.assertEqual(p["images"], ["a.png"])
            self.assertGreater(p["bpp"], 0)
            self.assertTrue(math.isfinite(p["psnr"]))
        self.assertNotEqual(curve[0]["psnr"], curve[-1]["psnr"])  # the points measure the changing weights
        with open(os.path.join(path, "config.json")) as f:  # the export's evaluation is the curve's last point
            evaluation = json.load(f)["evaluation"]
        self.assertEqual((evaluation["bpp"], evaluation["psnr"]), (curve[-1]["bpp"], curve[-1]["psnr"]))
        # an exported model continued at its step count (its run folder gone); say it had trained 5 CPU-hours
        with open(os.path.join(path, "config.json")) as f:
            info = json.load(f)
        info["training"]["cpu_hours"] = 5.0
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(info, f)
        path2, log2 = _run(_options(root, data, "c2", 5, init_from=str(path), initial_step=3, stop_at=4))
        self.assertIn("continuing at step 3", log2)
        self.assertEqual([int(s) for s, *_ in LOG_LINE.findall(log2)], [4])
        with open(os.path.join(path2, "config.json")) as f:
            self.assertEqual(json.load(f)["training"]["steps"], 4)
        # resumed (the next chunk), the run still says where its weights started
        path2, _ = _run(_options(root, data, "c2", 5, resume=True))
        with open(os.path.join(path2, "config.json")) as f:
            training = json.load(f)["training"]
        with open(os.path.join(path, "config.json")) as f:
            source_training = json.load(f)["training"]
        # the continued export keeps the history of the one it continued: its origin and its CPU time
        self.assertEqual((training["steps"], training["init_from"]), (5, source_training["init_from"]))
        self.assertEqual(training["continued_from"], f"{path} (step 3)")
        self.assertTrue(5.0 < training["cpu_hours"] < 5.5, training["cpu_hours"])
        with open(os.path.join(root, "runs", "c2", "run.json")) as f:
            self.assertEqual(json.load(f)["initial_step"], 3)
        # a CPU budget ends the run early (and a resumed run that has used it up trains nothing)
        path3, log3 = _run(_options(root, data, "c5", 50, max_cpu_hours=1e-6))
        self.assertIn("CPU budget of 1e-06 h reached at step 1", log3)
        _, log4 = _run(_options(root, data, "c5", 50, max_cpu_hours=1e-6, resume=True))
        self.assertIn("already used at step 1", log4)
        with open(os.path.join(path3, "config.json")) as f:
            self.assertEqual(json.load(f)["training"]["steps"], 1)
        with self.assertRaisesRegex(TrainingError, "give --init-from too"):
            train.train(_options(root, data, "c3", 4, initial_step=2))
        with self.assertRaisesRegex(TrainingError, "between 0 and --steps"):
            train.train(_options(root, data, "c4", 4, init_from=str(path), initial_step=4))


class EvaluateTest(helpers.TestCase):

    def test_evaluate_amortized(self):
        from tfc_inference import codec
        model = zoo.load_model(helpers.checkpoint())
        folder = helpers.fresh_dir("eval")
        images = [helpers.kodak_crop(40, 70, 0, 0), helpers.kodak_crop(64, 48, 300, 600)]
        paths = []
        for i, img in enumerate(images):
            paths.append(os.path.join(folder, f"e{i}.png"))
            Image.fromarray(img).save(paths[-1])
        result = train.evaluate_amortized(model, paths)
        self.assertEqual(result["images"], ["e0.png", "e1.png"])
        files = [codec.compress(model, img) for img in images]
        self.assertAllClose(result["bpp"], np.mean([8 * len(f.data) / (img.shape[0] * img.shape[1])
                                                    for f, img in zip(files, images)]))
        decoded = [codec.decompress(f.data, model) for f in files]
        self.assertAllClose(result["psnr"], np.mean([helpers.psnr(d, img) for d, img in zip(decoded, images)]))
        self.assertAllClose(result["estimated_bpp"], np.mean([f.estimated_bpp for f in files]))


class EvalCurveReadTest(helpers.TestCase):

    def test_points_of_lost_progress_are_dropped(self):
        path = os.path.join(helpers.fresh_dir("curve"), "eval_curve.jsonl")
        with open(path, "w") as f:  # killed after the point at 1500, resumed from the checkpoint of step 1200
            for step, psnr in [(0, 7.0), (500, 19.0), (1000, 21.0), (1500, 22.0), (1200, 21.5), (1500, 22.5)]:
                f.write(json.dumps(dict(step=step, psnr=psnr)) + "\n")
            f.write('{"step": 2000, "ps')  # torn last line
        curve = train.read_eval_curve(path)
        self.assertEqual([(p["step"], p["psnr"]) for p in curve],
                         [(0, 7.0), (500, 19.0), (1000, 21.0), (1200, 21.5), (1500, 22.5)])


class DivergenceTest(helpers.TestCase):
    """A non-finite loss stops the run without saving its weights; a checkpoint with NaN weights is refused."""

    def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(self):
        root, data = helpers.fresh_dir("diverge"), _data_dir()
        _run(_options(root, data, "run", 2, lr_drop_fraction=0.0))
        ckpt_dir = os.path.join(root, "runs", "run", "ckpt")
        self.assertEqual(_ckpt_numbers(ckpt_dir), [1, 2])
        # Adam moves every weight by about the learning rate: 1e30 overflows float32 within a few steps
        with self.assertRaises(TrainingDivergedError) as caught:
            _run(_options(root, data, "run", 10, resume=True, learning_rate=1e30, lr_drop_fraction=0.0))
        self.assertGreater(caught.exception.step, 2)
        self.assertLessEqual(caught.exception.step, 10)
        saved = _ckpt_numbers(ckpt_dir)
        self.assertLess(max(saved), caught.exception.step)  # the failing step's weights were not saved
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(ckpt_dir))
        values = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()]
        values = [v for v in values if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
        self.assertGreater(len(values), 10)
        self.assertTrue(all(np.all(np.isfinite(v)) for v in values))

    def test_checkpoint_with_nan_weights_is_refused(self):
        root, data = helpers.fresh_dir("nan_ckpt"), _data_dir()
        with mock.patch.object(train.math, "isfinite", return_value=True):  # let the NaN weights be saved
            _run(_options(root, data, "run", 6, learning_rate=1e30, lr_drop_fraction=0.0))
        with self.assertRaises(TrainingDivergedError) as caught:
            train.train(_options(root, data, "run", 8, resume=True, lr_drop_fraction=0.0))
        self.assertEqual(caught.exception.step, 6)
        self.assertIn("non-finite", str(caught.exception))


class OptionsTest(helpers.TestCase):

    def test_no_images(self):
        root = helpers.fresh_dir("noimg")
        with self.assertRaises(TrainingError):
            train.train(_options(root, helpers.fresh_dir("empty"), "x", 2))
        with self.assertRaises(TrainingError):
            train.train(_options(root, os.path.join(root, "missing"), "y", 2))

    def test_run_in_use_by_another_process(self):
        from pathlib import Path
        from tfc_inference.errors import RunInUseError
        root = helpers.fresh_dir("lockedrun")
        opts = _options(root, helpers.fresh_dir("empty_for_lock"), "locked", 2)
        with train.run_lock(Path(root) / "runs" / "locked"):
            with self.assertRaisesRegex(RunInUseError, rf"being trained by another process \(pid {os.getpid()}\)"):
                train.train(opts)
        # released: training gets past the lock (and fails later, on the empty image folder)
        with self.assertRaises(TrainingError) as caught:
            train.train(opts)
        self.assertNotIsInstance(caught.exception, RunInUseError)
