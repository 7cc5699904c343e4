"""Tests of the zoo's training plan (examples/train_zoo.py) with a stand-in for training: which stage trains when,
from what, in which chunks, and where its weights go."""
import contextlib
import io
import json
import os
import re
import sys
from pathlib import Path
from unittest import mock

from tests import helpers


class TrainZooPlanTest(helpers.TestCase):

    def setUp(self):
        super().setUp()
        self.zoo = helpers.load_example("train_zoo")
        self.root = Path(helpers.fresh_dir("train_zoo"))
        self.checkpoints, self.runs = self.root / "checkpoints", self.root / "runs"
        for stage in self.zoo.plan():  # phase 1 exported, its run folders gone (e.g. another machine)
            (self.checkpoints / stage.name).mkdir(parents=True)
            (self.checkpoints / stage.name / "config.json").write_text(
                json.dumps({"training": {"steps": stage.steps_for(1)}}))
        self.calls = []

    def _fake_train(self, opts):
        """Stands in for tfc_inference.train.train: records the call, writes a checkpoint marker and an export."""
        work = Path(opts.work_dir) / opts.name
        (work / "ckpt").mkdir(parents=True, exist_ok=True)
        previous = self.zoo._run_step(work)
        end = opts.stop_at or opts.steps
        (work / "ckpt" / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{end}"\n')
        out = Path(opts.output) / opts.name
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"training": {"steps": end, "run": str(work)}}))
        self.calls.append(dict(name=opts.name, start=previous or opts.initial_step, end=end, steps=opts.steps,
                               init_from=opts.init_from, output=Path(opts.output), work_dir=Path(opts.work_dir),
                               crop=opts.crop, batch=opts.batch_size))
        return out

    def _main(self, *argv, train=None):
        """Runs train_zoo.main with ``argv``, ``train`` (default: the stand-in) in place of train.train."""
        args = ["train_zoo.py", "--checkpoints", str(self.checkpoints), "--work-dir", str(self.runs), *argv]
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(sys, "argv", args), mock.patch("tfc_inference.train.train", train or self._fake_train), \
                mock.patch.dict(os.environ), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = self.zoo.main()
        return code, out.getvalue(), err.getvalue()

    def test_phase_2_in_chunks(self):
        code, _, _ = self._main("--phase", "2", "--chunk-steps", "10000", "--repeat")
        self.assertEqual(code, 0)
        phase2 = self.checkpoints / "phase2"
        base = [c for c in self.calls if c["name"] == "hyperprior-mse-0.01"]
        # the base continues its phase-1 export (16k steps) to 60k in 10k chunks, schedule laid out for 60k
        self.assertEqual([(c["start"], c["end"]) for c in base],
                         [(16000, 26000), (26000, 36000), (36000, 46000), (46000, 56000), (56000, 60000)])
        self.assertTrue(all(c["steps"] == 60000 for c in base))
        self.assertEqual(base[0]["init_from"], str(self.checkpoints / "hyperprior-mse-0.01"))
        self.assertTrue(all(c["init_from"] is None for c in base[1:]))  # later chunks resume the run
        # nothing else trains before the base is finished; every export goes to phase2/, none over phase 1's
        first_other = next(i for i, c in enumerate(self.calls) if c["name"] != "hyperprior-mse-0.01")
        self.assertEqual(first_other, len(base))
        self.assertTrue(all(c["output"] == phase2 for c in self.calls))
        self.assertTrue(all(c["crop"] == 128 and c["batch"] == 8 for c in self.calls))
        with open(self.checkpoints / "hyperprior-mse-0.01" / "config.json") as f:
            self.assertEqual(json.load(f)["training"]["steps"], 16000)
        # the other models start anew (own run folders under runs/phase2) from their phase-2 source
        others = {c["name"]: c for c in self.calls[first_other:]}
        self.assertEqual(len(others), 9)
        for name, c in others.items():
            self.assertEqual((c["start"], c["end"]), (0, 10000), name)
            self.assertEqual(c["work_dir"], self.runs / "phase2")
            lmbda = name.split("-")[-1]
            self.assertEqual(c["init_from"], "hyperprior-mse-0.01" if name.startswith("hyperprior")
                             else f"hyperprior-mse-{lmbda}")
        order = [c["name"] for c in self.calls[first_other:]]
        for lmbda in ("0.0025", "0.005", "0.02", "0.04"):  # a bits-back model after its hyperprior
            self.assertLess(order.index(f"hyperprior-mse-{lmbda}"), order.index(f"bitsback-mse-{lmbda}"))
        # everything done: another pass trains nothing; --list says so
        self.calls.clear()
        code, listing, _ = self._main("--phase", "2", "--list")
        self.assertEqual(self.calls, [])
        self.assertEqual(len(re.findall(r" done$", listing, re.M)), 10)

    def test_one_chunk_per_pass_without_repeat_and_promote(self):
        self._main("--phase", "2", "--chunk-steps", "10000")
        self.assertEqual([(c["name"], c["end"]) for c in self.calls], [("hyperprior-mse-0.01", 26000)])
        code, _, err = self._main("--phase", "2", "--promote")  # not finished: refused, nothing copied
        self.assertEqual(code, 1)
        self.assertIn("not finished", err)
        with open(self.checkpoints / "hyperprior-mse-0.01" / "config.json") as f:
            self.assertEqual(json.load(f)["training"]["steps"], 16000)
        self._main("--phase", "2", "--chunk-steps", "100000", "--repeat")
        code, _, _ = self._main("--phase", "2", "--promote")
        self.assertEqual(code, 0)
        for stage in self.zoo.plan():
            with open(self.checkpoints / stage.name / "config.json") as f:
                self.assertEqual(json.load(f)["training"]["steps"], stage.steps_for(2), stage.name)
            # the models promoted over are kept, loadable by path
            with open(self.checkpoints / "phase1" / stage.name / "config.json") as f:
                self.assertEqual(json.load(f)["training"]["steps"], stage.steps_for(1), stage.name)

    def test_stage_trained_by_another_process_is_skipped(self):
        from tfc_inference import train as train_module

        def locking_fake_train(opts):  # the real lock around the stand-in, as train.train holds it
            with train_module.run_lock(Path(opts.work_dir) / opts.name):
                return self._fake_train(opts)

        self._main("--phase", "2", "--only", "hyperprior-mse-0.01", "--chunk-steps", "100000")
        self.calls.clear()
        busy = self.runs / "phase2" / "bitsback-mse-0.01"
        with train_module.run_lock(busy):
            code, _, err = self._main("--phase", "2", "--chunk-steps", "100000", "--repeat", train=locking_fake_train)
        self.assertEqual(code, 0)
        trained = sorted(c["name"] for c in self.calls)
        self.assertNotIn("bitsback-mse-0.01", trained)
        self.assertEqual(len(trained), 8)
        self.assertIn(f"skipping bitsback-mse-0.01: {busy} is being trained by another process "
                      f"(pid {os.getpid()})", err)

    def test_merged_curve_continues_the_kept_points_on_their_clock(self):
        def point(step, cpu_hours):
            return {"step": step, "cpu_hours": cpu_hours, "bpp": 0.5, "psnr": 30.0}
        kept = [point(2000, 0.1), point(4000, 0.2), point(6000, 0.3)]
        # a run continued the export at 6000 on another machine: its clock starts at 0
        run = [point(6000, 0.0), point(8000, 0.1), point(10000, 0.2)]
        merged = self.zoo.merged_curve(kept, run)
        self.assertEqual([p["step"] for p in merged], [2000, 4000, 6000, 8000, 10000])
        self.assertEqual([p["cpu_hours"] for p in merged], [0.1, 0.2, 0.3, 0.4, 0.5])
        # a run on the kept curve's clock (it resumed the same run) is not shifted; the step-0 point is left out
        run = [point(0, 0.0), point(4000, 0.2), point(6000, 0.3), point(8000, 0.4)]
        self.assertEqual([(p["step"], p["cpu_hours"]) for p in self.zoo.merged_curve(kept[:1], run)],
                         [(2000, 0.1), (4000, 0.2), (6000, 0.3), (8000, 0.4)])
        self.assertEqual(self.zoo.merged_curve(kept, []), kept)  # no run folder here: the kept points
